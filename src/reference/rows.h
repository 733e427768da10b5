// One position's class row as the CUDA kernels compute it: the formulas of
// the reference (reference.cc) without its per-row buffers (every value is
// recomputed from X, the max and the sum), over one lane's share of the
// classes. nvcc compiles this for the device and the C++ compiler for the
// host, where tests/test_rows.cc runs it against the reference, so the GPU's
// arithmetic is tested on machines without one.
//
// A Group is who shares a row: Solo, one thread taking every class, whose
// reductions are the identity (the class-first kernels), or a CUDA warp,
// lane l taking classes l, l + 32, ... and reducing by butterflies
// (src/cuda/group.cuh). It provides `first` and `step` (the lane's share)
// and all-reductions `max` and `sum` that give every lane the same value,
// and `sync`, after which every lane's earlier reads are done.
// Every lane of a group calls the reductions the same number of times: the
// branches around them depend on the position only, never on the lane.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "reference/problems.h"

namespace spatialsoftmax::core::rows {

template <class T>
SPATIALSOFTMAX_HOST_DEVICE inline T exp_of(T v) {
#ifdef __CUDA_ARCH__
  return exp(v);  // CUDA's overloads for float and double
#else
  return std::exp(v);
#endif
}
template <class T>
SPATIALSOFTMAX_HOST_DEVICE inline T log_of(T v) {
#ifdef __CUDA_ARCH__
  return log(v);
#else
  return std::log(v);
#endif
}

// max that keeps a NaN from either side, in any order of combination (the
// reference's max is NaN when any entry is).
template <class T>
SPATIALSOFTMAX_HOST_DEVICE inline T max_keep_nan(T a, T b) {
  return (b > a || b != b) ? b : a;
}

struct Solo {
  std::int64_t first = 0;
  std::int64_t step = 1;
  template <class T>
  SPATIALSOFTMAX_HOST_DEVICE T max(T v) const {
    return v;
  }
  template <class T>
  SPATIALSOFTMAX_HOST_DEVICE T sum(T v) const {
    return v;
  }
  SPATIALSOFTMAX_HOST_DEVICE void sync() const {}
};

// The softmax of a row: its max, the sum of exp(x - max), and that sum's log.
template <class T>
struct RowSoftmax {
  T max = 0;
  T sum = 0;
  T log_sum = 0;
  // p_c and log p_c from x_c, as the reference computes them.
  SPATIALSOFTMAX_HOST_DEVICE T prob(T x) const { return exp_of(x - max) / sum; }
  SPATIALSOFTMAX_HOST_DEVICE T log_prob(T x) const { return (x - max) - log_sum; }
};

template <class T, class Group>
SPATIALSOFTMAX_HOST_DEVICE RowSoftmax<T> row_softmax(const T* x, std::int64_t stride,
                                                     std::int64_t classes, const Group& group) {
  T m = -std::numeric_limits<T>::infinity();
  for (std::int64_t c = group.first; c < classes; c += group.step)
    m = max_keep_nan(m, x[c * stride]);
  m = group.max(m);
  T s = 0;
  for (std::int64_t c = group.first; c < classes; c += group.step) s += exp_of(x[c * stride] - m);
  s = group.sum(s);
  return {m, s, log_of(s)};
}

// Cross-entropy of position i (CrossEntropyProblem, docs/semantics.md 3):
// writes the lane's share of every requested output and returns l_i.
// grad_scale replaces problem.grad_loss_scale (a device backend computes it
// on the device). A label that is neither ignored nor a class counts as
// ignored here: the labels' check reports it, and nothing is read out of
// bounds meanwhile. staged_row, if given, holds the position's logits
// already copied (a block's shared memory), with X's class stride: the
// several passes over the row then read the copy, not X.
template <class T, class Group>
SPATIALSOFTMAX_HOST_DEVICE T cross_entropy_row(const CrossEntropyProblem<T>& pb, std::int64_t i,
                                               T grad_scale, const Group& group,
                                               const T* staged_row = nullptr) {
  const Geometry& geom = pb.geom;
  const std::int64_t C = geom.classes, cs = geom.class_stride(), b = geom.base(i);
  const T* x = staged_row ? staged_row : pb.logits + b;
  const T* target = pb.target_probs ? pb.target_probs + b : nullptr;
  const bool need_softmax = !pb.logits_are_log_probs;
  const T eps = pb.label_smoothing;
  const T eps_per_class = eps / static_cast<T>(C);
  const RowSoftmax<T> sm = need_softmax ? row_softmax(x, cs, C, group) : RowSoftmax<T>{};
  const auto weight = [&](std::int64_t c) { return pb.class_weight ? pb.class_weight[c] : T(1); };
  const auto log_prob = [&](std::int64_t c) {
    return need_softmax ? sm.log_prob(x[c * cs]) : x[c * cs];
  };
  const auto neg_log = [&](std::int64_t c) {
    if (pb.prob_floor > 0) {
      const T p = sm.prob(x[c * cs]);
      return -log_of(p < pb.prob_floor ? pb.prob_floor : p);
    }
    return -log_prob(c);
  };
  const auto smoothed = [&](std::int64_t c) { return (1 - eps) * target[c * cs] + eps_per_class; };

  const T a = pb.pixel_weight ? pb.pixel_weight[i] : T(1);
  T loss = 0;
  std::int64_t y = -1;
  bool ignored = false;
  if (target) {
    T part = 0;
    for (std::int64_t c = group.first; c < C; c += group.step) {
      const T t = smoothed(c);
      if (pb.zero_target_log_is_zero && t == 0) continue;
      part += weight(c) * t * neg_log(c);
    }
    loss = group.sum(part) * a;
  } else {
    y = pb.labels[i];
    ignored = (pb.has_ignore_index && y == pb.ignore_index) || y < 0 || y >= C;
    if (!ignored) {
      loss = (1 - eps) * weight(y) * neg_log(y);
      // Skipped when eps = 0, so that a -inf logp elsewhere cannot make 0 * inf.
      if (eps > 0) {
        T smooth = 0;
        for (std::int64_t c = group.first; c < C; c += group.step)
          smooth += weight(c) * -log_prob(c);
        loss += eps_per_class * group.sum(smooth);
      }
      loss *= a;
    }
  }
  const bool lead = group.first == 0;
  if (pb.loss_map && lead) pb.loss_map[i] = loss;

  T h = 0;  // the entropy, where an output or a gradient needs it
  if (need_softmax && (pb.prob || pb.log_prob || pb.entropy || pb.grad_entropy)) {
    T part = 0;
    for (std::int64_t c = group.first; c < C; c += group.step) {
      const T p = sm.prob(x[c * cs]), lp = sm.log_prob(x[c * cs]);
      if (pb.prob) pb.prob[b + c * cs] = p;
      if (pb.log_prob) pb.log_prob[b + c * cs] = lp;
      if (p != 0 || p != p) part -= p * lp;  // 0 log 0 = 0
    }
    h = group.sum(part);
  }
  if (pb.entropy && lead) pb.entropy[i] = need_softmax ? h : T(0);
  if (!pb.grad_logits) return loss;

  const T r = (pb.grad_loss_map ? pb.grad_loss_map[i] : grad_scale) * a;
  T dot_prob = 0, sum_log_prob_grad = 0, target_mass = 0, class_weight_sum = 0;
  const bool smoothing_grad = !target && !ignored && eps > 0;
  for (std::int64_t c = group.first; c < C; c += group.step) {
    if (pb.grad_prob && need_softmax) dot_prob += sm.prob(x[c * cs]) * pb.grad_prob[b + c * cs];
    if (pb.grad_log_prob) sum_log_prob_grad += pb.grad_log_prob[b + c * cs];
    if (target) target_mass += weight(c) * smoothed(c);
    if (smoothing_grad) class_weight_sum += weight(c);
  }
  if (pb.grad_prob && need_softmax) dot_prob = group.sum(dot_prob);
  if (pb.grad_log_prob) sum_log_prob_grad = group.sum(sum_log_prob_grad);
  if (target) target_mass = group.sum(target_mass);
  if (smoothing_grad) class_weight_sum = group.sum(class_weight_sum);
  const T gh = pb.grad_entropy ? pb.grad_entropy[i] : T(0);
  // dX may be written over X: every lane has read x[y] (neg_log(y)) before
  // the lane owning class y overwrites it.
  group.sync();
  for (std::int64_t c = group.first; c < C; c += group.step) {
    const std::int64_t o = b + c * cs;
    T d = 0;
    if (!need_softmax) {
      if (!ignored && c == y) d = -r * weight(y);
    } else {
      const T p = sm.prob(x[c * cs]);
      const T w_c = weight(c);
      if (target) {
        d = r * (p * target_mass - w_c * smoothed(c));
      } else if (!ignored) {
        d = (1 - eps) * weight(y) * (p - (c == y ? T(1) : T(0)));
        if (eps > 0) d += eps_per_class * (p * class_weight_sum - w_c);
        d *= r;
      }
      if (pb.grad_prob) d += p * (pb.grad_prob[o] - dot_prob);
      if (pb.grad_log_prob) d += pb.grad_log_prob[o] - p * sum_log_prob_grad;
      if (pb.grad_entropy && p != 0) d -= gh * p * (sm.log_prob(x[c * cs]) + h);
    }
    // In place (dX over X): this lane read x[c] above and reads it never again.
    pb.grad_logits[o] = d;
  }
  return loss;
}

// KL(target || softmax) of position i (KlDivProblem, docs/semantics.md 3.5):
// writes the lane's share of the elementwise map and dX, returns the row's
// sum of elements, in double, as the reference accumulates it.
template <class T, class Group>
SPATIALSOFTMAX_HOST_DEVICE double kl_div_row(const KlDivProblem<T>& pb, std::int64_t i,
                                             T grad_scale, const Group& group) {
  const Geometry& geom = pb.geom;
  const std::int64_t C = geom.classes, cs = geom.class_stride(), b = geom.base(i);
  const T* x = pb.logits + b;
  const T* target = pb.target + b;
  const RowSoftmax<T> sm = row_softmax(x, cs, C, group);
  const auto mass = [&](T t) { return pb.log_target ? exp_of(t) : t; };
  const auto upstream = [&](std::int64_t c) {
    return pb.grad_map ? pb.grad_map[b + c * cs] : grad_scale;
  };
  double sum = 0;
  T weighted_mass = 0;  // sum_j r_j * tau_j
  for (std::int64_t c = group.first; c < C; c += group.step) {
    const T t = target[c * cs];
    const T lp = sm.log_prob(x[c * cs]);
    T v;
    if (pb.log_target) {
      v = exp_of(t) * (t - lp);
    } else if (t > 0) {
      v = t * (log_of(t) - lp);
    } else {
      v = t == 0 ? T(0) : std::numeric_limits<T>::quiet_NaN();
    }
    if (pb.out_map) pb.out_map[b + c * cs] = v;
    sum += static_cast<double>(v);
    if (pb.grad_logits) weighted_mass += upstream(c) * mass(t);
  }
  sum = group.sum(sum);
  if (!pb.grad_logits) return sum;
  weighted_mass = group.sum(weighted_mass);
  for (std::int64_t c = group.first; c < C; c += group.step) {
    const T t = target[c * cs];
    pb.grad_logits[b + c * cs] = sm.prob(x[c * cs]) * weighted_mass - upstream(c) * mass(t);
  }
  return sum;
}

// Caffe2's gradient of position i: dX = (P - target) * a_i * coef, 0 where
// the label is ignored (or not a class: the labels' check reports it).
template <class T, class Group>
SPATIALSOFTMAX_HOST_DEVICE void prob_minus_target_row(const ProbMinusTargetProblem<T>& pb,
                                                      std::int64_t i, T coef, const Group& group) {
  const Geometry& geom = pb.geom;
  const std::int64_t C = geom.classes, cs = geom.class_stride(), b = geom.base(i);
  const T w = (pb.pixel_weight ? pb.pixel_weight[i] : T(1)) * coef;
  std::int64_t y = -1;
  bool ignored = false;
  if (!pb.target_probs) {
    y = pb.labels[i];
    ignored = (pb.has_ignore_index && y == pb.ignore_index) || y < 0 || y >= C;
  }
  for (std::int64_t c = group.first; c < C; c += group.step) {
    const std::int64_t o = b + c * cs;
    const T t = pb.target_probs ? pb.target_probs[o] : (c == y ? T(1) : T(0));
    pb.grad_logits[o] = ignored ? T(0) : (pb.prob[o] - t) * w;
  }
}

}  // namespace spatialsoftmax::core::rows
