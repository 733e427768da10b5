// Caffe2's SpatialSoftmaxWithLoss and SoftmaxWithLoss (docs/semantics.md section 2),
// expressed through the shared cross-entropy driver plus Caffe2's own rules
// for scale and the total weight.
#include "spatialsoftmax/caffe2.h"

#include <cmath>
#include <initializer_list>
#include <string>

#include "api/cross_entropy.h"
#include "api/device_errors.h"
#include "api/labels.h"
#include "api/outputs.h"
#include "api/validate.h"
#include "dispatch/backend.h"

namespace spatialsoftmax::caffe2 {
namespace {

using api::Dense;
using api::fail;

constexpr std::string_view kSpatial = "SpatialSoftmaxWithLoss";
constexpr std::string_view kSpatialGrad = "SpatialSoftmaxWithLossGradient";
constexpr std::string_view kSoftmax = "SoftmaxWithLoss";
constexpr std::string_view kSoftmaxGrad = "SoftmaxWithLossGradient";

// Returns the class axis `order` names (NHWC only for the spatial operators).
ClassAxis check_common_args(std::string_view op, float scale, const std::string& order,
                            bool spatial) {
  if (!(scale >= 0) || !std::isfinite(scale)) {
    fail(op, "scale", "= " + api::format_value(scale) + ", expected finite and >= 0");
  }
  return parse_order(order, std::string(op) + ": order", spatial);
}

constexpr std::string_view kPixelWeightShape = "((N, H, W): one weight per pixel)";

// X (N, D, H, W) float, or (N, H, W, D) for NHWC; T (N, H, W) int32. The
// weights and the labels' values are checked by the caller, once.
api::ClassTensor check_spatial_inputs(std::string_view op, const TensorView& X, const TensorView& T,
                                      ClassAxis axis) {
  if (X.rank() != 4) {
    fail(op, "X",
         std::string("rank: expected 4 ") +
             (axis == ClassAxis::kFirst ? "(N, D, H, W)" : "(N, H, W, D)") + ", got " +
             std::to_string(X.rank()) + " with shape " + shape_string(X.shape()));
  }
  const api::ClassTensor info = api::analyze_class_tensor(op, "X", X, axis, 2);
  if (T.dtype() != DType::kInt32) {
    api::fail_dtype(op, "T", "int32", T.dtype());
  }
  if (T.rank() != 3) {
    fail(op, "T",
         "rank: expected 3 (N, H, W), got " + std::to_string(T.rank()) + " with shape " +
             shape_string(T.shape()));
  }
  api::check_shape(op, "T", T, info.map_shape, "((N, H, W) of X)");
  return info;
}

// dX = (P - target) * w_i * coef (0 where the label is -1 if
// ignore_minus_one), written to dx.
template <class T>
void run_prob_minus_target(std::string_view op, Device device, const core::Geometry& geom,
                           const Dense& prob, core::Labels labels, const T* target_probs,
                           const Dense& weight, bool ignore_minus_one, double coef, void* dx,
                           const ExecutionContext& context, const core::DeviceScalars<T>* scalars) {
  core::ProbMinusTargetProblem<T> pb;
  pb.geom = geom;
  pb.prob = prob.get<T>();
  pb.labels = labels;
  pb.target_probs = target_probs;
  pb.pixel_weight = weight.get<T>();
  pb.has_ignore_index = ignore_minus_one;
  pb.ignore_index = -1;
  pb.coef = static_cast<typename decltype(pb)::Scalar>(coef);
  pb.grad_logits = static_cast<T*>(dx);
  pb.device = scalars;
  dispatch::select(dispatch::Op::kProbMinusTarget, geom, dtype_of<T>(), device, op)
      .prob_minus_target(pb, context);
}

// The gradients' inputs, as their messages name them.
struct GradientInputs {
  const TensorView& X;
  const TensorView& T;
  const std::optional<TensorView>& weight;
  const TensorView& P;
  const TensorView& d_loss;
};

// Where dX goes: the caller's view (checked; it may be exactly P's memory,
// as Caffe2 runs the gradient in place over P) or a new tensor in *allocated.
void* place_dx(std::string_view op, const GradientInputs& in, const MutableTensorView* into,
               Tensor* allocated, const ExecutionContext& context) {
  const TensorView* weight_view = in.weight ? &*in.weight : nullptr;
  const std::initializer_list<api::NamedView> inputs = {{"X", &in.X},
                                                        {"T", &in.T},
                                                        {"weight_tensor", weight_view},
                                                        {"P", &in.P},
                                                        {"d_loss", &in.d_loss}};
  api::Footprint footprint(op, api::common_device(op, inputs), inputs, context);
  return footprint.place_over("dX", into, "P", in.X.dtype(), in.X.shape(), "(X's shape)",
                              allocated);
}

// The gradients' inputs on one device (dense there, unless on the CPU).
Device gradient_device(std::string_view op, const GradientInputs& in) {
  const TensorView* weight_view = in.weight ? &*in.weight : nullptr;
  return api::common_device(op, {{"X", &in.X},
                                 {"T", &in.T},
                                 {"weight_tensor", weight_view},
                                 {"P", &in.P},
                                 {"d_loss", &in.d_loss}});
}

// d_loss: its first element, read here on the CPU; on a device the kernel
// reads it, so it must have X's dtype there.
double upstream_of(std::string_view op, const TensorView& d_loss, DType dtype, Device device) {
  if (device.type == DeviceType::kCpu) return api::first_element(op, "d_loss", d_loss);
  api::check_dtype(op, "d_loss", d_loss, dtype);
  if (checked_numel(d_loss.shape(), "d_loss") < 1) {
    fail(op, "d_loss", "shape: expected at least one element, got " + shape_string(d_loss.shape()));
  }
  return 0;
}

LossOutputs run_spatial(const TensorView& X, const TensorView& T,
                        const std::optional<TensorView>& weight,
                        const SpatialSoftmaxWithLossArgs& args, const LossOutputViews* into,
                        const ExecutionContext& context) {
  const std::string_view op = kSpatial;
  const ClassAxis axis = check_common_args(op, args.scale, args.order, true);
  check_spatial_inputs(op, X, T, axis);
  CrossEntropyOptions options = CrossEntropyOptions::caffe2_spatial();
  options.class_axis = axis;
  options.pixel_weight = weight;
  options.reduction = Reduction::kSum;
  options.want_prob = true;
  CrossEntropyOutputs views;
  if (into) {
    views.prob = into->prob;
    views.loss = into->loss;
  }
  // The CPU forward does not apply scale; CUDA's keeps the sum when no
  // label counts.
  api::LossPlan plan;
  plan.rule = args.variant == Variant::kCpu
                  ? core::LossScalar{core::LossRule::kMean, 1.0, 0.0}
                  : core::LossScalar{core::LossRule::kCaffe2Cuda, args.scale, 0.0};
  plan.denominator_from = core::DenominatorFrom::kLabelWeights;
  CrossEntropyResult run = api::run_cross_entropy(
      {op, "X", "T", "weight_tensor", kPixelWeightShape}, X, T, options, {}, api::Pass::kForward,
      false, nullptr, into ? &views : nullptr, context, &plan);
  return {std::move(run.prob), std::move(run.loss)};
}

Tensor run_spatial_gradient(const GradientInputs& in, const SpatialSoftmaxWithLossArgs& args,
                            const MutableTensorView* into, const ExecutionContext& context) {
  const std::string_view op = kSpatialGrad;
  const TensorView &X = in.X, &T = in.T, &P = in.P;
  const ClassAxis axis = check_common_args(op, args.scale, args.order, true);
  const api::ClassTensor info = check_spatial_inputs(op, X, T, axis);
  const Device device = gradient_device(op, in);
  if (in.weight) {
    api::check_weights_on(device, op, "weight_tensor", *in.weight, info.map_shape,
                          kPixelWeightShape, X.dtype());
  }
  api::check_dtype(op, "P", P, X.dtype());
  api::check_shape(op, "P", P, X.shape(), "(X's shape)");
  const double g = upstream_of(op, in.d_loss, X.dtype(), device);
  Tensor dx;
  void* dx_data = place_dx(op, in, into, &dx, context);
  const Dense labels(T), w(in.weight), prob(P);
  const core::Labels y{labels.raw(), DType::kInt32};
  const core::GradScalar rule{core::GradRule::kCaffe2, args.scale, false};
  const api::LabelArg label_arg{op, "T", T, y, info.geom.classes, -1};
  api::visit_float(X.dtype(), [&](auto tag) {
    using F = decltype(tag);
    core::DeviceScalars<F> scalars;
    double coef = 0;
    if (device.type == DeviceType::kCpu) {
      // Caffe2's total weight: the pixel weights of the labels that are not -1.
      const double Wt = api::scan_labels(label_arg, nullptr, w.raw(), X.dtype(), device, context);
      coef = core::finish_grad(rule, g, Wt);
    } else {
      scalars.label_site = api::error_site(op, "T", T.shape(), info.geom.classes, -1);
      if (in.weight)
        scalars.pixel_weight_site = api::error_site(op, "weight_tensor", info.map_shape);
      scalars.denominator_from = core::DenominatorFrom::kLabelWeights;
      scalars.grad = static_cast<const F*>(in.d_loss.data());
      scalars.grad_rule = rule;
    }
    run_prob_minus_target<F>(op, device, info.geom, prob, y, nullptr, w, true, coef, dx_data,
                             context, device.type == DeviceType::kCpu ? nullptr : &scalars);
  });
  return dx;
}

}  // namespace

ClassAxis parse_order(std::string_view text, std::string_view what, bool nhwc) {
  if (text == "NCHW") return ClassAxis::kFirst;
  if (text == "NHWC" && nhwc) return ClassAxis::kLast;
  throw Error(std::string(what) + " = '" + std::string(text) +
              "': " + (nhwc ? "expected NCHW or NHWC" : "Only NCHW order is supported right now."));
}

Variant parse_variant(std::string_view text, std::string_view what) {
  if (text == "cpu") return Variant::kCpu;
  if (text == "cuda") return Variant::kCuda;
  throw Error(std::string(what) + ": '" + std::string(text) + "', expected cpu or cuda");
}

LossOutputs spatial_softmax_with_loss(const TensorView& X, const TensorView& T,
                                      const std::optional<TensorView>& weight,
                                      const SpatialSoftmaxWithLossArgs& args,
                                      const ExecutionContext& context) {
  return run_spatial(X, T, weight, args, nullptr, context);
}

Tensor spatial_softmax_with_loss_gradient(const TensorView& X, const TensorView& T,
                                          const std::optional<TensorView>& weight,
                                          const TensorView& P, const TensorView& d_loss,
                                          const SpatialSoftmaxWithLossArgs& args,
                                          const ExecutionContext& context) {
  return run_spatial_gradient({X, T, weight, P, d_loss}, args, nullptr, context);
}

void spatial_softmax_with_loss_into(const TensorView& X, const TensorView& T,
                                    const std::optional<TensorView>& weight,
                                    const LossOutputViews& outputs,
                                    const SpatialSoftmaxWithLossArgs& args,
                                    const ExecutionContext& context) {
  run_spatial(X, T, weight, args, &outputs, context);
}

void spatial_softmax_with_loss_gradient_into(const TensorView& X, const TensorView& T,
                                             const std::optional<TensorView>& weight,
                                             const TensorView& P, const TensorView& d_loss,
                                             const MutableTensorView& dX,
                                             const SpatialSoftmaxWithLossArgs& args,
                                             const ExecutionContext& context) {
  run_spatial_gradient({X, T, weight, P, d_loss}, args, &dX, context);
}

namespace {

// Caffe2 coerces X to 2-D (N, D) at `axis`.
struct Coerced {
  core::Geometry geom;
  std::int64_t axis = 1;
};

Coerced coerce(std::string_view op, const TensorView& X, int axis) {
  if (!is_floating(X.dtype())) {
    api::fail_dtype(op, "X", "float32, float64, bfloat16 or float16", X.dtype());
  }
  const int rank = X.rank();
  if (axis < -rank || axis >= rank) {
    fail(op, "axis",
         "= " + std::to_string(axis) + ", expected in [" + std::to_string(-rank) + ", " +
             std::to_string(rank) + ") for X of shape " + shape_string(X.shape()));
  }
  checked_numel(X.shape(), std::string(op) + ": X");
  Coerced c;
  c.axis = axis < 0 ? axis + rank : axis;
  std::int64_t n = 1, d = 1;
  for (int i = 0; i < rank; ++i) (i < c.axis ? n : d) *= X.dim(i);
  if (d == 0) fail(op, "X", "shape " + shape_string(X.shape()) + ": expected D >= 1 classes");
  c.geom = {n, d, 1, false};
  return c;
}

std::int64_t product(const Shape& s, std::size_t from, std::size_t to) {
  std::int64_t p = 1;
  for (std::size_t i = from; i < to && i < s.size(); ++i) p *= s[i];
  return p;
}

// Checks T for label_prob 0 (int32, N labels; their values are checked by
// the caller, once) or 1 (rows of probabilities, each >= 0 and summing to 1
// within 1e-5, on the CPU: Caffe2's CUDA operator does not check them, and
// reading device memory here would wait for the device).
void check_softmax_targets(std::string_view op, const TensorView& X, const TensorView& T,
                           const Coerced& c, int label_prob, const Dense& dense, Device device) {
  const std::int64_t N = c.geom.batch, D = c.geom.classes;
  const auto axis = static_cast<std::size_t>(c.axis);
  if (label_prob == 0) {
    if (T.dtype() != DType::kInt32) {
      api::fail_dtype(op, "T", "int32 labels", T.dtype());
    }
    const bool ok =
        T.rank() == static_cast<int>(axis)
            ? checked_numel(T.shape(), "T") == N
            : product(T.shape(), 0, axis) == N && product(T.shape(), axis, T.shape().size()) == 1;
    if (!ok) {
      fail(op, "T",
           "shape: expected " + std::to_string(N) + " labels (X's dims before axis " +
               std::to_string(axis) + "), got " + shape_string(T.shape()));
    }
    return;
  }
  api::check_dtype(op, "T", T, X.dtype());
  if (T.rank() < 2 || product(T.shape(), 0, axis) != N ||
      product(T.shape(), axis, T.shape().size()) != D) {
    fail(op, "T",
         "shape: expected probabilities whose 2-D view is (" + std::to_string(N) + ", " +
             std::to_string(D) + "), got " + shape_string(T.shape()));
  }
  if (device.type != DeviceType::kCpu) return;
  // Caffe2's 1e-5; 16-bit rows also get the rounding of their D values
  // (half a unit in the last place each: 2^-9 bfloat16, 2^-11 float16).
  const double roundoff = X.dtype() == DType::kBFloat16  ? 0x1p-9
                          : X.dtype() == DType::kFloat16 ? 0x1p-11
                                                         : 0.0;
  const double tolerance = 1e-5 + static_cast<double>(D) * roundoff;
  api::visit_float(X.dtype(), [&](auto tag) {
    using F = decltype(tag);
    const F* t = dense.get<F>();
    for (std::int64_t i = 0; i < N; ++i) {
      double sum = 0;
      for (std::int64_t j = 0; j < D; ++j) {
        const double v = api::element_value(t[i * D + j]);
        if (!(v >= 0)) {
          fail(op, "T[" + std::to_string(i) + ", " + std::to_string(j) + "]",
               "= " + api::format_value(v) +
                   ": Label prob seems incorrect: label prob value must be nonnegative");
        }
        sum += v;
      }
      if (std::abs(sum - 1.0) > tolerance) {
        fail(op, "T row " + std::to_string(i),
             "sums to " + api::format_value(sum) +
                 ": Label prob seems incorrect: label prob values do not sum to 1.0 (+/- " +
                 (roundoff == 0 ? std::string("1e-5") : api::format_value(tolerance)) + ")");
      }
    }
  });
}

constexpr std::string_view kRowWeightShape = "(one weight per row)";

// A dense 2-D (N, D) view of a dense tensor.
TensorView as_2d(const Dense& dense, DType dtype, const core::Geometry& g, Device device) {
  return TensorView(dense.raw(), dtype, {g.batch, g.classes}, device);
}

}  // namespace

namespace {

// SoftmaxWithLoss's total weight: N rows, or the rows' weights (which
// average_by_batch_size ignores on Caffe2's CPU).
core::DenominatorFrom softmax_total_weight(const SoftmaxWithLossArgs& args) {
  return args.average_by_batch_size && args.variant == Variant::kCpu
             ? core::DenominatorFrom::kConstant
             : core::DenominatorFrom::kPixelWeights;
}

LossOutputs run_softmax(const TensorView& X, const TensorView& T,
                        const std::optional<TensorView>& weight, const SoftmaxWithLossArgs& args,
                        const LossOutputViews* into, const ExecutionContext& context) {
  check_common_args(kSoftmax, args.scale, args.order, false);
  const Coerced c = coerce(kSoftmax, X, args.axis);
  const TensorView* weight_view = weight ? &*weight : nullptr;
  const Device device =
      api::common_device(kSoftmax, {{"X", &X}, {"T", &T}, {"weight_tensor", weight_view}});
  const Dense x(X), target(T);
  check_softmax_targets(kSoftmax, X, T, c, args.label_prob, target, device);
  CrossEntropyOptions options;
  options.reduction = Reduction::kSum;
  options.want_prob = true;
  options.pixel_weight = weight;  // (N): the 2-D view's positions
  if (args.label_prob != 0) {
    // Caffe2 floors the probabilities in label_prob mode (CUDA at FLT_MIN).
    options.prob_floor = args.variant == Variant::kCpu ? 1e-20 : 1.1754943508222875e-38;
  }
  const TensorView targets = args.label_prob != 0
                                 ? as_2d(target, X.dtype(), c.geom, device)
                                 : TensorView(target.raw(), DType::kInt32, {c.geom.batch}, device);
  // P has X's shape (Caffe2's shape inference claims (N, D)); the run sees
  // it as the 2-D (N, D) that it computes over.
  CrossEntropyOutputs views;
  if (into) {
    api::check_shape(kSoftmax, "prob", into->prob.view(), X.shape(), "(X's shape)");
    views.prob = MutableTensorView(into->prob.data(), into->prob.dtype(),
                                   {c.geom.batch, c.geom.classes}, into->prob.device());
    views.loss = into->loss;
  }
  api::LossPlan plan;
  plan.rule = {core::LossRule::kCaffe2Scaled, args.scale, 0.0};
  plan.denominator_from = softmax_total_weight(args);
  plan.denominator = static_cast<double>(c.geom.batch);
  CrossEntropyResult run = api::run_cross_entropy(
      {kSoftmax, "X", "T", "weight_tensor", kRowWeightShape}, as_2d(x, X.dtype(), c.geom, device),
      targets, options, {}, api::Pass::kForward, false, nullptr, into ? &views : nullptr, context,
      &plan);
  LossOutputs out{std::move(run.prob), std::move(run.loss)};
  if (!into) out.prob.reshape(X.shape());
  return out;
}

Tensor run_softmax_gradient(const GradientInputs& in, const SoftmaxWithLossArgs& args,
                            const MutableTensorView* into, const ExecutionContext& context) {
  const TensorView &X = in.X, &T = in.T, &P = in.P;
  check_common_args(kSoftmaxGrad, args.scale, args.order, false);
  const Coerced c = coerce(kSoftmaxGrad, X, args.axis);
  const Device device = gradient_device(kSoftmaxGrad, in);
  const Dense target(T);
  check_softmax_targets(kSoftmaxGrad, X, T, c, args.label_prob, target, device);
  const Shape weight_shape{c.geom.batch};
  double weight_sum = static_cast<double>(c.geom.batch);
  if (in.weight) {
    weight_sum = api::check_weights_on(device, kSoftmaxGrad, "weight_tensor", *in.weight,
                                       weight_shape, kRowWeightShape, X.dtype())
                     .value_or(0.0);
  }
  api::check_dtype(kSoftmaxGrad, "P", P, X.dtype());
  if (checked_numel(P.shape(), "P") != c.geom.batch * c.geom.classes) {
    fail(kSoftmaxGrad, "P",
         "shape: expected " + shape_string(X.shape()) + " (X's shape), got " +
             shape_string(P.shape()));
  }
  const double g = upstream_of(kSoftmaxGrad, in.d_loss, X.dtype(), device);
  // CPU: no d_loss factor when the total weight is 0; CUDA always applies it.
  const core::GradScalar rule{core::GradRule::kCaffe2, args.scale, args.variant == Variant::kCpu};
  const core::DenominatorFrom total_from = softmax_total_weight(args);
  Tensor dx;
  void* dx_data = place_dx(kSoftmaxGrad, in, into, &dx, context);
  const bool on_cpu = device.type == DeviceType::kCpu;
  const core::Labels labels{target.raw(), DType::kInt32};
  if (args.label_prob == 0 && on_cpu) {
    (void)api::scan_labels({kSoftmaxGrad, "T", T, labels, c.geom.classes, std::nullopt}, nullptr,
                           nullptr, X.dtype(), device, context);
  }
  const Dense prob(P), w(in.weight);
  api::visit_float(X.dtype(), [&](auto tag) {
    using F = decltype(tag);
    const F* soft = args.label_prob != 0 ? target.get<F>() : nullptr;
    core::DeviceScalars<F> scalars;
    double coef = 0;
    if (on_cpu) {
      const double Wt = total_from == core::DenominatorFrom::kConstant
                            ? static_cast<double>(c.geom.batch)
                            : weight_sum;
      coef = core::finish_grad(rule, g, Wt);
    } else {
      if (args.label_prob == 0) {
        scalars.label_site = api::error_site(kSoftmaxGrad, "T", T.shape(), c.geom.classes);
      }
      if (in.weight) {
        scalars.pixel_weight_site = api::error_site(kSoftmaxGrad, "weight_tensor", weight_shape);
      }
      scalars.denominator_from = total_from;
      scalars.denominator = static_cast<double>(c.geom.batch);
      scalars.grad = static_cast<const F*>(in.d_loss.data());
      scalars.grad_rule = rule;
    }
    run_prob_minus_target<F>(kSoftmaxGrad, device, c.geom, prob, labels, soft, w, false, coef,
                             dx_data, context, on_cpu ? nullptr : &scalars);
  });
  return dx;
}

}  // namespace

LossOutputs softmax_with_loss(const TensorView& X, const TensorView& T,
                              const std::optional<TensorView>& weight,
                              const SoftmaxWithLossArgs& args, const ExecutionContext& context) {
  return run_softmax(X, T, weight, args, nullptr, context);
}

Tensor softmax_with_loss_gradient(const TensorView& X, const TensorView& T,
                                  const std::optional<TensorView>& weight, const TensorView& P,
                                  const TensorView& d_loss, const SoftmaxWithLossArgs& args,
                                  const ExecutionContext& context) {
  return run_softmax_gradient({X, T, weight, P, d_loss}, args, nullptr, context);
}

void softmax_with_loss_into(const TensorView& X, const TensorView& T,
                            const std::optional<TensorView>& weight, const LossOutputViews& outputs,
                            const SoftmaxWithLossArgs& args, const ExecutionContext& context) {
  run_softmax(X, T, weight, args, &outputs, context);
}

void softmax_with_loss_gradient_into(const TensorView& X, const TensorView& T,
                                     const std::optional<TensorView>& weight, const TensorView& P,
                                     const TensorView& d_loss, const MutableTensorView& dX,
                                     const SoftmaxWithLossArgs& args,
                                     const ExecutionContext& context) {
  run_softmax_gradient({X, T, weight, P, d_loss}, args, &dX, context);
}

}  // namespace spatialsoftmax::caffe2
