// Operator schemas: for each operator type its inputs, outputs, arguments
// (type, default, doc), a doc string, argument checks and a tensor inference
// function that derives output shapes and dtypes from input shapes alone.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/op/operator_def.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::op {

enum class ArgType { kInt, kFloat, kString, kInts, kFloats, kStrings };
std::string_view arg_type_name(ArgType type);

struct ArgSchema {
  std::string name;
  ArgType type;
  ArgValue default_value;  // monostate: no default (optional, or required)
  bool required = false;
  std::string doc;
};

struct PortSchema {
  std::string name;
  std::string doc;
  bool optional = false;  // optional ports come last
};

// What shape inference knows of a blob.
struct TensorSpec {
  DType dtype = DType::kFloat32;
  Shape shape;

  bool operator==(const TensorSpec&) const = default;
};
// An absent optional port is std::nullopt (an empty blob name, or a port
// beyond the number given).
using TensorSpecs = std::vector<std::optional<TensorSpec>>;

class OpSchema;

// Typed argument values of one OperatorDef, falling back to the schema's
// defaults. Call after validate(); a missing argument without a default
// throws Error.
class Args {
 public:
  Args(const OpSchema& schema, const OperatorDef& def) : schema_(schema), def_(def) {}
  bool has(std::string_view name) const { return def_.find_arg(name) != nullptr; }
  std::int64_t get_int(std::string_view name) const;
  double get_float(std::string_view name) const;  // an int value is accepted
  std::string get_string(std::string_view name) const;
  std::vector<std::int64_t> get_ints(std::string_view name) const;

 private:
  const ArgValue& value(std::string_view name) const;
  const OpSchema& schema_;
  const OperatorDef& def_;
};

class OpSchema {
 public:
  // Checks of a def beyond the counts and argument types (e.g. "order must be
  // NCHW"); throws Error.
  using CheckFn = std::function<void(const OperatorDef&, const Args&)>;
  // Output specs from input specs; throws Error on bad shapes or dtypes. The
  // result has one entry per output port given in the def.
  using InferFn = std::function<TensorSpecs(const OperatorDef&, const Args&, const TensorSpecs&)>;

  explicit OpSchema(std::string type) : type_(std::move(type)) {}

  // Builder.
  OpSchema& doc(std::string text);
  OpSchema& input(std::string name, std::string doc);
  OpSchema& optional_input(std::string name, std::string doc);
  OpSchema& output(std::string name, std::string doc);
  OpSchema& optional_output(std::string name, std::string doc);
  OpSchema& arg(std::string name, ArgType type, ArgValue default_value, std::string doc);
  OpSchema& required_arg(std::string name, ArgType type, std::string doc);
  OpSchema& check(CheckFn fn);
  OpSchema& infer(InferFn fn);
  // Optional ports may be skipped by an empty blob name (as in ONNX) when set.
  OpSchema& allow_empty_optional_names();
  // The last input port repeats: any number >= the required count (Sum).
  OpSchema& variadic_input();

  const std::string& type() const { return type_; }
  const std::string& doc() const { return doc_; }
  const std::vector<PortSchema>& inputs() const { return inputs_; }
  const std::vector<PortSchema>& outputs() const { return outputs_; }
  const std::vector<ArgSchema>& args() const { return args_; }
  const ArgSchema* find_arg(std::string_view name) const;
  int min_inputs() const;
  int max_inputs() const;
  int min_outputs() const;
  int max_outputs() const { return static_cast<int>(outputs_.size()); }

  // Counts, argument names and types, then the schema's own check. Errors
  // name the operator, the argument and what was expected.
  void validate(const OperatorDef& def) const;
  // validate(), then the inference function. `inputs` has one entry per
  // input of the def (nullopt for an empty name).
  TensorSpecs infer_outputs(const OperatorDef& def, const TensorSpecs& inputs) const;

  // Whether port i of the def is present (given and, where allowed, named).
  bool has_input(const OperatorDef& def, std::size_t i) const;
  bool has_output(const OperatorDef& def, std::size_t i) const;

  // Human-readable schema: inputs, outputs, arguments with defaults, doc.
  std::string describe() const;

 private:
  std::string type_;
  std::string doc_;
  std::vector<PortSchema> inputs_, outputs_;
  std::vector<ArgSchema> args_;
  CheckFn check_;
  InferFn infer_;
  bool empty_optional_names_ = false;
  bool variadic_ = false;
};

// The schema of `type`, or nullptr.
const OpSchema* find_schema(std::string_view type);
// The schema of `type`; throws Error naming it if unknown.
const OpSchema& schema_of(std::string_view type);
// Every registered operator type, sorted.
std::vector<std::string> schema_types();
// Adds a schema (the built-in ones are registered on first use). Throws if
// the type already has one.
OpSchema& define_schema(std::string type);

// Shape inference through a whole net: `known` gives the external inputs'
// specs; returns them with the specs of every blob the net produces.
using SpecMap = std::map<std::string, TensorSpec, std::less<>>;
SpecMap infer_net(const NetDef& net, SpecMap known);

}  // namespace spatialsoftmax::op
