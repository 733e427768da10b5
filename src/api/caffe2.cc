// Caffe2's SpatialSoftmaxWithLoss and SoftmaxWithLoss (SPEC.md section 2),
// expressed through the shared cross-entropy driver plus Caffe2's own rules
// for scale and the total weight.
#include <cmath>
#include <cstring>
#include <string>

#include "api/cross_entropy.h"
#include "api/labels.h"
#include "api/outputs.h"
#include "api/validate.h"
#include "dispatch/backend.h"
#include "spatialsoftmax/caffe2.h"

namespace spatialsoftmax::caffe2 {
namespace {

using api::Dense;
using api::fail;

constexpr std::string_view kSpatial = "SpatialSoftmaxWithLoss";
constexpr std::string_view kSpatialGrad = "SpatialSoftmaxWithLossGradient";
constexpr std::string_view kSoftmax = "SoftmaxWithLoss";
constexpr std::string_view kSoftmaxGrad = "SoftmaxWithLossGradient";

void check_common_args(std::string_view op, float scale, const std::string& order) {
  if (!(scale >= 0) || !std::isfinite(scale)) {
    fail(op, "scale", "= " + api::format_value(scale) + ", expected finite and >= 0");
  }
  if (order != "NCHW") {
    fail(op, "order", "= '" + order + "': Only NCHW order is supported right now.");
  }
}

constexpr std::string_view kPixelWeightShape = "((N, H, W): one weight per pixel)";

// X (N, D, H, W) float; T (N, H, W) int32. The weights and the labels'
// values are checked by the caller, once.
api::ClassTensor check_spatial_inputs(std::string_view op, const TensorView& X, const TensorView& T) {
  if (X.rank() != 4) {
    fail(op, "X", "rank: expected 4 (N, D, H, W), got " + std::to_string(X.rank()) +
                      " with shape " + shape_string(X.shape()));
  }
  const api::ClassTensor info = api::analyze_class_tensor(op, "X", X, ClassAxis::kFirst, 2);
  if (T.dtype() != DType::kInt32) {
    fail(op, "T", "dtype: expected int32, got " + std::string(dtype_name(T.dtype())));
  }
  if (T.rank() != 3) {
    fail(op, "T", "rank: expected 3 (N, H, W), got " + std::to_string(T.rank()) +
                      " with shape " + shape_string(T.shape()));
  }
  api::check_shape(op, "T", T, info.map_shape, "((N, H, W) of X)");
  return info;
}

// Sum of pixel weights over labels != -1 (Caffe2's total weight).
template <class T>
void run_prob_minus_target(std::string_view op, Device device, const core::Geometry& geom, const Dense& prob,
                           core::Labels labels, const T* target_probs, const Dense& weight, bool ignore_minus_one,
                           double coef, Tensor& dx) {
  core::ProbMinusTargetProblem<T> pb;
  pb.geom = geom;
  pb.prob = prob.get<T>();
  pb.labels = labels;
  pb.target_probs = target_probs;
  pb.pixel_weight = weight.get<T>();
  pb.has_ignore_index = ignore_minus_one;
  pb.ignore_index = -1;
  pb.coef = static_cast<T>(coef);
  pb.grad_logits = dx.data_as<T>();
  dispatch::select(dispatch::Op::kProbMinusTarget, geom, dtype_of<T>(), device, op).prob_minus_target(pb, {});
}

}  // namespace

LossOutputs spatial_softmax_with_loss(const TensorView& X, const TensorView& T,
                                      const std::optional<TensorView>& weight,
                                      const SpatialSoftmaxWithLossArgs& args) {
  check_common_args(kSpatial, args.scale, args.order);
  check_spatial_inputs(kSpatial, X, T);
  CrossEntropyOptions options = CrossEntropyOptions::caffe2_spatial();
  options.pixel_weight = weight;
  options.reduction = Reduction::kSum;
  options.want_prob = true;
  api::CrossEntropyRun run = api::run_cross_entropy({kSpatial, "X", "T", "weight_tensor", kPixelWeightShape}, X, T,
                                                    options, {}, api::Pass::kForward);
  const double L = run.loss_sum, Wt = run.denominator;
  double loss;
  if (args.variant == Variant::kCpu) {
    loss = Wt != 0 ? L / Wt : 0.0;  // the CPU forward does not apply scale
  } else {
    loss = Wt > 0 ? args.scale * L / Wt : L;
  }
  return {std::move(run.result.prob), Tensor::scalar(X.dtype(), loss)};
}

Tensor spatial_softmax_with_loss_gradient(const TensorView& X, const TensorView& T,
                                          const std::optional<TensorView>& weight,
                                          const TensorView& P, const TensorView& d_loss,
                                          const SpatialSoftmaxWithLossArgs& args) {
  check_common_args(kSpatialGrad, args.scale, args.order);
  const api::ClassTensor info = check_spatial_inputs(kSpatialGrad, X, T);
  if (weight) api::check_weights(kSpatialGrad, "weight_tensor", *weight, info.map_shape, kPixelWeightShape, X.dtype());
  api::check_dtype(kSpatialGrad, "P", P, X.dtype());
  api::check_shape(kSpatialGrad, "P", P, X.shape(), "(X's shape)");
  const double g = api::first_element(kSpatialGrad, "d_loss", d_loss);
  const TensorView* weight_view = weight ? &*weight : nullptr;
  const Device device =
      api::common_device(kSpatialGrad, {{"X", &X}, {"T", &T}, {"weight_tensor", weight_view}, {"P", &P}, {"d_loss", &d_loss}});
  const Dense labels(T), w(weight), prob(P);
  const core::Labels y{labels.raw(), DType::kInt32};
  // Caffe2's total weight: the pixel weights of the labels that are not -1.
  const double Wt = api::scan_labels({kSpatialGrad, "T", T, y, info.geom.classes, -1}, nullptr, w.raw(), X.dtype(),
                                     device, {});
  const double coef = Wt > 0 ? args.scale / Wt * g : g;
  Tensor dx = Tensor::uninitialized(X.dtype(), X.shape());  // written in full
  api::visit_float(X.dtype(), [&](auto tag) {
    using F = decltype(tag);
    run_prob_minus_target<F>(kSpatialGrad, device, info.geom, prob, y, nullptr, w, true, coef, dx);
  });
  return dx;
}

namespace {

// Caffe2 coerces X to 2-D (N, D) at `axis`.
struct Coerced {
  core::Geometry geom;
  std::int64_t axis = 1;
};

Coerced coerce(std::string_view op, const TensorView& X, int axis) {
  if (!is_floating(X.dtype())) {
    fail(op, "X", "dtype: expected float32 or float64, got " + std::string(dtype_name(X.dtype())));
  }
  const int rank = X.rank();
  if (axis < -rank || axis >= rank) {
    fail(op, "axis", "= " + std::to_string(axis) + ", expected in [" + std::to_string(-rank) +
                         ", " + std::to_string(rank) + ") for X of shape " +
                         shape_string(X.shape()));
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
// within 1e-5).
void check_softmax_targets(std::string_view op, const TensorView& X, const TensorView& T,
                           const Coerced& c, int label_prob, const Dense& dense) {
  const std::int64_t N = c.geom.batch, D = c.geom.classes;
  const auto axis = static_cast<std::size_t>(c.axis);
  if (label_prob == 0) {
    if (T.dtype() != DType::kInt32) {
      fail(op, "T", "dtype: expected int32 labels, got " + std::string(dtype_name(T.dtype())));
    }
    const bool ok = T.rank() == static_cast<int>(axis)
                        ? checked_numel(T.shape(), "T") == N
                        : product(T.shape(), 0, axis) == N &&
                              product(T.shape(), axis, T.shape().size()) == 1;
    if (!ok) {
      fail(op, "T", "shape: expected " + std::to_string(N) + " labels (X's dims before axis " +
                        std::to_string(axis) + "), got " + shape_string(T.shape()));
    }
    return;
  }
  api::check_dtype(op, "T", T, X.dtype());
  if (T.rank() < 2 || product(T.shape(), 0, axis) != N ||
      product(T.shape(), axis, T.shape().size()) != D) {
    fail(op, "T", "shape: expected probabilities whose 2-D view is (" + std::to_string(N) + ", " +
                      std::to_string(D) + "), got " + shape_string(T.shape()));
  }
  api::visit_float(X.dtype(), [&](auto tag) {
    using F = decltype(tag);
    const F* t = dense.get<F>();
    for (std::int64_t i = 0; i < N; ++i) {
      double sum = 0;
      for (std::int64_t j = 0; j < D; ++j) {
        const double v = t[i * D + j];
        if (!(v >= 0)) {
          fail(op, "T[" + std::to_string(i) + ", " + std::to_string(j) + "]",
               "= " + api::format_value(v) +
                   ": Label prob seems incorrect: label prob value must be nonnegative");
        }
        sum += v;
      }
      if (std::abs(sum - 1.0) > 1e-5) {
        fail(op, "T row " + std::to_string(i),
             "sums to " + api::format_value(sum) +
                 ": Label prob seems incorrect: label prob values do not sum to 1.0 (+/- 1e-5)");
      }
    }
  });
}

constexpr std::string_view kRowWeightShape = "(one weight per row)";

// A dense 2-D (N, D) view of a dense tensor.
TensorView as_2d(const Dense& dense, DType dtype, const core::Geometry& g) {
  return TensorView(dense.raw(), dtype, {g.batch, g.classes});
}

}  // namespace

LossOutputs softmax_with_loss(const TensorView& X, const TensorView& T,
                              const std::optional<TensorView>& weight,
                              const SoftmaxWithLossArgs& args) {
  check_common_args(kSoftmax, args.scale, args.order);
  const Coerced c = coerce(kSoftmax, X, args.axis);
  const Dense x(X), target(T);
  check_softmax_targets(kSoftmax, X, T, c, args.label_prob, target);
  CrossEntropyOptions options;
  options.reduction = Reduction::kSum;
  options.want_prob = true;
  options.pixel_weight = weight;  // (N): the 2-D view's positions
  if (args.label_prob != 0) {
    // Caffe2 floors the probabilities in label_prob mode (CUDA at FLT_MIN).
    options.prob_floor = args.variant == Variant::kCpu ? 1e-20 : 1.1754943508222875e-38;
  }
  const TensorView targets = args.label_prob != 0
                                 ? as_2d(target, X.dtype(), c.geom)
                                 : TensorView(target.raw(), DType::kInt32, {c.geom.batch});
  api::CrossEntropyRun run =
      api::run_cross_entropy({kSoftmax, "X", "T", "weight_tensor", kRowWeightShape}, as_2d(x, X.dtype(), c.geom),
                             targets, options, {}, api::Pass::kForward);
  const double Wt = args.average_by_batch_size && args.variant == Variant::kCpu ? static_cast<double>(c.geom.batch)
                    : weight                                                     ? run.pixel_weight_sum
                                                                                 : static_cast<double>(c.geom.batch);
  const double loss = Wt != 0 ? args.scale * run.loss_sum / Wt : 0.0;
  // P has X's shape (Caffe2's shape inference claims (N, D); the run gives X's).
  Tensor prob(X.dtype(), X.shape());
  if (prob.nbytes()) std::memcpy(prob.data(), run.result.prob.data(), prob.nbytes());
  return {std::move(prob), Tensor::scalar(X.dtype(), loss)};
}

Tensor softmax_with_loss_gradient(const TensorView& X, const TensorView& T,
                                  const std::optional<TensorView>& weight, const TensorView& P,
                                  const TensorView& d_loss, const SoftmaxWithLossArgs& args) {
  check_common_args(kSoftmaxGrad, args.scale, args.order);
  const Coerced c = coerce(kSoftmaxGrad, X, args.axis);
  const Dense target(T);
  check_softmax_targets(kSoftmaxGrad, X, T, c, args.label_prob, target);
  const double weight_sum =
      weight ? api::check_weights(kSoftmaxGrad, "weight_tensor", *weight, {c.geom.batch}, kRowWeightShape, X.dtype())
             : static_cast<double>(c.geom.batch);
  api::check_dtype(kSoftmaxGrad, "P", P, X.dtype());
  if (checked_numel(P.shape(), "P") != c.geom.batch * c.geom.classes) {
    fail(kSoftmaxGrad, "P", "shape: expected " + shape_string(X.shape()) + " (X's shape), got " +
                                shape_string(P.shape()));
  }
  const double g = api::first_element(kSoftmaxGrad, "d_loss", d_loss);
  const bool cpu = args.variant == Variant::kCpu;
  const double Wt = args.average_by_batch_size && cpu ? static_cast<double>(c.geom.batch) : weight_sum;
  // CPU: no d_loss factor when the total weight is 0; CUDA always applies it.
  const double coef = Wt > 0 ? args.scale / Wt * g : (cpu ? 1.0 : g);
  const TensorView* weight_view = weight ? &*weight : nullptr;
  const Device device =
      api::common_device(kSoftmaxGrad, {{"X", &X}, {"T", &T}, {"weight_tensor", weight_view}, {"P", &P}, {"d_loss", &d_loss}});
  if (args.label_prob == 0) {
    (void)api::scan_labels({kSoftmaxGrad, "T", T, {target.raw(), DType::kInt32}, c.geom.classes, std::nullopt},
                           nullptr, nullptr, X.dtype(), device, {});
  }
  const Dense prob(P), w(weight);
  Tensor dx = Tensor::uninitialized(X.dtype(), X.shape());  // written in full
  api::visit_float(X.dtype(), [&](auto tag) {
    using F = decltype(tag);
    const F* soft = args.label_prob != 0 ? target.get<F>() : nullptr;
    run_prob_minus_target<F>(kSoftmaxGrad, device, c.geom, prob, {target.raw(), DType::kInt32}, soft, w, false,
                             coef, dx);
  });
  return dx;
}

}  // namespace spatialsoftmax::caffe2
