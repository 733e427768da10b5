// The general loss family as operators: CrossEntropy (every option of
// cross_entropy) and KLDiv, each with its gradient operator. Optional inputs
// and outputs may be skipped by an empty name.
#include "op/operators/op_helpers.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::op::detail {
namespace {

// The API's names of the inputs of cross_entropy(_backward), as the ports
// of CrossEntropy(Gradient).
const ApiArgs kCeApiArgs = {
    {"logits", 0}, {"targets", 1}, {"class_weight", 2}, {"pixel_weight", 3}};
const ApiArgs kCeGradApiArgs = {{"logits", 0},        {"targets", 1},     {"class_weight", 2},
                                {"pixel_weight", 3},  {"grad_loss", 4},   {"grad_prob", 5},
                                {"grad_log_prob", 6}, {"grad_entropy", 7}};

constexpr const char* kOrderDoc = "\"NCHW\": class axis 1; \"NHWC\": class axis last";

CrossEntropyOptions ce_options(const Args& args) {
  CrossEntropyOptions o;
  o.class_axis = order_arg(args);
  o.reduction = reduction_arg(args, false);
  if (args.has("ignore_index")) o.ignore_index = args.get_int("ignore_index");
  o.label_smoothing = args.get_float("label_smoothing");
  o.zero_weight_mean =
      parse_zero_weight_mean(args.get_string("zero_weight_mean"), "argument 'zero_weight_mean'");
  o.prob_floor = args.get_float("prob_floor");
  o.zero_target_log =
      parse_zero_target_log(args.get_string("zero_target_log"), "argument 'zero_target_log'");
  return o;
}

CrossEntropyOptions ce_options(const OpRun& r) {
  CrossEntropyOptions o = ce_options(r.args());
  o.class_weight = r.optional_input(2);
  o.pixel_weight = r.optional_input(3);
  return o;
}

OpSchema& ce_args(OpSchema& s) {
  return s.arg("order", ArgType::kString, std::string("NCHW"), kOrderDoc)
      .arg("reduction", ArgType::kString, std::string("mean"), "\"none\", \"sum\" or \"mean\"")
      .arg("ignore_index", ArgType::kInt, std::monostate{},
           "positions with this label are ignored (unset: none)")
      .arg("label_smoothing", ArgType::kFloat, 0.0f, "epsilon in [0, 1]")
      .arg("zero_weight_mean", ArgType::kString, std::string("nan"),
           "a mean over zero total weight: \"nan\" (PyTorch, ONNX) or \"zero\" (Caffe2)")
      .arg("prob_floor", ArgType::kFloat, 0.0f,
           "> 0: loss -log(max(p_y, prob_floor)) (Caffe2 1e-20)")
      .arg("zero_target_log", ArgType::kString, std::string("ieee"),
           "probability targets: 0 * log(0) is NaN (\"ieee\") or 0 (\"zero\")")
      .allow_empty_optional_names()
      .check([](const OperatorDef& def, const Args& args) {
        try {
          (void)ce_options(args);
        } catch (const Error& e) {
          throw Error(describe(def) + ": " + e.what());
        }
      });
}

// Returns X's (N, d1..dk).
Shape infer_ce_inputs(const OperatorDef& def, const Args& args, const TensorSpecs& in) {
  const TensorSpec& x = spec(def, in, 0);
  const ClassShape logits = class_spec(def, x, order_arg(args), "X");
  const TensorSpec& t = spec(def, in, 1);
  const Shape& positions = logits.map_shape;
  if (is_floating(t.dtype)) {
    expect_dtype(def, t, x.dtype, "targets");
    expect_shape(def, t, x.shape, "targets", "(probability targets: X's shape)");
  } else {
    expect_index(def, t, "targets");
    expect_shape(def, t, positions, "targets", "(class indices: (N, d1..dk))");
  }
  if (in.size() > 2 && in[2]) {
    expect_dtype(def, *in[2], x.dtype, "class_weight");
    expect_shape(def, *in[2], {logits.classes}, "class_weight", "(one per class)");
  }
  if (in.size() > 3 && in[3]) {
    expect_dtype(def, *in[3], x.dtype, "pixel_weight");
    expect_shape(def, *in[3], positions, "pixel_weight", "(one per position)");
  }
  return positions;
}

}  // namespace

void register_loss_operators() {
  // --- CrossEntropy ----------------------------------------------------------
  ce_args(
      add_schema("CrossEntropy")
          .doc("Softmax cross-entropy over the class axis with class and pixel weights, "
               "ignore_index, label smoothing, index or probability targets (docs/semantics.md 3).")
          .input("X", "logits (N, C, d1..dk) or (N, d1..dk, C)")
          .input("targets", "int32/int64 (N, d1..dk) class indices, or probabilities (X's shape)")
          .optional_input("class_weight", "(C)")
          .optional_input("pixel_weight", "(N, d1..dk)")
          .output("loss", "scalar, or (N, d1..dk) for reduction none")
          .optional_output("prob", "softmax, X's shape")
          .optional_output("log_prob", "log-softmax, X's shape")
          .optional_output("entropy", "per-position entropy (N, d1..dk)"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const Shape positions = infer_ce_inputs(def, args, in);
        const TensorSpec& x = *in[0];
        const TensorSpec loss = reduction_arg(args, false) == Reduction::kNone
                                    ? TensorSpec{x.dtype, positions}
                                    : scalar_spec(x.dtype);
        return TensorSpecs{loss, x, x, TensorSpec{x.dtype, positions}};
      });
  add_kernel_operator(
      "CrossEntropy",
      [](OpRun& r) {
        CrossEntropyOptions o = ce_options(r);
        o.want_prob = r.wants_output(1);
        o.want_log_prob = r.wants_output(2);
        o.want_entropy = r.wants_output(3);
        CrossEntropyResult out = cross_entropy(r.input(0), r.input(1), o);
        r.set_output(0, std::move(out.loss));
        r.set_output(1, std::move(out.prob));
        r.set_output(2, std::move(out.log_prob));
        r.set_output(3, std::move(out.entropy));
      },
      kCeApiArgs);

  ce_args(add_schema("CrossEntropyGradient")
              .doc("dX of CrossEntropy from the upstream gradients of its outputs (absent ones "
                   "are zero).")
              .input("X", "logits")
              .input("targets", "class indices or probabilities")
              .optional_input("class_weight", "(C)")
              .optional_input("pixel_weight", "(N, d1..dk)")
              .optional_input("d_loss", "gradient of loss")
              .optional_input("d_prob", "gradient of prob")
              .optional_input("d_log_prob", "gradient of log_prob")
              .optional_input("d_entropy", "gradient of entropy")
              .output("dX", "X's shape"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const Shape positions = infer_ce_inputs(def, args, in);
        const TensorSpec& x = *in[0];
        const bool map = reduction_arg(args, false) == Reduction::kNone;
        expect_upstream(def, in, 4, x.dtype, "d_loss",
                        map ? std::optional(positions) : std::nullopt);
        expect_upstream(def, in, 5, x.dtype, "d_prob", x.shape);
        expect_upstream(def, in, 6, x.dtype, "d_log_prob", x.shape);
        expect_upstream(def, in, 7, x.dtype, "d_entropy", positions);
        return TensorSpecs{x};
      });
  add_kernel_operator(
      "CrossEntropyGradient",
      [](OpRun& r) {
        CrossEntropyGrads g;
        g.loss = r.optional_input(4);
        g.prob = r.optional_input(5);
        g.log_prob = r.optional_input(6);
        g.entropy = r.optional_input(7);
        r.set_output(0, cross_entropy_backward(r.input(0), r.input(1), g, ce_options(r)));
      },
      kCeGradApiArgs);
  add_gradient("CrossEntropy", [](const OperatorDef& fwd, const std::vector<std::string>& go) {
    std::vector<std::string> inputs = {fwd.inputs[0], fwd.inputs[1]};
    for (std::size_t i = 2; i < 4; ++i)
      inputs.push_back(i < fwd.inputs.size() ? fwd.inputs[i] : "");
    for (std::size_t i = 0; i < 4; ++i) inputs.push_back(i < go.size() ? go[i] : "");
    while (inputs.back().empty()) inputs.pop_back();  // trailing absent ports
    GradientOps g;
    g.ops.push_back(make_operator("CrossEntropyGradient", inputs, {grad_name(fwd.inputs[0])}));
    g.input_grads = {grad_name(fwd.inputs[0])};
    return g;
  });

  // --- KLDiv -----------------------------------------------------------------
  auto kl_args = [](OpSchema& s) -> OpSchema& {
    return s.arg("order", ArgType::kString, std::string("NCHW"), kOrderDoc)
        .arg("reduction", ArgType::kString, std::string("mean"),
             "\"none\", \"sum\", \"mean\" (over all elements) or \"batchmean\" (over N)")
        .arg("log_target", ArgType::kInt, std::int64_t{0}, "1: target holds log-probabilities")
        .check([](const OperatorDef& def, const Args& args) {
          try {
            (void)order_arg(args);
            (void)reduction_arg(args, true);
          } catch (const Error& e) {
            throw Error(describe(def) + ": " + e.what());
          }
        });
  };
  auto kl_options = [](const Args& args) {
    KlDivOptions o;
    o.class_axis = order_arg(args);
    o.reduction = reduction_arg(args, true);
    o.log_target = args.get_int("log_target") != 0;
    return o;
  };
  auto infer_kl_inputs = [](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
    const TensorSpec& x = spec(def, in, 0);
    (void)class_spec(def, x, order_arg(args), "X");
    expect_dtype(def, spec(def, in, 1), x.dtype, "target");
    expect_shape(def, spec(def, in, 1), x.shape, "target", "(X's shape)");
  };
  kl_args(add_schema("KLDiv")
              .doc("KL(target || softmax(X)) over the class axis, as PyTorch's "
                   "F.kl_div(F.log_softmax(X), target).")
              .input("X", "logits")
              .input("target", "probabilities (or log-probabilities with log_target), X's shape")
              .output("output", "scalar, or X's shape for reduction none"))
      .infer([=](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        infer_kl_inputs(def, args, in);
        const TensorSpec& x = *in[0];
        return TensorSpecs{reduction_arg(args, true) == Reduction::kNone ? x
                                                                         : scalar_spec(x.dtype)};
      });
  add_kernel_operator(
      "KLDiv",
      [=](OpRun& r) { r.set_output(0, kl_div(r.input(0), r.input(1), kl_options(r.args()))); },
      {{"logits", 0}, {"target", 1}});
  kl_args(add_schema("KLDivGradient")
              .doc("dX of KLDiv.")
              .input("X", "logits")
              .input("target", "X's shape")
              .input("d_output", "gradient of output (scalar, or X's shape for none)")
              .output("dX", "X's shape"))
      .infer([=](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        infer_kl_inputs(def, args, in);
        const TensorSpec& x = *in[0];
        const bool map = reduction_arg(args, true) == Reduction::kNone;
        expect_upstream(def, in, 2, x.dtype, "d_output",
                        map ? std::optional(x.shape) : std::nullopt);
        return TensorSpecs{x};
      });
  add_kernel_operator(
      "KLDivGradient",
      [=](OpRun& r) {
        r.set_output(0, kl_div_backward(r.input(0), r.input(1), r.input(2), kl_options(r.args())));
      },
      {{"logits", 0}, {"target", 1}, {"grad_output", 2}});
  add_gradient("KLDiv", [](const OperatorDef& fwd, const std::vector<std::string>& go) {
    require_output_grad(fwd, go, 0);
    GradientOps g;
    g.ops.push_back(make_operator("KLDivGradient", {fwd.inputs[0], fwd.inputs[1], go[0]},
                                  {grad_name(fwd.inputs[0])}));
    g.input_grads = {grad_name(fwd.inputs[0])};
    return g;
  });
}

}  // namespace spatialsoftmax::op::detail
