// Softmax and LogSoftmax along one axis (ONNX opset 13 semantics), with
// Caffe2-style gradient operators taking the forward output (Y, dY).
#include "op/operators/op_helpers.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::op::detail {
namespace {

// X viewed as (outer, C, inner) around the axis, so that the class-axis-1
// functions of the API compute any axis.
struct AxisSplit {
  std::int64_t outer = 1, classes = 1, inner = 1;
};

AxisSplit split_at(const OperatorDef& def, const Shape& shape, std::int64_t axis) {
  const auto rank = static_cast<std::int64_t>(shape.size());
  const std::int64_t a = axis < 0 ? axis + rank : axis;
  if (rank < 1 || a < 0 || a >= rank) {
    throw Error(describe(def) + ": argument 'axis' = " + std::to_string(axis) + ": expected in [-" +
                std::to_string(rank) + ", " + std::to_string(rank) + ") for input of shape " +
                shape_string(shape));
  }
  AxisSplit s;
  checked_numel(shape, describe(def) + ": input");
  for (std::int64_t i = 0; i < rank; ++i) {
    const std::int64_t d = shape[static_cast<std::size_t>(i)];
    (i < a ? s.outer : i == a ? s.classes : s.inner) *= d;
  }
  return s;
}

TensorView as_3d(const Tensor& t, const AxisSplit& s) {
  return TensorView(t.data(), t.dtype(), {s.outer, s.classes, s.inner});
}

void define_softmax(const char* type, const char* grad_type, bool log) {
  const char* what = log ? "log-softmax" : "softmax";
  add_schema(type)
      .doc(std::string("The ") + what +
           " along one axis (ONNX opset 13; Caffe2's Softmax "
           "instead flattened every axis from `axis` on, which agrees for 2-D inputs).")
      .input("input", "float tensor of rank >= 1")
      .output("output", "the input's shape")
      .arg("axis", ArgType::kInt, std::int64_t{-1}, "the axis, negative counts from the end")
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const TensorSpec& x = spec(def, in, 0);
        expect_float(def, x, "input");
        (void)split_at(def, x.shape, args.get_int("axis"));
        return TensorSpecs{x};
      });
  add_kernel_operator(type,
                      [log](OpRun& r) {
                        const Tensor& x = r.input(0);
                        const AxisSplit s = split_at(r.def(), x.shape(), r.args().get_int("axis"));
                        Tensor y = log ? log_softmax(as_3d(x, s)) : softmax(as_3d(x, s));
                        y.reshape(x.shape());
                        r.set_output(0, std::move(y));
                      },
                      {{"logits", 0}});

  add_schema(grad_type)
      .doc(std::string("dX of ") + type + " from its output Y and the upstream gradient dY.")
      .input("output", "the forward output Y")
      .input("d_output", "dY, Y's shape")
      .output("d_input", "Y's shape")
      .arg("axis", ArgType::kInt, std::int64_t{-1}, "the forward op's axis")
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const TensorSpec& y = spec(def, in, 0);
        expect_float(def, y, "output");
        (void)split_at(def, y.shape, args.get_int("axis"));
        expect_dtype(def, spec(def, in, 1), y.dtype, "d_output");
        expect_shape(def, spec(def, in, 1), y.shape, "d_output", "(the output's shape)");
        return TensorSpecs{y};
      });
  add_kernel_operator(grad_type,
                      [log](OpRun& r) {
                        const Tensor& y = r.input(0);
                        const Tensor& dy = r.input(1);
                        const AxisSplit s = split_at(r.def(), y.shape(), r.args().get_int("axis"));
                        if (dy.shape() != y.shape()) {
                          // Checked here: the views below give dY the output's split.
                          throw Error(describe(r.def()) + ": " + r.input_label(1) +
                                      " shape: expected " + shape_string(y.shape()) +
                                      " (the output's shape), got " + shape_string(dy.shape()));
                        }
                        Tensor dx = log ? log_softmax_backward(as_3d(y, s), as_3d(dy, s))
                                        : softmax_backward(as_3d(y, s), as_3d(dy, s));
                        dx.reshape(y.shape());
                        r.set_output(0, std::move(dx));
                      },
                      {{log ? "log_prob" : "prob", 0}, {log ? "grad_log_prob" : "grad_prob", 1}});
  add_gradient(type, [grad_type](const OperatorDef& fwd, const std::vector<std::string>& go) {
    require_output_grad(fwd, go, 0);
    GradientOps g;
    g.ops.push_back(make_operator(grad_type, {fwd.outputs[0], go[0]}, {grad_name(fwd.inputs[0])}));
    g.input_grads = {grad_name(fwd.inputs[0])};
    return g;
  });
}

}  // namespace

void register_softmax_operators() {
  define_softmax("Softmax", "SoftmaxGradient", false);
  define_softmax("LogSoftmax", "LogSoftmaxGradient", true);
}

}  // namespace spatialsoftmax::op::detail
