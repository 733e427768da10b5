// What the tile and row kernels of the loss family share: a problem's
// derived constants (LossSetup), the per-position terms of a tile, the
// upstream gradients' share of dX, and each thread's scratch buffers.

#if defined(SPATIALSOFTMAX_CPU_LOSS_SETUP_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_LOSS_SETUP_INL_H_
#undef SPATIALSOFTMAX_CPU_LOSS_SETUP_INL_H_
#else
#define SPATIALSOFTMAX_CPU_LOSS_SETUP_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/convert-inl.h"
#include "cpu/labels-inl.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::CrossEntropyProblem;
using core::SoftmaxProblem;

// Which upstream gradients besides the loss's a backward pass adds to dX.
struct Upstreams {
  bool prob = false, log_prob = false, entropy = false;
  bool any() const { return prob || log_prob || entropy; }
};

// The upstream gradients' share of dX for the lanes of one class, added to
// the loss's gradient g: p (G_P - <p, G_P>) + G_logP - p sum_c G_logP,c
// - g_H p (log p + H), the last term 0 where p = 0. Tiles and rows share it,
// so that both add the terms in one order.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V AddUpstream(D d, const Upstreams& use, V g, V p, V log_p, V grad_p, V dot_p, V grad_l,
                         V sum_l, V grad_h, V h) {
  if (use.prob) g = hn::Add(g, hn::Mul(p, hn::Sub(grad_p, dot_p)));
  if (use.log_prob) g = hn::Add(g, hn::Sub(grad_l, hn::Mul(p, sum_l)));
  if (use.entropy) {
    const V term = hn::Mul(hn::Mul(grad_h, p), hn::Add(log_p, h));
    g = hn::Sub(g, hn::IfThenZeroElse(hn::Eq(p, hn::Zero(d)), term));
  }
  return g;
}

// Per-position inputs of the loss, resolved once per tile.
template <class T>
struct PositionTerms {
  std::vector<Index<T>> label;  // -1: ignored, padding, or no index targets
  std::vector<T> weight;        // a_i: pixel weight, 0 for padding
  std::vector<T> upstream;      // r_i * a_i: gradient scale
  std::vector<T> label_weight;  // w_{y_i}
  std::vector<T> loss;          // out: l_i
  std::vector<T> grad_entropy;  // upstream gradient of H_i, if given

  void resize(std::size_t n) {
    label.resize(n);
    weight.resize(n);
    upstream.resize(n);
    label_weight.resize(n);
    loss.resize(n);
    grad_entropy.resize(n);
  }
};

// What the tile and row kernels need of a problem, with derived constants.
// T: the compute type; S: the problem's element type (T, or a 16-bit
// type that the plain tile kernel reads and writes itself).
template <class T, class S = T>
struct LossSetup {
  const CrossEntropyProblem<S>* pb = nullptr;  // null: softmax outputs only
  bool soft = false, index = false;
  T eps = 0, eps_per_class = 0, class_weight_sum = 0;
  bool want_loss = false, want_grad = false;
  S* prob = nullptr;
  S* log_prob = nullptr;
  S* entropy = nullptr;

  T class_weight(std::int64_t c) const {
    return pb && pb->class_weight ? AsCompute<T>(pb->class_weight[c]) : T(1);
  }
};

template <class S, class T = core::compute_t<S>>
LossSetup<T, S> make_setup(const CrossEntropyProblem<S>& pb) {
  LossSetup<T, S> s;
  s.pb = &pb;
  s.soft = pb.target_probs != nullptr;
  s.index = !s.soft;
  s.eps = pb.label_smoothing;
  s.eps_per_class = s.eps / static_cast<T>(pb.geom.classes);
  // Only smoothing reads the sum; without class weights it is C (what the
  // sum of C ones gave below 2^24 classes). Summing them one after another
  // cost more than a row of the rows kernel (32000 classes), and 16-bit
  // problems set up the kernel once per staged block.
  if (pb.class_weight && s.eps != 0) {
    for (std::int64_t c = 0; c < pb.geom.classes; ++c) s.class_weight_sum += s.class_weight(c);
  } else {
    s.class_weight_sum = static_cast<T>(pb.geom.classes);
  }
  s.want_loss = pb.loss_map || pb.loss_sum;
  s.want_grad = pb.grad_logits != nullptr;
  s.prob = pb.prob;
  s.log_prob = pb.log_prob;
  s.entropy = pb.entropy;
  return s;
}

template <class T>
LossSetup<T> make_setup(const SoftmaxProblem<T>& pb) {
  LossSetup<T> s;
  s.prob = pb.prob;
  s.log_prob = pb.log_prob;
  s.entropy = pb.entropy;
  return s;
}

// Fills the per-position terms of positions [i0, i0 + count), padded with
// inert lanes up to `padded`. Simple loops, one per term: this runs once per
// position and matters when C is small.
template <class T, class L>
void resolve_labels(const L* labels, std::int64_t count, const CrossEntropyProblem<T>& pb,
                    Index<T>* out) {
  const bool has_ignore = pb.has_ignore_index;
  const auto ignore = pb.ignore_index;
  for (std::int64_t j = 0; j < count; ++j) {
    const auto y = static_cast<std::int64_t>(labels[j]);
    out[j] = has_ignore && y == ignore ? Index<T>(-1) : static_cast<Index<T>>(y);
  }
}

template <class T>
void resolve_positions(const LossSetup<T>& s, std::int64_t i0, std::int64_t count,
                       std::int64_t padded, PositionTerms<T>& t) {
  t.resize(static_cast<std::size_t>(padded));
  const CrossEntropyProblem<T>* pb = s.pb;
  Index<T>* y = t.label.data();
  T* a = t.weight.data();
  T* r = t.upstream.data();
  T* wy = t.label_weight.data();
  std::fill(y + count, y + padded, Index<T>(-1));
  std::fill(a + count, a + padded, T(0));
  std::fill(r + count, r + padded, T(0));
  std::fill(wy + count, wy + padded, T(0));
  if (!pb) {
    std::fill(y, y + count, Index<T>(-1));
    std::fill(a, a + count, T(1));
    return;
  }
  if (pb->pixel_weight) {
    std::copy(pb->pixel_weight + i0, pb->pixel_weight + i0 + count, a);
  } else {
    std::fill(a, a + count, T(1));
  }
  if (s.want_grad) {
    if (pb->grad_loss_map) {
      for (std::int64_t j = 0; j < count; ++j) r[j] = pb->grad_loss_map[i0 + j] * a[j];
    } else {
      for (std::int64_t j = 0; j < count; ++j) r[j] = pb->grad_loss_scale * a[j];
    }
    if (pb->grad_entropy) {
      std::copy(pb->grad_entropy + i0, pb->grad_entropy + i0 + count, t.grad_entropy.data());
      std::fill(t.grad_entropy.begin() + count, t.grad_entropy.begin() + padded, T(0));
    }
  }
  if (!s.index) {
    std::fill(y, y + count, Index<T>(-1));
    return;
  }
  if (pb->labels.dtype == DType::kInt32) {
    resolve_labels(static_cast<const std::int32_t*>(pb->labels.data) + i0, count, *pb, y);
  } else {
    resolve_labels(static_cast<const std::int64_t*>(pb->labels.data) + i0, count, *pb, y);
  }
  for (std::int64_t j = 0; j < count; ++j) {
    wy[j] = y[j] < 0 ? T(0) : pb->class_weight ? pb->class_weight[y[j]] : T(1);
  }
}

// Scratch buffers of one thread.
template <class T>
struct LossScratch {
  std::vector<T> x, soft, grad_prob, grad_log_prob, dx, prob, log_prob, entropy, max, e;
  PositionTerms<T> terms;
};

template <class T>
LossScratch<T>& loss_scratch() {
  thread_local LossScratch<T> s;
  return s;
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_LOSS_SETUP_INL_H_ toggle
