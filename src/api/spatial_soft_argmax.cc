// spatial_softmax, spatial_soft_argmax and its backward: validate, place the
// outputs, run the selected backend.
#include <cmath>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

#include "api/outputs.h"
#include "api/validate.h"
#include "dispatch/backend.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax {
namespace {

using api::ClassTensor;
using api::Dense;
using api::fail;
using api::visit_float_32_64;

struct SoftArgmaxSetup {
  ClassTensor info;
  int k = 0;
  std::vector<std::vector<double>> coordinates;
  bool pixel = false, singleton_center = true;
  double beta = 1;
};

SoftArgmaxSetup setup_soft_argmax(std::string_view op, const TensorView& input,
                                  const SpatialSoftArgmaxOptions& options) {
  SoftArgmaxSetup s;
  if (is_16_bit(input.dtype())) {
    api::fail_dtype(op, "input", "float32 or float64 (no 16-bit spatial soft-argmax)",
                    input.dtype());
  }
  s.info = api::analyze_class_tensor(op, "input", input, options.channel_axis, 1, true);
  const double t = options.temperature;
  if (!(t > 0) || !std::isfinite(t)) {
    fail(op, "temperature", "= " + api::format_value(t) + ", expected finite and > 0");
  }
  api::check_enum(op, "temperature_mode", static_cast<int>(options.temperature_mode), 2);
  api::check_enum(op, "coordinates", static_cast<int>(options.coordinates), 2);
  api::check_enum(op, "singleton_coordinate", static_cast<int>(options.singleton_coordinate), 2);
  s.beta = options.temperature_mode == TemperatureMode::kDivide ? 1.0 / t : t;
  s.k = static_cast<int>(s.info.spatial_dims.size());
  s.pixel = options.coordinates == Coordinates::kPixel;
  s.singleton_center = options.singleton_coordinate == SingletonCoordinate::kCenter;
  for (std::int64_t length : s.info.spatial_dims) {
    std::vector<double> u(static_cast<std::size_t>(length));
    for (std::int64_t j = 0; j < length; ++j) {
      u[j] = core::spatial_coordinate(j, length, s.pixel, s.singleton_center);
    }
    s.coordinates.push_back(std::move(u));
  }
  return s;
}

template <class T>
core::SpatialSoftArgmaxProblem<T> soft_argmax_problem(const SoftArgmaxSetup& s, const Dense& x) {
  core::SpatialSoftArgmaxProblem<T> pb;
  pb.geom = s.info.geom;
  pb.spatial_rank = s.k;
  for (int a = 0; a < s.k; ++a) {
    pb.dims[a] = s.info.spatial_dims[a];
    pb.coordinate[a] = s.coordinates[a].data();
  }
  pb.pixel_coordinates = s.pixel;
  pb.singleton_center = s.singleton_center;
  pb.beta = s.beta;
  pb.input = x.get<T>();
  return pb;
}

// The forward; `into` null: the outputs options ask for are allocated (the
// kernel writes every element); else the views given are the outputs
// (keypoints may be absent only for spatial_softmax_into).
SpatialSoftArgmaxResult run_soft_argmax(std::string_view op, const TensorView& input,
                                        const SpatialSoftArgmaxOptions& options,
                                        const SpatialSoftArgmaxOutputs* into,
                                        const ExecutionContext& context) {
  const SoftArgmaxSetup s = setup_soft_argmax(op, input, options);
  const DType dtype = input.dtype();
  const std::int64_t N = s.info.geom.batch, C = s.info.geom.classes, k = s.k;
  const Device device = api::common_device(op, {{"input", &input}});
  api::Footprint footprint(op, device, {{"input", &input}}, context);
  const bool want_keypoints = !into || into->keypoints;
  const bool want_softmax = into ? into->softmax.has_value() : options.want_softmax;
  const bool want_covariance = into ? into->covariance.has_value() : options.want_covariance;
  const MutableTensorView* none = nullptr;
  SpatialSoftArgmaxResult r;
  void* keypoints = want_keypoints
                        ? footprint.place("keypoints", into ? api::given(into->keypoints) : none,
                                          dtype, {N, C, k}, "((N, C, k))", &r.keypoints)
                        : nullptr;
  void* softmax = want_softmax
                      ? footprint.place("softmax", into ? api::given(into->softmax) : none, dtype,
                                        input.shape(), "(the input's shape)", &r.softmax)
                      : nullptr;
  void* covariance = want_covariance
                         ? footprint.place("covariance", into ? api::given(into->covariance) : none,
                                           dtype, {N, C, k, k}, "((N, C, k, k))", &r.covariance)
                         : nullptr;
  const Dense x(input);
  // The CPU kernels always write the keypoints: scratch where none are
  // wanted (a device backend skips them).
  Tensor unwanted;
  if (!keypoints && device.type == DeviceType::kCpu) {
    keypoints = (unwanted = Tensor::uninitialized(dtype, {N, C, k})).data();
  }
  visit_float_32_64(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto pb = soft_argmax_problem<T>(s, x);
    pb.keypoints = static_cast<T*>(keypoints);
    pb.softmax = static_cast<T*>(softmax);
    pb.covariance = static_cast<T*>(covariance);
    dispatch::select(dispatch::Op::kSpatialSoftArgmax, s.info.geom, dtype, device, op)
        .spatial_soft_argmax(pb, context);
  });
  return r;
}

double run_soft_argmax_backward(std::string_view op, const TensorView& input,
                                const SpatialSoftArgmaxGrads& grads,
                                const SpatialSoftArgmaxOptions& options,
                                const MutableTensorView* into, Tensor* allocated,
                                const ExecutionContext& context) {
  const SoftArgmaxSetup s = setup_soft_argmax(op, input, options);
  const DType dtype = input.dtype();
  const std::int64_t N = s.info.geom.batch, C = s.info.geom.classes, k = s.k;
  auto check = [&](const std::optional<TensorView>& g, std::string_view name, const Shape& shape,
                   std::string_view what) {
    if (!g) return Dense();
    api::check_dtype(op, name, *g, dtype);
    api::check_shape(op, name, *g, shape, what);
    return Dense(*g);
  };
  const Dense gk = check(grads.keypoints, "grad_keypoints", {N, C, k}, "((N, C, k))");
  const Dense gs = check(grads.softmax, "grad_softmax", input.shape(), "(the input's shape)");
  const Dense gc = check(grads.covariance, "grad_covariance", {N, C, k, k}, "((N, C, k, k))");
  const auto view_of = [](const std::optional<TensorView>& g) { return g ? &*g : nullptr; };
  const std::initializer_list<api::NamedView> inputs = {
      {"input", &input},
      {"grad_keypoints", view_of(grads.keypoints)},
      {"grad_softmax", view_of(grads.softmax)},
      {"grad_covariance", view_of(grads.covariance)}};
  const Device device = api::common_device(op, inputs);
  api::Footprint footprint(op, device, inputs, context);
  // Written whole by the kernel.
  void* grad_input =
      footprint.place("grad_input", into, dtype, input.shape(), "(the input's shape)", allocated);
  const Dense x(input);
  // On a device the temperature's gradient would need a wait for the
  // device to reach the host: it is not computed there.
  const bool on_device = device.type != DeviceType::kCpu;
  double grad_beta = on_device ? std::numeric_limits<double>::quiet_NaN() : 0.0;
  visit_float_32_64(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto pb = soft_argmax_problem<T>(s, x);
    pb.grad_input = static_cast<T*>(grad_input);
    pb.grad_keypoints = gk.get<T>();
    pb.grad_softmax = gs.get<T>();
    pb.grad_covariance = gc.get<T>();
    pb.grad_beta = on_device ? nullptr : &grad_beta;
    dispatch::select(dispatch::Op::kSpatialSoftArgmaxBackward, s.info.geom, dtype, device, op)
        .spatial_soft_argmax_backward(pb, context);
  });
  // beta = 1/T (divide) or T (multiply).
  const double t = options.temperature;
  return options.temperature_mode == TemperatureMode::kDivide ? -grad_beta / (t * t) : grad_beta;
}

}  // namespace

SpatialSoftArgmaxResult spatial_soft_argmax(const TensorView& input,
                                            const SpatialSoftArgmaxOptions& options,
                                            const ExecutionContext& context) {
  return run_soft_argmax("spatial_soft_argmax", input, options, nullptr, context);
}

Tensor spatial_softmax(const TensorView& input, const SpatialSoftArgmaxOptions& options,
                       const ExecutionContext& context) {
  SpatialSoftArgmaxOptions o = options;
  o.want_softmax = true;
  o.want_covariance = false;
  return run_soft_argmax("spatial_softmax", input, o, nullptr, context).softmax;
}

SpatialSoftArgmaxBackward spatial_soft_argmax_backward(const TensorView& input,
                                                       const SpatialSoftArgmaxGrads& grads,
                                                       const SpatialSoftArgmaxOptions& options,
                                                       const ExecutionContext& context) {
  SpatialSoftArgmaxBackward r;
  r.grad_temperature = run_soft_argmax_backward("spatial_soft_argmax_backward", input, grads,
                                                options, nullptr, &r.grad_input, context);
  return r;
}

void spatial_soft_argmax_into(const TensorView& input, const SpatialSoftArgmaxOutputs& outputs,
                              const SpatialSoftArgmaxOptions& options,
                              const ExecutionContext& context) {
  if (!outputs.keypoints) {
    api::fail("spatial_soft_argmax_into", "outputs.keypoints",
              "expected a view of shape (N, C, k), got none");
  }
  run_soft_argmax("spatial_soft_argmax_into", input, options, &outputs, context);
}

void spatial_softmax_into(const TensorView& input, const MutableTensorView& softmax,
                          const SpatialSoftArgmaxOptions& options,
                          const ExecutionContext& context) {
  SpatialSoftArgmaxOutputs outputs;
  outputs.softmax = softmax;
  run_soft_argmax("spatial_softmax_into", input, options, &outputs, context);
}

double spatial_soft_argmax_backward_into(const TensorView& input,
                                         const SpatialSoftArgmaxGrads& grads,
                                         const MutableTensorView& grad_input,
                                         const SpatialSoftArgmaxOptions& options,
                                         const ExecutionContext& context) {
  return run_soft_argmax_backward("spatial_soft_argmax_backward_into", input, grads, options,
                                  &grad_input, nullptr, context);
}

}  // namespace spatialsoftmax
