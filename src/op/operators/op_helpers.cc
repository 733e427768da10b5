#include "op/operators/op_helpers.h"

namespace spatialsoftmax::op::detail {

const Tensor& OpRun::input(std::size_t i) const {
  if (!has_input(i)) {
    throw Error(describe(def_) + ": input " + std::to_string(i) + " (" +
                schema_.inputs()[std::min(i, schema_.inputs().size() - 1)].name + ") is not given");
  }
  return ws_.get(def_.inputs[i]);
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

class FunctionOperator final : public Operator {
 public:
  FunctionOperator(const OperatorDef& def, const OpSchema& schema, const RunFn& fn)
      : Operator(def), schema_(schema), fn_(fn) {}
  void run(Workspace& ws) override {
    OpRun r(schema_, def(), ws);
    try {
      fn_(r);
    } catch (const Error& e) {
      const std::string who = describe(def());
      const std::string what = e.what();
      if (what.starts_with(who + ":")) throw;
      throw Error(who + ": " + what);
    }
    r.commit(ws);
  }

 private:
  const OpSchema& schema_;
  RunFn fn_;
};

}  // namespace

void add_cpu_operator(const std::string& type, RunFn fn) {
  const OpSchema& schema = *schema_table().at(type);
  add_operator(Device::kCpu, type, [&schema, fn = std::move(fn)](const OperatorDef& def) {
    return std::make_unique<FunctionOperator>(def, schema, fn);
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
    infer_fail(def, name + " dtype: expected float32 or float64, got " +
                        std::string(dtype_name(s.dtype)));
  }
}

void expect_index(const OperatorDef& def, const TensorSpec& s, const std::string& name) {
  if (s.dtype != DType::kInt32 && s.dtype != DType::kInt64) {
    infer_fail(def, name + " dtype: expected int32 or int64, got " + std::string(dtype_name(s.dtype)));
  }
}

void expect_dtype(const OperatorDef& def, const TensorSpec& s, DType dtype, const std::string& name) {
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

Shape map_shape(const Shape& x, ClassAxis axis) {
  Shape out;
  const std::size_t class_dim = axis == ClassAxis::kFirst ? 1 : x.size() - 1;
  for (std::size_t d = 0; d < x.size(); ++d) {
    if (d != class_dim) out.push_back(x[d]);
  }
  return out;
}

void expect_class_tensor(const OperatorDef& def, const TensorSpec& x, ClassAxis axis,
                         const std::string& name, int min_spatial_rank) {
  expect_float(def, x, name);
  const int rank = static_cast<int>(x.shape.size());
  if (rank < 2 + min_spatial_rank || rank > 10) {
    infer_fail(def, name + " rank: expected " + std::to_string(2 + min_spatial_rank) +
                        " to 10, got " + std::to_string(rank) + " (shape " +
                        shape_string(x.shape) + ")");
  }
  checked_numel(x.shape, describe(def) + ": " + name);
  const std::int64_t classes = x.shape[axis == ClassAxis::kFirst ? 1 : x.shape.size() - 1];
  if (classes < 1 && min_spatial_rank == 0) {
    infer_fail(def, name + " class dim: expected C >= 1, got " + std::to_string(classes));
  }
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

ClassAxis order_arg(const Args& args) { return parse_layout(args.get_string("order"), "argument 'order'"); }

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
