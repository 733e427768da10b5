#include "spatialsoftmax/op/operator_def.h"

#include <utility>

#include "spatialsoftmax/error.h"

namespace spatialsoftmax::op {

std::string_view device_name(Device device) {
  switch (device) {
    case Device::kCpu:
      return "CPU";
    case Device::kCuda:
      return "CUDA";
  }
  return "unknown device";
}

std::string_view arg_kind_name(const ArgValue& value) {
  // Indexed by the variant's alternatives, in their declared order.
  static constexpr std::string_view kNames[] = {"none",   "float", "int",    "string",
                                                "floats", "ints",  "strings"};
  static_assert(std::size(kNames) == std::variant_size_v<ArgValue>);
  return kNames[value.index()];
}

const Argument* OperatorDef::find_arg(std::string_view arg_name) const {
  for (const Argument& arg : args) {
    if (arg.name == arg_name) return &arg;
  }
  return nullptr;
}

void OperatorDef::set_arg(std::string arg_name, ArgValue value) {
  for (Argument& arg : args) {
    if (arg.name == arg_name) {
      arg.value = std::move(value);
      return;
    }
  }
  args.push_back(Argument{std::move(arg_name), std::move(value)});
}

std::string describe(const OperatorDef& def) {
  if (def.name.empty()) return def.type;
  return def.type + " '" + def.name + "'";
}

void check_distinct_outputs(const OperatorDef& def, const std::string& where) {
  // Operators have a handful of outputs: a quadratic scan is the cheapest.
  for (std::size_t i = 0; i < def.outputs.size(); ++i) {
    for (std::size_t j = i + 1; j < def.outputs.size(); ++j) {
      if (!def.outputs[i].empty() && def.outputs[i] == def.outputs[j]) {
        throw Error(where + ": outputs " + std::to_string(i) + " and " + std::to_string(j) +
                    " are both blob '" + def.outputs[i] + "', expected distinct output blobs");
      }
    }
  }
}

OperatorDef make_operator(std::string type, std::vector<std::string> inputs,
                          std::vector<std::string> outputs) {
  OperatorDef def;
  def.type = std::move(type);
  def.inputs = std::move(inputs);
  def.outputs = std::move(outputs);
  return def;
}

}  // namespace spatialsoftmax::op
