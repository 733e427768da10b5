// Caffe2's SpatialSoftmaxWithLoss and SoftmaxWithLoss with their gradients
// (docs/semantics.md section 2), over the caffe2:: functions of the public API.
#include "op/operators/op_helpers.h"
#include "spatialsoftmax/caffe2.h"

namespace spatialsoftmax::op::detail {
namespace {

namespace c2 = spatialsoftmax::caffe2;

constexpr const char* kVariantDoc =
    "\"cpu\" or \"cuda\": which Caffe2 implementation's semantics (docs/semantics.md 2.4)";

c2::Variant variant_arg(const Args& args) {
  return c2::parse_variant(args.get_string("caffe2_variant"), "argument 'caffe2_variant'");
}

// Checked when the operator is created, as Caffe2's constructors did;
// `spatial`: the order may also be NHWC (an extension).
void check_caffe2_args(const OperatorDef& def, const Args& args, bool spatial) {
  if (args.get_float("scale") < 0) {
    throw Error(describe(def) + ": argument 'scale' = " + std::to_string(args.get_float("scale")) +
                ", expected >= 0");
  }
  try {
    (void)c2::parse_order(args.get_string("order"), "argument 'order'", spatial);
    (void)variant_arg(args);
  } catch (const Error& e) {
    throw Error(describe(def) + ": " + e.what());
  }
}

OpSchema& common_args(OpSchema& s, bool spatial) {
  return s.arg("scale", ArgType::kFloat, 1.0f, "loss scale, >= 0 (not applied by the CPU forward)")
      .arg("order", ArgType::kString, std::string("NCHW"),
           spatial ? "\"NCHW\" (X (N, D, H, W)) or \"NHWC\" (X (N, H, W, D), P in X's layout): "
                     "an extension, Caffe2 refused all but NCHW"
                   : "only \"NCHW\", as in Caffe2")
      .arg("caffe2_variant", ArgType::kString, std::string("cpu"), kVariantDoc)
      .check([spatial](const OperatorDef& def, const Args& args) {
        check_caffe2_args(def, args, spatial);
      });
}

// The class axis of a spatial operator's X.
ClassAxis spatial_axis(const Args& args) {
  return c2::parse_order(args.get_string("order"), "argument 'order'", true);
}

// The ports of both gradient operators, as Caffe2's gradient maker wires
// them: (X, T, [weight_tensor], P, d_avg_loss) -> dX.
OpSchema& gradient_ports(OpSchema& s, const char* x_doc, const char* t_doc) {
  return s.input("X", x_doc)
      .input("T", t_doc)
      .input("P_or_weight_tensor", "P, or the weights when 5 inputs are given")
      .input("P_or_d_avg_loss", "d_avg_loss, or P when 5 inputs are given")
      .optional_input("d_avg_loss", "upstream gradient of avg_loss (5 inputs)")
      .output("dX", "X's shape")
      .arg("only_loss", ArgType::kInt, std::int64_t{0},
           "Caffe2 CUDA memory option; no effect here");
}

c2::SpatialSoftmaxWithLossArgs spatial_args(const Args& a) {
  c2::SpatialSoftmaxWithLossArgs out;
  out.scale = static_cast<float>(a.get_float("scale"));
  out.order = a.get_string("order");
  out.variant = variant_arg(a);
  return out;
}

c2::SoftmaxWithLossArgs softmax_args(const Args& a) {
  c2::SoftmaxWithLossArgs out;
  out.scale = static_cast<float>(a.get_float("scale"));
  out.order = a.get_string("order");
  out.label_prob = static_cast<int>(a.get_int("label_prob"));
  out.axis = static_cast<int>(a.get_int("axis"));
  out.average_by_batch_size = static_cast<int>(a.get_int("average_by_batch_size"));
  out.variant = variant_arg(a);
  return out;
}

// The caffe2:: functions name X, T and weight_tensor as the forward ops do
// (the shared driver says pixel_weight for the weights); the gradients'
// inputs shift with the weights, and the API's d_loss is d_avg_loss.
const ApiArgs kLossApiArgs = {{"X", 0}, {"T", 1}, {"weight_tensor", 2}, {"pixel_weight", 2}};

ApiArgs gradient_api_args(const OperatorDef& def) {
  const bool weighted = def.inputs.size() == 5;
  ApiArgs a = {{"X", 0}, {"T", 1}};
  if (weighted) {
    a.push_back({"weight_tensor", 2, "weight_tensor"});
    a.push_back({"pixel_weight", 2, "weight_tensor"});
  }
  a.push_back({"P", weighted ? 3u : 2u, "P"});
  a.push_back({"d_loss", weighted ? 4u : 3u, "d_avg_loss"});
  return a;
}

// X (N, D, H, W) float (NHWC: (N, H, W, D)), T (N, H, W) int32, optional
// weights (N, H, W).
void infer_spatial_inputs(const OperatorDef& def, const Args& args, const TensorSpecs& in,
                          std::size_t weight_index, bool has_weight) {
  const TensorSpec& x = spec(def, in, 0);
  const TensorSpec& t = spec(def, in, 1);
  expect_float(def, x, "X");
  const bool nhwc = spatial_axis(args) == ClassAxis::kLast;
  if (x.shape.size() != 4) {
    infer_fail(def, std::string("X rank: expected 4 (") + (nhwc ? "(N, H, W, D)" : "(N, D, H, W)") +
                        "), got " + std::to_string(x.shape.size()));
  }
  expect_dtype(def, t, DType::kInt32, "T");
  const Shape nhw =
      nhwc ? Shape{x.shape[0], x.shape[1], x.shape[2]} : Shape{x.shape[0], x.shape[2], x.shape[3]};
  expect_shape(def, t, nhw, "T", "((N, H, W) of X)");
  if (has_weight) {
    const TensorSpec& w = spec(def, in, weight_index);
    expect_dtype(def, w, x.dtype, "weight_tensor");
    expect_shape(def, w, nhw, "weight_tensor", "((N, H, W) of X)");
  }
}

// SoftmaxWithLoss: X of rank >= 2 coerced to (N, D) at axis.
std::pair<std::int64_t, std::int64_t> coerced(const OperatorDef& def, const TensorSpec& x,
                                              std::int64_t axis) {
  const auto rank = static_cast<std::int64_t>(x.shape.size());
  const std::int64_t a = axis < 0 ? axis + rank : axis;
  if (rank < 1 || a < 0 || a >= rank) {
    infer_fail(def, "argument 'axis' = " + std::to_string(axis) + ": expected in [-" +
                        std::to_string(rank) + ", " + std::to_string(rank) + ") for X of shape " +
                        shape_string(x.shape));
  }
  std::int64_t n = 1, d = 1;
  for (std::int64_t i = 0; i < rank; ++i) (i < a ? n : d) *= x.shape[static_cast<std::size_t>(i)];
  return {n, d};
}

void infer_softmax_inputs(const OperatorDef& def, const Args& args, const TensorSpecs& in,
                          bool has_weight, std::size_t weight_index) {
  const TensorSpec& x = spec(def, in, 0);
  const TensorSpec& t = spec(def, in, 1);
  expect_float(def, x, "X");
  const auto [n, d] = coerced(def, x, args.get_int("axis"));
  if (args.get_int("label_prob") != 0) {
    expect_dtype(def, t, x.dtype, "T");
    if (checked_numel(t.shape, "T") != n * d) {
      infer_fail(def, "T shape: expected " + std::to_string(n) + " x " + std::to_string(d) +
                          " probabilities, got " + shape_string(t.shape));
    }
  } else {
    expect_dtype(def, t, DType::kInt32, "T");
    if (checked_numel(t.shape, "T") != n) {
      infer_fail(def, "T shape: expected " + std::to_string(n) +
                          " labels (N of X coerced at "
                          "axis), got " +
                          shape_string(t.shape));
    }
  }
  if (has_weight) {
    const TensorSpec& w = spec(def, in, weight_index);
    expect_dtype(def, w, x.dtype, "weight_tensor");
    expect_shape(def, w, {n}, "weight_tensor", "(one per row)");
  }
}

}  // namespace

void register_caffe2_operators() {
  // --- SpatialSoftmaxWithLoss ------------------------------------------------
  common_args(add_schema("SpatialSoftmaxWithLoss")
                  .doc("Per-pixel softmax over D and the mean cross-entropy over non-ignored "
                       "pixels (label -1 is ignored); Caffe2 CPU semantics by default.")
                  .input("X", "logits (N, D, H, W), or (N, H, W, D) for NHWC; float32 or float64")
                  .input("T", "labels (N, H, W), int32, -1 = ignore")
                  .optional_input("weight_tensor", "per-pixel weights (N, H, W)")
                  .output("P", "softmax, X's shape")
                  .output("avg_loss", "scalar loss"),
              true)
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        infer_spatial_inputs(def, args, in, 2, in.size() > 2);
        const TensorSpec& x = *in[0];
        return TensorSpecs{x, scalar_spec(x.dtype)};
      });
  add_kernel_operator(
      "SpatialSoftmaxWithLoss",
      [](OpRun& r) {
        c2::LossOutputs out = c2::spatial_softmax_with_loss(
            r.input(0), r.input(1), r.optional_input(2), spatial_args(r.args()));
        r.set_output(0, std::move(out.prob));
        r.set_output(1, std::move(out.loss));
      },
      kLossApiArgs);

  common_args(
      gradient_ports(add_schema("SpatialSoftmaxWithLossGradient")
                         .doc("dX of SpatialSoftmaxWithLoss from the supplied P; X gives "
                              "only the shape."),
                     "logits (N, D, H, W), or (N, H, W, D) for NHWC", "labels (N, H, W), int32"),
      true)
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const bool weighted = in.size() == 5;
        infer_spatial_inputs(def, args, in, 2, weighted);
        const TensorSpec& x = *in[0];
        expect_dtype(def, spec(def, in, weighted ? 3 : 2), x.dtype, "P");
        expect_shape(def, spec(def, in, weighted ? 3 : 2), x.shape, "P", "(X's shape)");
        expect_first_element(def, spec(def, in, weighted ? 4 : 3), "d_avg_loss");
        return TensorSpecs{x};
      });
  add_kernel_operator(
      "SpatialSoftmaxWithLossGradient",
      [](OpRun& r) {
        const bool weighted = r.input_count() == 5;
        r.set_output(
            0, c2::spatial_softmax_with_loss_gradient(
                   r.input(0), r.input(1), weighted ? r.optional_input(2) : std::nullopt,
                   r.input(weighted ? 3 : 2), r.input(weighted ? 4 : 3), spatial_args(r.args())));
      },
      gradient_api_args);

  // Caffe2's GetSoftmaxWithLossGradient: (X, T, [W], P, GO(loss)) -> GI(X).
  auto softmax_with_loss_gradient = [](const char* grad_type) {
    return [grad_type](const OperatorDef& fwd, const std::vector<std::string>& go) {
      require_output_grad(fwd, go, 1);
      std::vector<std::string> inputs(fwd.inputs.begin(), fwd.inputs.end());
      inputs.push_back(fwd.outputs[0]);
      inputs.push_back(go[1]);
      GradientOps g;
      g.ops.push_back(make_operator(grad_type, inputs, {grad_name(fwd.inputs[0])}));
      g.input_grads = {grad_name(fwd.inputs[0])};
      return g;
    };
  };
  add_gradient("SpatialSoftmaxWithLoss",
               softmax_with_loss_gradient("SpatialSoftmaxWithLossGradient"));

  // --- SoftmaxWithLoss -------------------------------------------------------
  auto softmax_loss_args = [](OpSchema& s) -> OpSchema& {
    return common_args(s, false)
        .arg("label_prob", ArgType::kInt, std::int64_t{0}, "1: T holds probabilities (N, D)")
        .arg("axis", ArgType::kInt, std::int64_t{1}, "X is coerced to 2-D (N, D) at this axis")
        .arg("average_by_batch_size", ArgType::kInt, std::int64_t{0},
             "1: divide by N instead of the total weight (CPU)");
  };
  softmax_loss_args(add_schema("SoftmaxWithLoss")
                        .doc("Softmax over X coerced to (N, D) at axis, then the weighted mean "
                             "cross-entropy over rows, times scale.")
                        .input("X", "logits, any rank >= axis + 1")
                        .input("T", "int32 labels (N), or probabilities (N, D) with label_prob")
                        .optional_input("weight_tensor", "one weight per row (N)")
                        .output("P", "softmax, X's shape (Caffe2's inference said (N, D))")
                        .output("avg_loss", "scalar loss")
                        .optional_output("unused", "accepted as in Caffe2, never written"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        infer_softmax_inputs(def, args, in, in.size() > 2, 2);
        const TensorSpec& x = *in[0];
        return TensorSpecs{x, scalar_spec(x.dtype)};
      });
  add_kernel_operator(
      "SoftmaxWithLoss",
      [](OpRun& r) {
        c2::LossOutputs out = c2::softmax_with_loss(r.input(0), r.input(1), r.optional_input(2),
                                                    softmax_args(r.args()));
        r.set_output(0, std::move(out.prob));
        r.set_output(1, std::move(out.loss));
      },
      kLossApiArgs);

  softmax_loss_args(
      gradient_ports(
          add_schema("SoftmaxWithLossGradient").doc("dX of SoftmaxWithLoss from the supplied P."),
          "logits", "labels or probabilities"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const bool weighted = in.size() == 5;
        infer_softmax_inputs(def, args, in, weighted, 2);
        const TensorSpec& x = *in[0];
        expect_shape(def, spec(def, in, weighted ? 3 : 2), x.shape, "P", "(X's shape)");
        expect_first_element(def, spec(def, in, weighted ? 4 : 3), "d_avg_loss");
        return TensorSpecs{x};
      });
  add_kernel_operator(
      "SoftmaxWithLossGradient",
      [](OpRun& r) {
        const bool weighted = r.input_count() == 5;
        r.set_output(
            0, c2::softmax_with_loss_gradient(
                   r.input(0), r.input(1), weighted ? r.optional_input(2) : std::nullopt,
                   r.input(weighted ? 3 : 2), r.input(weighted ? 4 : 3), softmax_args(r.args())));
      },
      gradient_api_args);
  add_gradient("SoftmaxWithLoss", softmax_with_loss_gradient("SoftmaxWithLossGradient"));
}

}  // namespace spatialsoftmax::op::detail
