// What a kernel is asked to compute: plain structs of dense pointers, sizes and
// resolved options. The API layer validates and fills them; every backend
// (the scalar reference today, SIMD and CUDA later) consumes the same structs,
// so kernels never validate and never allocate.
//
// A null output pointer means "not wanted"; a null optional input means
// "absent" (weights of 1, no upstream gradient).
#pragma once

#include <cstdint>
#include <limits>
#include <optional>

#include "spatialsoftmax/tensor.h"

// The layout arithmetic below is shared by the CPU and the CUDA kernels
// (nvcc compiles it for the device too), so it is written and tested once.
#ifdef __CUDACC__
#define SPATIALSOFTMAX_HOST_DEVICE __host__ __device__
#else
#define SPATIALSOFTMAX_HOST_DEVICE
#endif

namespace spatialsoftmax::core {

// A problem's T is the type of its tensors' elements; its scalar options
// have the type it is computed in: T itself, float for the 16-bit types.
template <class T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<BFloat16> {
  using type = float;
};
template <>
struct ComputeType<Float16> {
  using type = float;
};
template <class T>
using compute_t = typename ComputeType<T>::type;

// Dense layout of an X-shaped tensor: N batches, C classes, P pixels per batch
// (P = d1*...*dk), class axis at 1 or last. Position i = n * P + p.
struct Geometry {
  std::int64_t batch = 0;
  std::int64_t classes = 0;
  std::int64_t pixels = 0;
  bool class_last = false;

  SPATIALSOFTMAX_HOST_DEVICE std::int64_t positions() const { return batch * pixels; }
  SPATIALSOFTMAX_HOST_DEVICE std::int64_t elements() const { return batch * classes * pixels; }
  SPATIALSOFTMAX_HOST_DEVICE std::int64_t class_stride() const { return class_last ? 1 : pixels; }
  // Offset of class 0 of position i.
  SPATIALSOFTMAX_HOST_DEVICE std::int64_t base(std::int64_t i) const {
    return class_last ? i * classes : (i / pixels) * classes * pixels + i % pixels;
  }
  // Offset of element (n, c, p).
  SPATIALSOFTMAX_HOST_DEVICE std::int64_t offset(std::int64_t n, std::int64_t c,
                                                 std::int64_t p) const {
    return class_last ? (n * pixels + p) * classes + c : (n * classes + c) * pixels + p;
  }
};

// --- Scalars of the reductions -------------------------------------------------
// A loss's scalar from its sum and the mean's denominator, and the factor a
// backward applies to every position from the upstream scalar, as each
// operation family defines them (docs/semantics.md 2-3). The API evaluates
// them on the host for CPU problems; a device backend evaluates the same
// functions on the device (DeviceScalars below).
enum class LossRule : std::uint8_t {
  kSum,          // sum
  kMean,         // d != 0 ? sum / d : empty
  kCaffe2Cuda,   // d > 0 ? scale * sum / d : sum (Caffe2's CUDA forward)
  kCaffe2Scaled  // d != 0 ? scale * sum / d : 0
};
struct LossScalar {
  LossRule rule = LossRule::kSum;
  double scale = 1;
  double empty = 0;  // kMean with d = 0: NaN or 0 (zero_weight_mean)
};
SPATIALSOFTMAX_HOST_DEVICE inline double finish_loss(const LossScalar& r, double sum, double d) {
  switch (r.rule) {
    case LossRule::kSum:
      return sum;
    case LossRule::kMean:
      return d != 0 ? sum / d : r.empty;
    case LossRule::kCaffe2Cuda:
      return d > 0 ? r.scale * sum / d : sum;
    case LossRule::kCaffe2Scaled:
      return d != 0 ? r.scale * sum / d : 0.0;
  }
  return sum;
}

enum class GradRule : std::uint8_t {
  kAsIs,   // g
  kMean,   // d > 0 ? g / d : 0
  kCaffe2  // d > 0 ? scale / d * g : fallback (g, or 1: Caffe2's CPU SoftmaxWithLoss)
};
struct GradScalar {
  GradRule rule = GradRule::kAsIs;
  double scale = 1;
  bool fallback_one = false;
};
SPATIALSOFTMAX_HOST_DEVICE inline double finish_grad(const GradScalar& r, double g, double d) {
  switch (r.rule) {
    case GradRule::kAsIs:
      return g;
    case GradRule::kMean:
      return d > 0 ? g / d : 0.0;
    case GradRule::kCaffe2:
      return d > 0 ? r.scale / d * g : (r.fallback_one ? 1.0 : g);
  }
  return g;
}

// Class-index targets: int32 or int64, one per position.
struct Labels {
  const void* data = nullptr;
  DType dtype = DType::kInt64;

  SPATIALSOFTMAX_HOST_DEVICE std::int64_t operator[](std::int64_t i) const {
    return dtype == DType::kInt32 ? static_cast<const std::int32_t*>(data)[i]
                                  : static_cast<const std::int64_t*>(data)[i];
  }
};

// An ignore_index that the labels' type cannot hold (int32 labels and
// ignore_index 2^40) matches no label. The API applies this rule once, when
// it fills a problem: has_ignore_index there implies that ignore_index fits
// the label type, so every backend may compare labels with it in their own
// type.
inline bool ignore_index_can_match(DType label_dtype, std::optional<std::int64_t> ignore_index) {
  if (!ignore_index) return false;
  return label_dtype != DType::kInt32 ||
         (*ignore_index >= std::numeric_limits<std::int32_t>::min() &&
          *ignore_index <= std::numeric_limits<std::int32_t>::max());
}

// The check of index labels: each must be the ignore_index or in [0, C),
// and the first flat index where one is neither is reported (-1: none), so
// that the API can name it without looking again.
//
// LabelScanProblem is the check on its own, before a kernel runs, and it
// sums in the same pass the total weight of the labels that are not
// ignored, sum_i a_i * w_{y_i} (a: pixel weights, w: class weights, absent
// ones 1): the mean's denominator. The order of that sum is fixed by the
// problem alone, never by the thread count.
template <class T>
struct LabelScanProblem {
  Labels labels;
  std::int64_t count = 0;  // labels[0, count)
  std::int64_t classes = 0;
  bool has_ignore_index = false;
  std::int64_t ignore_index = 0;
  const T* class_weight = nullptr;    // (C)
  const T* pixel_weight = nullptr;    // (count)
  double* total = nullptr;            // set to 0 by the caller
  std::int64_t* first_bad = nullptr;  // set to -1 by the caller
};

// The same check inside a loss kernel, which checks each block of labels as
// it reads them (one read of the labels less). Out: how many labels count
// toward the mean, and the first bad one; a kernel that finds one may leave
// its outputs unwritten, as the API then raises the error.
struct LabelCheck {
  std::int64_t counted = 0;
  std::int64_t first_bad = -1;
};

// --- Device problems ----------------------------------------------------------
// The host cannot read device memory without waiting for the device, and no
// operation waits. So what the API does on the host for a CPU problem (check
// the labels' and the weights' values, take the mean's denominator, read a
// scalar upstream gradient, write the final scalar) a device backend does on
// the device, as a DeviceScalars attached to the problem describes; a
// device problem's host-side fields for these (label_check, loss_sum,
// out_sum, grad_loss_scale, grad_scale, coef) are unused.

// What an error found on the device names: the operation and the argument
// as the caller named them (ids of names the API interned), the argument's
// shape for the multi-index, and what a label was checked against.
struct ErrorSite {
  std::uint32_t op = 0;
  std::uint32_t arg = 0;
  int rank = 0;
  std::int64_t dims[kMaxSpatialRank + 1] = {};
  std::int64_t classes = 0;
  bool has_ignore_index = false;  // false: "unset" in the message
  std::int64_t ignore_index = 0;
};

// The first error a device kernel found since the last check: a label
// neither ignored nor in [0, classes), or a weight not finite and >= 0.
struct DeviceError {
  enum class Kind : std::uint32_t { kNone, kLabel, kWeight };
  Kind kind = Kind::kNone;
  ErrorSite site;
  std::int64_t flat_index = -1;
  std::int64_t label = 0;  // kLabel: its value
  double weight = 0;       // kWeight: its value
};

enum class DenominatorFrom : std::uint8_t {
  kConstant,      // `denominator`
  kLabelWeights,  // sum_i a_i w_{y_i} over the labels not ignored (LabelScanProblem's total)
  kPixelWeights   // sum_i a_i
};

template <class T>
struct DeviceScalars {
  // Checked on the device before anything is computed from them: the
  // problem's class weights, pixel weights and index labels, each where
  // its site is set (site.op != 0). Outputs after a failed check are
  // unspecified (no read or write is out of bounds); the error waits in the
  // device's error record.
  ErrorSite class_weight_site, pixel_weight_site, label_site;
  DenominatorFrom denominator_from = DenominatorFrom::kConstant;
  double denominator = 1;
  // The scalar loss (device memory, one T), from the loss sum; null: none.
  T* loss = nullptr;
  LossScalar loss_rule;
  // The backward's factor: finish_grad(grad_rule, g, d) with g the first
  // element of `grad` (device memory), or grad_constant where it is null.
  const T* grad = nullptr;
  double grad_constant = 1;
  GradScalar grad_rule;
};

// Softmax over the class axis; any subset of the three outputs.
template <class T>
struct SoftmaxProblem {
  Geometry geom;
  const T* logits = nullptr;
  T* prob = nullptr;
  T* log_prob = nullptr;
  T* entropy = nullptr;  // one per position
};

// Backward of softmax (from p) or log_softmax (from logp), given dY.
template <class T>
struct SoftmaxBackwardProblem {
  Geometry geom;
  bool from_log_softmax = false;
  const T* output = nullptr;
  const T* grad_output = nullptr;
  T* grad_logits = nullptr;
};

// Cross-entropy, forward and/or backward in one pass (docs/semantics.md 3.2-3.4, 3.6).
// Labels are already validated; the mean's denominator is resolved by the
// caller into grad_loss_scale.
template <class T>
struct CrossEntropyProblem {
  using Scalar = compute_t<T>;
  Geometry geom;
  const T* logits = nullptr;
  bool logits_are_log_probs = false;  // NLL: logits hold log-probabilities
  Labels labels;                      // index targets, or
  const T* target_probs = nullptr;    // probability targets (X's layout)
  const T* class_weight = nullptr;    // (C)
  const T* pixel_weight = nullptr;    // (N*P)
  bool has_ignore_index = false;
  std::int64_t ignore_index = 0;
  Scalar label_smoothing = 0;
  Scalar prob_floor = 0;  // > 0: -log(max(p, floor)) from p (Caffe2)
  bool zero_target_log_is_zero = false;
  LabelCheck* label_check = nullptr;  // null: the labels are known good

  // Forward outputs.
  T* loss_map = nullptr;       // l_i per position
  double* loss_sum = nullptr;  // sum_i l_i
  T* prob = nullptr;
  T* log_prob = nullptr;
  T* entropy = nullptr;

  // Backward: grad_logits = d(sum_i r_i l_i + <gP, P> + <gL, logP> + <gH, H>)/dX
  // with r_i = grad_loss_map[i] if given, else grad_loss_scale.
  T* grad_logits = nullptr;
  const T* grad_loss_map = nullptr;
  Scalar grad_loss_scale = 0;
  const T* grad_prob = nullptr;
  const T* grad_log_prob = nullptr;
  const T* grad_entropy = nullptr;

  const DeviceScalars<T>* device = nullptr;  // device problems only
};

// Caffe2's gradient from a supplied P: dX = (P - target) * w_i * coef where
// the target is one-hot(label) or a probability row, ignored positions get 0.
template <class T>
struct ProbMinusTargetProblem {
  using Scalar = compute_t<T>;
  Geometry geom;
  const T* prob = nullptr;
  Labels labels;
  const T* target_probs = nullptr;
  const T* pixel_weight = nullptr;
  bool has_ignore_index = false;
  std::int64_t ignore_index = 0;
  Scalar coef = 1;
  T* grad_logits = nullptr;

  const DeviceScalars<T>* device = nullptr;  // device problems: coef from the grad rule
};

// KL(target || softmax(logits)) elementwise (docs/semantics.md 3.5).
template <class T>
struct KlDivProblem {
  using Scalar = compute_t<T>;
  Geometry geom;
  const T* logits = nullptr;
  const T* target = nullptr;
  bool log_target = false;
  T* out_map = nullptr;       // elementwise, X's layout
  double* out_sum = nullptr;  // sum of all elements
  T* grad_logits = nullptr;
  const T* grad_map = nullptr;  // elementwise upstream, or
  Scalar grad_scale = 0;        // one upstream for every element

  const DeviceScalars<T>* device = nullptr;  // device problems only
};

// The coordinate of index j along a spatial axis of `length` pixels
// (docs/semantics.md 4): j itself, or normalized into [-1, 1], where a single
// pixel sits at the centre (0) or at -1.
SPATIALSOFTMAX_HOST_DEVICE inline double spatial_coordinate(std::int64_t j, std::int64_t length,
                                                            bool pixel, bool singleton_center) {
  if (pixel) return static_cast<double>(j);
  if (length == 1) return singleton_center ? 0.0 : -1.0;
  return -1.0 + 2.0 * static_cast<double>(j) / static_cast<double>(length - 1);
}

// Softmax over the pixels of every (n, channel) and its expected coordinates
// (docs/semantics.md 4). In Geometry, `classes` are the channels.
template <class T>
struct SpatialSoftArgmaxProblem {
  Geometry geom;
  int spatial_rank = 0;
  std::int64_t dims[kMaxSpatialRank] = {};
  // coordinate[a][j]: coordinate of index j along spatial axis a (a = 0 is
  // d1), in host memory: spatial_coordinate's values, which a device
  // backend computes itself from the rule below.
  const double* coordinate[kMaxSpatialRank] = {};
  bool pixel_coordinates = false;
  bool singleton_center = true;
  double beta = 1;  // S = softmax(beta * (x - max))
  const T* input = nullptr;

  T* keypoints = nullptr;   // (N, C, k), component 0 = fastest axis
  T* softmax = nullptr;     // X's layout
  T* covariance = nullptr;  // (N, C, k, k)

  T* grad_input = nullptr;
  const T* grad_keypoints = nullptr;
  const T* grad_softmax = nullptr;
  const T* grad_covariance = nullptr;
  double* grad_beta = nullptr;  // d loss / d beta (host memory; a device backend leaves it)
};

}  // namespace spatialsoftmax::core
