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

// Class-index targets: int32 or int64, one per position.
struct Labels {
  const void* data = nullptr;
  DType dtype = DType::kInt64;

  std::int64_t operator[](std::int64_t i) const {
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
  Geometry geom;
  const T* logits = nullptr;
  bool logits_are_log_probs = false;  // NLL: logits hold log-probabilities
  Labels labels;                      // index targets, or
  const T* target_probs = nullptr;    // probability targets (X's layout)
  const T* class_weight = nullptr;    // (C)
  const T* pixel_weight = nullptr;    // (N*P)
  bool has_ignore_index = false;
  std::int64_t ignore_index = 0;
  T label_smoothing = 0;
  T prob_floor = 0;  // > 0: -log(max(p, floor)) from p (Caffe2)
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
  T grad_loss_scale = 0;
  const T* grad_prob = nullptr;
  const T* grad_log_prob = nullptr;
  const T* grad_entropy = nullptr;
};

// Caffe2's gradient from a supplied P: dX = (P - target) * w_i * coef where
// the target is one-hot(label) or a probability row, ignored positions get 0.
template <class T>
struct ProbMinusTargetProblem {
  Geometry geom;
  const T* prob = nullptr;
  Labels labels;
  const T* target_probs = nullptr;
  const T* pixel_weight = nullptr;
  bool has_ignore_index = false;
  std::int64_t ignore_index = 0;
  T coef = 1;
  T* grad_logits = nullptr;
};

// KL(target || softmax(logits)) elementwise (docs/semantics.md 3.5).
template <class T>
struct KlDivProblem {
  Geometry geom;
  const T* logits = nullptr;
  const T* target = nullptr;
  bool log_target = false;
  T* out_map = nullptr;       // elementwise, X's layout
  double* out_sum = nullptr;  // sum of all elements
  T* grad_logits = nullptr;
  const T* grad_map = nullptr;  // elementwise upstream, or
  T grad_scale = 0;             // one upstream for every element
};

// Softmax over the pixels of every (n, channel) and its expected coordinates
// (docs/semantics.md 4). In Geometry, `classes` are the channels.
template <class T>
struct SpatialSoftArgmaxProblem {
  Geometry geom;
  int spatial_rank = 0;
  std::int64_t dims[kMaxSpatialRank] = {};
  // coordinate[a][j]: coordinate of index j along spatial axis a (a = 0 is d1).
  const double* coordinate[kMaxSpatialRank] = {};
  double beta = 1;  // S = softmax(beta * (x - max))
  const T* input = nullptr;

  T* keypoints = nullptr;   // (N, C, k), component 0 = fastest axis
  T* softmax = nullptr;     // X's layout
  T* covariance = nullptr;  // (N, C, k, k)

  T* grad_input = nullptr;
  const T* grad_keypoints = nullptr;
  const T* grad_softmax = nullptr;
  const T* grad_covariance = nullptr;
  double* grad_beta = nullptr;  // d loss / d beta
};

}  // namespace spatialsoftmax::core
