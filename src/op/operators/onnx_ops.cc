// ONNX SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss (opset 13,
// docs/semantics.md 3.7), with gradient operators of our own. Optional inputs may be
// skipped by an empty name, as in ONNX.
#include "op/operators/op_helpers.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::op::detail {
namespace {

constexpr const char* kReductionDoc = "\"none\", \"sum\" or \"mean\"";
constexpr const char* kIgnoreDoc = "positions with this label are ignored (any value; unset: none)";

OpSchema& loss_args(OpSchema& s) {
  return s.arg("reduction", ArgType::kString, std::string("mean"), kReductionDoc)
      .arg("ignore_index", ArgType::kInt, std::monostate{}, kIgnoreDoc)
      .allow_empty_optional_names()
      .check([](const OperatorDef& def, const Args& args) {
        try {
          (void)reduction_arg(args, false);
        } catch (const Error& e) {
          throw Error(describe(def) + ": " + e.what());
        }
      });
}

// ONNX labels are class indices: cross_entropy would take float labels of
// the scores' shape as probabilities.
const Tensor& index_labels(const OpRun& r) {
  const Tensor& labels = r.input(1);
  if (labels.dtype() != DType::kInt32 && labels.dtype() != DType::kInt64) {
    throw Error(describe(r.def()) + ": " + r.input_label(1) +
                " dtype: expected int32 or int64, got " + std::string(dtype_name(labels.dtype())));
  }
  return labels;
}

CrossEntropyOptions onnx_options(const OpRun& r, std::size_t weight_input) {
  CrossEntropyOptions o = CrossEntropyOptions::onnx();
  o.reduction = reduction_arg(r.args(), false);
  if (r.args().has("ignore_index")) o.ignore_index = r.args().get_int("ignore_index");
  o.class_weight = r.optional_input(weight_input);
  return o;
}

// (N, C, d1..dk) scores, (N, d1..dk) labels, optional (C) weights.
ClassShape infer_loss_inputs(const OperatorDef& def, const TensorSpecs& in,
                             std::size_t weight_input, const char* x_name, const char* label_name,
                             const char* weight_name) {
  const TensorSpec& x = spec(def, in, 0);
  ClassShape scores = class_spec(def, x, ClassAxis::kFirst, x_name);
  const TensorSpec& y = spec(def, in, 1);
  expect_index(def, y, label_name);
  expect_shape(def, y, scores.map_shape, label_name, "((N, d1..dk) of the scores)");
  if (weight_input < in.size() && in[weight_input]) {
    expect_dtype(def, *in[weight_input], x.dtype, weight_name);
    expect_shape(def, *in[weight_input], {scores.classes}, weight_name, "(one per class)");
  }
  return scores;
}

// The loss map's shape for reduction none, else nothing (a scalar loss).
std::optional<Shape> loss_map(const Args& args, const ClassShape& scores) {
  if (reduction_arg(args, false) == Reduction::kNone) return scores.map_shape;
  return std::nullopt;
}

TensorSpec loss_spec(const Args& args, DType dtype, const ClassShape& scores) {
  const std::optional<Shape> map = loss_map(args, scores);
  return map ? TensorSpec{dtype, *map} : scalar_spec(dtype);
}

}  // namespace

void register_onnx_operators() {
  // --- SoftmaxCrossEntropyLoss -----------------------------------------------
  loss_args(add_schema("SoftmaxCrossEntropyLoss")
                .doc("ONNX opset 13: log_softmax over axis 1, then the (weighted) negative "
                     "log-likelihood of the labels, reduced.")
                .input("scores", "(N, C, d1..dk) float")
                .input("labels", "(N, d1..dk) int32 or int64")
                .optional_input("weights", "class weights (C)")
                .output("output", "the loss: scalar, or (N, d1..dk) for reduction none")
                .optional_output("log_prob", "log_softmax(scores), the scores' shape"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const ClassShape scores = infer_loss_inputs(def, in, 2, "scores", "labels", "weights");
        return TensorSpecs{loss_spec(args, in[0]->dtype, scores), *in[0]};
      });
  add_kernel_operator("SoftmaxCrossEntropyLoss",
                      [](OpRun& r) {
                        CrossEntropyOptions o = onnx_options(r, 2);
                        o.want_log_prob = r.wants_output(1);
                        CrossEntropyResult out = cross_entropy(r.input(0), index_labels(r), o);
                        r.set_output(0, std::move(out.loss));
                        r.set_output(1, std::move(out.log_prob));
                      },
                      {{"logits", 0}, {"targets", 1}, {"class_weight", 2}});

  loss_args(add_schema("SoftmaxCrossEntropyLossGradient")
                .doc("d_scores of SoftmaxCrossEntropyLoss, from the upstream gradients of its "
                     "output and log_prob (absent ones are zero).")
                .input("scores", "(N, C, d1..dk)")
                .input("labels", "(N, d1..dk)")
                .optional_input("weights", "class weights (C)")
                .optional_input("d_output", "gradient of output (scalar, or a map for none)")
                .optional_input("d_log_prob", "gradient of log_prob")
                .output("d_scores", "the scores' shape"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const ClassShape scores = infer_loss_inputs(def, in, 2, "scores", "labels", "weights");
        expect_upstream(def, in, 3, in[0]->dtype, "d_output", loss_map(args, scores));
        expect_upstream(def, in, 4, in[0]->dtype, "d_log_prob", in[0]->shape);
        return TensorSpecs{*in[0]};
      });
  add_kernel_operator(
      "SoftmaxCrossEntropyLossGradient",
      [](OpRun& r) {
        CrossEntropyGrads g;
        g.loss = r.optional_input(3);
        g.log_prob = r.optional_input(4);
        r.set_output(0, cross_entropy_backward(r.input(0), index_labels(r), g, onnx_options(r, 2)));
      },
      {{"logits", 0}, {"targets", 1}, {"class_weight", 2}, {"grad_loss", 3}, {"grad_log_prob", 4}});
  add_gradient(
      "SoftmaxCrossEntropyLoss", [](const OperatorDef& fwd, const std::vector<std::string>& go) {
        const std::string weights = fwd.inputs.size() > 2 ? fwd.inputs[2] : "";
        std::vector<std::string> inputs = {fwd.inputs[0], fwd.inputs[1], weights, go[0]};
        if (go.size() > 1 && !go[1].empty()) inputs.push_back(go[1]);
        GradientOps g;
        g.ops.push_back(
            make_operator("SoftmaxCrossEntropyLossGradient", inputs, {grad_name(fwd.inputs[0])}));
        g.input_grads = {grad_name(fwd.inputs[0])};
        return g;
      });

  // --- NegativeLogLikelihoodLoss ---------------------------------------------
  loss_args(add_schema("NegativeLogLikelihoodLoss")
                .doc("ONNX opset 13: -input[n, target, d..] * weight[target], reduced; input "
                     "holds log-probabilities.")
                .input("input", "(N, C, d1..dk) log-probabilities")
                .input("target", "(N, d1..dk) int32 or int64")
                .optional_input("weight", "class weights (C)")
                .output("loss", "scalar, or (N, d1..dk) for reduction none"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const ClassShape input = infer_loss_inputs(def, in, 2, "input", "target", "weight");
        return TensorSpecs{loss_spec(args, in[0]->dtype, input)};
      });
  add_kernel_operator(
      "NegativeLogLikelihoodLoss",
      [](OpRun& r) { r.set_output(0, nll_loss(r.input(0), r.input(1), onnx_options(r, 2))); },
      {{"log_prob", 0}, {"labels", 1}, {"class_weight", 2}});

  loss_args(add_schema("NegativeLogLikelihoodLossGradient")
                .doc("d_input of NegativeLogLikelihoodLoss.")
                .input("input", "(N, C, d1..dk) log-probabilities")
                .input("target", "(N, d1..dk)")
                .input("d_loss", "gradient of loss (scalar, or a map for none)")
                .optional_input("weight", "class weights (C)")
                .output("d_input", "the input's shape"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const ClassShape input = infer_loss_inputs(def, in, 3, "input", "target", "weight");
        expect_upstream(def, in, 2, in[0]->dtype, "d_loss", loss_map(args, input));
        return TensorSpecs{*in[0]};
      });
  add_kernel_operator(
      "NegativeLogLikelihoodLossGradient",
      [](OpRun& r) {
        r.set_output(0, nll_loss_backward(r.input(0), r.input(1), r.input(2), onnx_options(r, 3)));
      },
      {{"log_prob", 0}, {"labels", 1}, {"grad_loss", 2}, {"class_weight", 3}});
  add_gradient(
      "NegativeLogLikelihoodLoss", [](const OperatorDef& fwd, const std::vector<std::string>& go) {
        require_output_grad(fwd, go, 0);
        std::vector<std::string> inputs = {fwd.inputs[0], fwd.inputs[1], go[0]};
        if (fwd.inputs.size() > 2) inputs.push_back(fwd.inputs[2]);
        GradientOps g;
        g.ops.push_back(
            make_operator("NegativeLogLikelihoodLossGradient", inputs, {grad_name(fwd.inputs[0])}));
        g.input_grads = {grad_name(fwd.inputs[0])};
        return g;
      });
}

}  // namespace spatialsoftmax::op::detail
