// The spatial softmax over d1..dk per channel and its soft-argmax keypoints
// (docs/semantics.md 4) as operators, with one gradient operator for both.
#include "op/operators/op_helpers.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::op::detail {
namespace {

SpatialSoftArgmaxOptions spatial_options(const Args& args) {
  SpatialSoftArgmaxOptions o;
  o.channel_axis = order_arg(args);
  o.temperature = args.get_float("temperature");
  o.temperature_mode =
      parse_temperature_mode(args.get_string("temperature_mode"), "argument 'temperature_mode'");
  o.coordinates = parse_coordinates(args.get_string("coordinates"), "argument 'coordinates'");
  o.singleton_coordinate = parse_singleton_coordinate(args.get_string("singleton_coordinate"),
                                                      "argument 'singleton_coordinate'");
  return o;
}

// Arguments of both forward operators and the gradient: the gradient op
// receives every argument of either forward op.
OpSchema& spatial_args(OpSchema& s) {
  return s
      .arg("order", ArgType::kString, std::string("NCHW"), "\"NCHW\" or \"NHWC\" (channel last)")
      .arg("temperature", ArgType::kFloat, 1.0f, "T > 0")
      .arg("temperature_mode", ArgType::kString, std::string("divide"),
           "\"divide\": exp(x / T); \"multiply\": exp(x * T) (kornia)")
      .arg("coordinates", ArgType::kString, std::string("normalized"),
           "\"normalized\": linspace(-1, 1, L); \"pixel\": 0..L-1")
      .arg("singleton_coordinate", ArgType::kString, std::string("center"),
           "normalized coordinate of an axis of length 1: \"center\" (0) or \"minus_one\"")
      .allow_empty_optional_names()
      .check([](const OperatorDef& def, const Args& args) {
        try {
          (void)spatial_options(args);
        } catch (const Error& e) {
          throw Error(describe(def) + ": " + e.what());
        }
      });
}

// X as the spatial ops take it: k >= 1, and C = 0 has nothing to do.
ClassShape infer_spatial_input(const OperatorDef& def, const Args& args, const TensorSpec& x) {
  return class_spec(def, x, order_arg(args), "X", 1, true);
}

}  // namespace

void register_spatial_operators() {
  spatial_args(add_schema("SpatialSoftmax")
                   .doc("Per (n, c), the softmax over all spatial positions, with temperature.")
                   .input("X", "(N, C, d1..dk) or (N, d1..dk, C), k >= 1")
                   .output("S", "X's shape"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        infer_spatial_input(def, args, spec(def, in, 0));
        return TensorSpecs{*in[0]};
      });
  add_kernel_operator(
      "SpatialSoftmax",
      [](OpRun& r) { r.set_output(0, spatial_softmax(r.input(0), spatial_options(r.args()))); },
      {{"input", 0}});

  spatial_args(add_schema("SpatialSoftArgmax")
                   .doc("Expected coordinates (keypoints) of the spatial softmax per channel; "
                        "component order fastest axis first ((x, y) in 2-D).")
                   .input("X", "(N, C, d1..dk) or (N, d1..dk, C), k >= 1")
                   .output("keypoints", "(N, C, k)")
                   .optional_output("S", "the spatial softmax, X's shape")
                   .optional_output("covariance", "(N, C, k, k)"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const TensorSpec& x = spec(def, in, 0);
        const ClassShape c = infer_spatial_input(def, args, x);
        const auto k = static_cast<std::int64_t>(c.spatial_dims.size());
        return TensorSpecs{TensorSpec{x.dtype, {c.batch, c.classes, k}}, x,
                           TensorSpec{x.dtype, {c.batch, c.classes, k, k}}};
      });
  add_kernel_operator("SpatialSoftArgmax",
                      [](OpRun& r) {
                        SpatialSoftArgmaxOptions o = spatial_options(r.args());
                        o.want_softmax = r.wants_output(1);
                        o.want_covariance = r.wants_output(2);
                        SpatialSoftArgmaxResult out = spatial_soft_argmax(r.input(0), o);
                        r.set_output(0, std::move(out.keypoints));
                        r.set_output(1, std::move(out.softmax));
                        r.set_output(2, std::move(out.covariance));
                      },
                      {{"input", 0}});

  spatial_args(add_schema("SpatialSoftArgmaxGradient")
                   .doc("dX of SpatialSoftmax and SpatialSoftArgmax from the upstream gradients "
                        "of keypoints, S and covariance (absent ones are zero).")
                   .input("X", "the forward input")
                   .optional_input("d_keypoints", "(N, C, k)")
                   .optional_input("d_S", "X's shape")
                   .optional_input("d_covariance", "(N, C, k, k)")
                   .output("dX", "X's shape"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const TensorSpec& x = spec(def, in, 0);
        const ClassShape c = infer_spatial_input(def, args, x);
        const auto k = static_cast<std::int64_t>(c.spatial_dims.size());
        const Shape expected[] = {{c.batch, c.classes, k}, x.shape, {c.batch, c.classes, k, k}};
        const char* names[] = {"d_keypoints", "d_S", "d_covariance"};
        for (std::size_t i = 1; i < in.size() && i < 4; ++i) {
          if (!in[i]) continue;
          expect_dtype(def, *in[i], x.dtype, names[i - 1]);
          expect_shape(def, *in[i], expected[i - 1], names[i - 1], "");
        }
        return TensorSpecs{x};
      });
  add_kernel_operator(
      "SpatialSoftArgmaxGradient",
      [](OpRun& r) {
        SpatialSoftArgmaxGrads g;
        g.keypoints = r.optional_input(1);
        g.softmax = r.optional_input(2);
        g.covariance = r.optional_input(3);
        r.set_output(
            0, spatial_soft_argmax_backward(r.input(0), g, spatial_options(r.args())).grad_input);
      },
      {{"input", 0}, {"grad_keypoints", 1}, {"grad_softmax", 2}, {"grad_covariance", 3}});

  // SpatialSoftmax's S is SpatialSoftArgmax's output 1.
  add_gradient("SpatialSoftmax", [](const OperatorDef& fwd, const std::vector<std::string>& go) {
    require_output_grad(fwd, go, 0);
    GradientOps g;
    g.ops.push_back(make_operator("SpatialSoftArgmaxGradient", {fwd.inputs[0], "", go[0]},
                                  {grad_name(fwd.inputs[0])}));
    g.input_grads = {grad_name(fwd.inputs[0])};
    return g;
  });
  add_gradient("SpatialSoftArgmax", [](const OperatorDef& fwd, const std::vector<std::string>& go) {
    std::vector<std::string> inputs = {fwd.inputs[0]};
    for (std::size_t i = 0; i < 3; ++i) inputs.push_back(i < go.size() ? go[i] : "");
    while (inputs.back().empty()) inputs.pop_back();
    GradientOps g;
    g.ops.push_back(make_operator("SpatialSoftArgmaxGradient", inputs, {grad_name(fwd.inputs[0])}));
    g.input_grads = {grad_name(fwd.inputs[0])};
    return g;
  });
}

}  // namespace spatialsoftmax::op::detail
