#include "op/operators/op_helpers.h"

#include <algorithm>
#include <cctype>
#include <string_view>

#include "spatialsoftmax/device.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::op::detail {

const Tensor& OpRun::input(std::size_t i) const {
  if (!has_input(i)) {
    throw Error(describe(def_) + ": input " + std::to_string(i) + " (" +
                schema_.inputs()[std::min(i, schema_.inputs().size() - 1)].name + ") is not given");
  }
  return ws_.get(def_.inputs[i]);
}

namespace {

// How errors name input i of an operator: its port (`name`, or the schema's)
// and the net's blob.
std::string input_label(const OpSchema& schema, const OperatorDef& def, std::size_t i,
                        const std::string& name = "") {
  const std::string& port =
      !name.empty() ? name : schema.inputs()[std::min(i, schema.inputs().size() - 1)].name;
  return "input '" + port + "' (blob '" + (i < def.inputs.size() ? def.inputs[i] : "") + "')";
}

}  // namespace

std::string OpRun::input_label(std::size_t i) const {
  return detail::input_label(schema_, def_, i);
}

std::optional<TensorView> OpRun::optional_input(std::size_t i) const {
  if (!has_input(i)) return std::nullopt;
  return input(i).view();
}

void OpRun::set_output(std::size_t i, Tensor value) {
  if (wants_output(i)) outputs_[i] = std::move(value);
}

void OpRun::commit(Workspace& ws) {
  for (std::size_t i = 0; i < outputs_.size(); ++i) {
    if (outputs_[i]) ws.set(def_.outputs[i], std::move(*outputs_[i]));
  }
}

namespace {

bool is_identifier(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// The argument token of an API message "<function>: <arg><rest>": letters,
// digits, '_' and '.', ended by the end, ' ', '[' or ':' (so "targets[1, 2]",
// "T row 3", "logits: element count" all give their argument).
std::size_t token_length(std::string_view rest) {
  std::size_t n = 0;
  while (n < rest.size() &&
         (std::isalnum(static_cast<unsigned char>(rest[n])) || rest[n] == '_' || rest[n] == '.')) {
    ++n;
  }
  if (n < rest.size() && rest[n] != ' ' && rest[n] != '[' && rest[n] != ':') return 0;
  return n;
}

}  // namespace

std::string operator_error(const OperatorDef& def, const OpSchema& schema, const ApiArgs& api_args,
                           const std::string& what) {
  const std::string who = describe(def);
  // TODO(error fields): once spatialsoftmax::Error carries the function and
  // argument names, read them here instead of parsing the text.
  const std::size_t colon = what.find(": ");
  if (colon != std::string::npos && is_identifier(std::string_view(what).substr(0, colon))) {
    const std::string_view rest = std::string_view(what).substr(colon + 2);
    const std::string_view arg = rest.substr(0, token_length(rest));
    const std::string_view after = rest.substr(arg.size());
    std::string named;
    for (const ApiArg& a : api_args) {
      if (!arg.empty() && a.api == arg && a.input < def.inputs.size()) {
        named = input_label(schema, def, a.input, a.name);
        break;
      }
    }
    if (named.empty() && !arg.empty() && schema.find_arg(arg) != nullptr) {
      named = "argument '" + std::string(arg) + "'";
    }
    if (!named.empty()) {
      return who + ": " + named + (after.starts_with('[') ? " " : "") + std::string(after);
    }
  }
  if (what.starts_with(who + ":")) return what;  // the operator's own message
  return who + ": " + what;
}

namespace {

bool library_has_cuda() {
  for (const std::string& name : backend_names())
    if (name.ends_with("(cuda)")) return true;
  return false;
}

// The memory a CUDA operator's blobs live in: its device_option's device.
spatialsoftmax::Device device_of(const OperatorDef& def) {
  return def.device.device == Device::kCuda ? spatialsoftmax::Device::cuda(def.device.device_id)
                                            : spatialsoftmax::Device::cpu();
}

// A device operator's inputs are on its device, as Caffe2's were: a blob
// elsewhere is an error naming it (`spatialsoftmax run --device cuda` feeds
// a net's inputs to the device).
void check_inputs_on(const OperatorDef& def, const OpSchema& schema, const Workspace& ws) {
  const spatialsoftmax::Device device = device_of(def);
  for (std::size_t i = 0; i < def.inputs.size(); ++i) {
    if (!schema.has_input(def, i)) continue;
    const Tensor& t = ws.get(def.inputs[i]);
    if (t.device() != device) {
      throw Error(describe(def) + ": " + input_label(schema, def, i) + " is in " +
                  spatialsoftmax::device_name(t.device()) + " memory, expected " +
                  spatialsoftmax::device_name(device) + " (the operator's device_option)");
    }
  }
}

class FunctionOperator final : public Operator {
 public:
  FunctionOperator(const OperatorDef& def, const OpSchema& schema, const RunFn& fn,
                   ApiArgs api_args)
      : Operator(def), schema_(schema), fn_(fn), api_args_(std::move(api_args)) {}
  void run(Workspace& ws) override {
    if (def().device.device != Device::kCpu) check_inputs_on(def(), schema_, ws);
    OpRun r(schema_, def(), ws);
    try {
      fn_(r);
    } catch (const Error& e) {
      throw Error(operator_error(def(), schema_, api_args_, e.what()));
    }
    r.commit(ws);
  }

 private:
  const OpSchema& schema_;
  RunFn fn_;
  ApiArgs api_args_;
};

// A host operator (it reads and writes elements on the host) on a device:
// its inputs are copied to the host, it runs there, and its outputs are
// copied to the device. Only the utility operators, whose work is a fill or
// a sum, run this way.
class StagedOperator final : public Operator {
 public:
  StagedOperator(const OperatorDef& def, const OpSchema& schema, const RunFn& fn)
      : Operator(def), schema_(schema), fn_(fn) {}
  void run(Workspace& ws) override {
    check_inputs_on(def(), schema_, ws);
    Workspace host;
    for (std::size_t i = 0; i < def().inputs.size(); ++i) {
      const std::string& name = def().inputs[i];
      if (schema_.has_input(def(), i) && !host.has(name))
        host.set(name, copy_to(ws.get(name), spatialsoftmax::Device::cpu()));
    }
    OpRun r(schema_, def(), host);
    try {
      fn_(r);
    } catch (const Error& e) {
      throw Error(operator_error(def(), schema_, {}, e.what()));
    }
    r.commit(host);
    for (std::size_t i = 0; i < def().outputs.size(); ++i) {
      if (schema_.has_output(def(), i) && host.has(def().outputs[i]))
        ws.set(def().outputs[i], copy_to(host.get(def().outputs[i]), device_of(def())));
    }
  }

 private:
  const OpSchema& schema_;
  RunFn fn_;
};

}  // namespace

void add_kernel_operator(const std::string& type, RunFn fn, ApiArgs api_args) {
  add_kernel_operator(type, std::move(fn),
                      [api_args = std::move(api_args)](const OperatorDef&) { return api_args; });
}

void add_kernel_operator(const std::string& type, RunFn fn, ApiArgsFn api_args) {
  const OpSchema& schema = *schema_table().at(type);
  auto factory = [&schema, fn = std::move(fn),
                  api_args = std::move(api_args)](const OperatorDef& def) {
    return std::make_unique<FunctionOperator>(def, schema, fn, api_args(def));
  };
  if (library_has_cuda()) add_operator(Device::kCuda, type, factory);
  add_operator(Device::kCpu, type, std::move(factory));
}

void add_host_operator(const std::string& type, RunFn fn) {
  const OpSchema& schema = *schema_table().at(type);
  if (library_has_cuda()) {
    add_operator(Device::kCuda, type, [&schema, fn](const OperatorDef& def) {
      return std::make_unique<StagedOperator>(def, schema, fn);
    });
  }
  add_operator(Device::kCpu, type, [&schema, fn](const OperatorDef& def) {
    return std::make_unique<FunctionOperator>(def, schema, fn, ApiArgs{});
  });
}

void infer_fail(const OperatorDef& def, const std::string& what) {
  throw Error(describe(def) + ": shape inference: " + what);
}

const TensorSpec& spec(const OperatorDef& def, const TensorSpecs& inputs, std::size_t i) {
  if (i >= inputs.size() || !inputs[i]) infer_fail(def, "input " + std::to_string(i) + " missing");
  return *inputs[i];
}

void expect_float(const OperatorDef& def, const TensorSpec& s, const std::string& name) {
  if (!is_floating(s.dtype)) {
    infer_fail(
        def, name + " dtype: expected float32 or float64, got " + std::string(dtype_name(s.dtype)));
  }
}

void expect_index(const OperatorDef& def, const TensorSpec& s, const std::string& name) {
  if (s.dtype != DType::kInt32 && s.dtype != DType::kInt64) {
    infer_fail(def,
               name + " dtype: expected int32 or int64, got " + std::string(dtype_name(s.dtype)));
  }
}

void expect_dtype(const OperatorDef& def, const TensorSpec& s, DType dtype,
                  const std::string& name) {
  if (s.dtype != dtype) {
    infer_fail(def, name + " dtype: expected " + std::string(dtype_name(dtype)) + ", got " +
                        std::string(dtype_name(s.dtype)));
  }
}

void expect_shape(const OperatorDef& def, const TensorSpec& s, const Shape& shape,
                  const std::string& name, const std::string& what) {
  if (s.shape != shape) {
    infer_fail(def, name + " shape: expected " + shape_string(shape) + " " + what + ", got " +
                        shape_string(s.shape));
  }
}

// The API's own rule (class_shape), with the operator named as shape
// inference names it.
ClassShape class_spec(const OperatorDef& def, const TensorSpec& x, ClassAxis axis,
                      const std::string& name, int min_spatial_rank, bool allow_no_classes) {
  return class_shape(describe(def) + ": shape inference", name, x.dtype, x.shape, axis,
                     min_spatial_rank, allow_no_classes);
}

TensorSpec scalar_spec(DType dtype) { return TensorSpec{dtype, {}}; }

void expect_upstream(const OperatorDef& def, const TensorSpecs& inputs, std::size_t i, DType dtype,
                     const std::string& name, const std::optional<Shape>& map) {
  if (i >= inputs.size() || !inputs[i]) return;
  const TensorSpec& s = *inputs[i];
  expect_dtype(def, s, dtype, name);
  if (map) {
    expect_shape(def, s, *map, name, "(reduction none: the loss map's shape)");
  } else if (checked_numel(s.shape, describe(def) + ": " + name) != 1) {
    infer_fail(def, name + " shape: expected a scalar (one element), got " + shape_string(s.shape));
  }
}

void expect_first_element(const OperatorDef& def, const TensorSpec& s, const std::string& name) {
  expect_float(def, s, name);
  if (checked_numel(s.shape, describe(def) + ": " + name) < 1) {
    infer_fail(def, name + " shape: expected at least one element, got " + shape_string(s.shape));
  }
}

ClassAxis order_arg(const Args& args) {
  return parse_layout(args.get_string("order"), "argument 'order'");
}

Reduction reduction_arg(const Args& args, bool allow_batchmean) {
  const Reduction r = parse_reduction(args.get_string("reduction"), "argument 'reduction'");
  if (r == Reduction::kBatchMean && !allow_batchmean) {
    throw Error("argument 'reduction': 'batchmean', expected none, sum or mean");
  }
  return r;
}

void check_order(const OperatorDef& def, const Args& args) {
  try {
    (void)order_arg(args);
  } catch (const Error& e) {
    throw Error(describe(def) + ": " + e.what());
  }
}

void require_output_grad(const OperatorDef& forward, const std::vector<std::string>& output_grads,
                         std::size_t i) {
  if (i >= output_grads.size() || output_grads[i].empty()) {
    throw Error(describe(forward) + ": Gradient of output " +
                (i < forward.outputs.size() ? forward.outputs[i] : std::to_string(i)) +
                " is not provided!");
  }
}

}  // namespace spatialsoftmax::op::detail
