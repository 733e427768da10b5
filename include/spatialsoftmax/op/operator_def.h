// Caffe2's operator and net descriptions as plain C++ values. They mirror
// caffe2.proto's OperatorDef, Argument, DeviceOption and NetDef (the subset
// this library uses); src/op/net_io.cc converts them to and from the wire,
// text and JSON forms of those messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace spatialsoftmax::op {

// caffe2.proto's DeviceTypeProto numbers: CPU = 0, CUDA = 1.
enum class Device { kCpu = 0, kCuda = 1 };
std::string_view device_name(Device device);  // "CPU", "CUDA"

// An argument's value: exactly one of caffe2.proto's Argument fields f, i, s,
// floats, ints, strings (monostate: none set). Caffe2 stores bools as i.
using ArgValue = std::variant<std::monostate, float, std::int64_t, std::string, std::vector<float>,
                              std::vector<std::int64_t>, std::vector<std::string>>;

struct Argument {
  std::string name;
  ArgValue value;

  bool operator==(const Argument&) const = default;
};

// The kind of value an Argument holds, for messages: "float", "int",
// "string", "floats", "ints", "strings" or "none".
std::string_view arg_kind_name(const ArgValue& value);

struct DeviceOption {
  Device device = Device::kCpu;
  std::int32_t device_id = 0;

  bool operator==(const DeviceOption&) const = default;
};

struct OperatorDef {
  std::string type;
  std::string name;  // optional
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::vector<Argument> args;
  DeviceOption device;
  std::string engine;
  bool is_gradient_op = false;

  // The argument called `name`, or nullptr.
  const Argument* find_arg(std::string_view arg_name) const;
  // Sets (replacing) an argument.
  void set_arg(std::string arg_name, ArgValue value);

  bool operator==(const OperatorDef&) const = default;
};

struct NetDef {
  std::string name;
  std::vector<OperatorDef> ops;
  std::vector<std::string> external_inputs;
  std::vector<std::string> external_outputs;

  bool operator==(const NetDef&) const = default;
};

// An OperatorDef of `type` on these blobs (Caffe2's CreateOperatorDef).
OperatorDef make_operator(std::string type, std::vector<std::string> inputs,
                          std::vector<std::string> outputs);

// "SpatialSoftmaxWithLoss" or "SpatialSoftmaxWithLoss 'name'", for messages.
std::string describe(const OperatorDef& def);

// Throws Error ("<where>: outputs 0 and 2 are both blob 'P'") if two outputs
// of `def` name the same blob: one would silently overwrite the other.
// Empty names (skipped optional outputs) do not count. Checked when a net is
// read and when an operator is validated against its schema.
void check_distinct_outputs(const OperatorDef& def, const std::string& where);

}  // namespace spatialsoftmax::op
