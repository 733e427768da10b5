// The spatial softmax over d1..dk per channel and its soft-argmax keypoints
// (SPEC.md 4) as operators, with one gradient operator for both.
#include "op/operators/op_helpers.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::op::detail {
namespace {

SpatialSoftArgmaxOptions spatial_options(const Args& args) {
  SpatialSoftArgmaxOptions o;
  o.channel_axis = order_arg(args);
  o.temperature = args.get_float("temperature");
  const std::string mode = args.get_string("temperature_mode");
  if (mode == "divide") {
    o.temperature_mode = TemperatureMode::kDivide;
  } else if (mode == "multiply") {
    o.temperature_mode = TemperatureMode::kMultiply;
  } else {
    throw Error("argument 'temperature_mode': '" + mode + "', expected divide or multiply");
  }
  const std::string coords = args.get_string("coordinates");
  if (coords == "normalized") {
    o.coordinates = Coordinates::kNormalized;
  } else if (coords == "pixel") {
    o.coordinates = Coordinates::kPixel;
  } else {
    throw Error("argument 'coordinates': '" + coords + "', expected normalized or pixel");
  }
  const std::string single = args.get_string("singleton_coordinate");
  if (single == "center") {
    o.singleton_coordinate = SingletonCoordinate::kCenter;
  } else if (single == "minus_one") {
    o.singleton_coordinate = SingletonCoordinate::kMinusOne;
  } else {
    throw Error("argument 'singleton_coordinate': '" + single + "', expected center or minus_one");
  }
  return o;
}

// Arguments of both forward operators and the gradient: the gradient op
// receives every argument of either forward op.
OpSchema& spatial_args(OpSchema& s) {
  return s.arg("order", ArgType::kString, std::string("NCHW"), "\"NCHW\" or \"NHWC\" (channel last)")
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

void infer_spatial_input(const OperatorDef& def, const Args& args, const TensorSpec& x) {
  expect_float(def, x, "X");
  const int rank = static_cast<int>(x.shape.size());
  if (rank < 3 || rank > 10) {
    infer_fail(def, "X rank: expected 3 to 10 ((N, C, d1..dk), k >= 1), got " + std::to_string(rank));
  }
  (void)order_arg(args);
}

// (N, C) and k of X.
std::pair<Shape, std::int64_t> channels(const Shape& x, ClassAxis axis) {
  const std::int64_t c = x[axis == ClassAxis::kFirst ? 1 : x.size() - 1];
  return {{x[0], c}, static_cast<std::int64_t>(x.size()) - 2};
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
  add_cpu_operator("SpatialSoftmax", [](OpRun& r) {
    r.set_output(0, spatial_softmax(r.input(0), spatial_options(r.args())));
  }, {{"input", 0}});

  spatial_args(add_schema("SpatialSoftArgmax")
                   .doc("Expected coordinates (keypoints) of the spatial softmax per channel; "
                        "component order fastest axis first ((x, y) in 2-D).")
                   .input("X", "(N, C, d1..dk) or (N, d1..dk, C), k >= 1")
                   .output("keypoints", "(N, C, k)")
                   .optional_output("S", "the spatial softmax, X's shape")
                   .optional_output("covariance", "(N, C, k, k)"))
      .infer([](const OperatorDef& def, const Args& args, const TensorSpecs& in) {
        const TensorSpec& x = spec(def, in, 0);
        infer_spatial_input(def, args, x);
        auto [nc, k] = channels(x.shape, order_arg(args));
        return TensorSpecs{TensorSpec{x.dtype, {nc[0], nc[1], k}}, x,
                           TensorSpec{x.dtype, {nc[0], nc[1], k, k}}};
      });
  add_cpu_operator("SpatialSoftArgmax", [](OpRun& r) {
    SpatialSoftArgmaxOptions o = spatial_options(r.args());
    o.want_softmax = r.wants_output(1);
    o.want_covariance = r.wants_output(2);
    SpatialSoftArgmaxResult out = spatial_soft_argmax(r.input(0), o);
    r.set_output(0, std::move(out.keypoints));
    r.set_output(1, std::move(out.softmax));
    r.set_output(2, std::move(out.covariance));
  }, {{"input", 0}});

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
        infer_spatial_input(def, args, x);
        auto [nc, k] = channels(x.shape, order_arg(args));
        const Shape expected[] = {{nc[0], nc[1], k}, x.shape, {nc[0], nc[1], k, k}};
        const char* names[] = {"d_keypoints", "d_S", "d_covariance"};
        for (std::size_t i = 1; i < in.size() && i < 4; ++i) {
          if (!in[i]) continue;
          expect_dtype(def, *in[i], x.dtype, names[i - 1]);
          expect_shape(def, *in[i], expected[i - 1], names[i - 1], "");
        }
        return TensorSpecs{x};
      });
  add_cpu_operator("SpatialSoftArgmaxGradient", [](OpRun& r) {
    SpatialSoftArgmaxGrads g;
    g.keypoints = r.optional_input(1);
    g.softmax = r.optional_input(2);
    g.covariance = r.optional_input(3);
    r.set_output(0, spatial_soft_argmax_backward(r.input(0), g, spatial_options(r.args())).grad_input);
  }, {{"input", 0}, {"grad_keypoints", 1}, {"grad_softmax", 2}, {"grad_covariance", 3}});

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
