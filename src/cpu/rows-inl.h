// The row kernel of the loss family: one position's row of C classes with
// classes in lanes, for many classes in a contiguous class axis
// (kRowClasses).

#if defined(SPATIALSOFTMAX_CPU_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_ROWS_INL_H_
#undef SPATIALSOFTMAX_CPU_ROWS_INL_H_
#else
#define SPATIALSOFTMAX_CPU_ROWS_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/blocks.h"
#include "cpu/loss_setup-inl.h"
#include "cpu/math-inl.h"
#include "cpu/memory-inl.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::CrossEntropyProblem;

// Sums over a position's classes add vectors within blocks and the blocks'
// totals in float64. One float32 chain per lane over 10^6 classes drifts
// past docs/semantics.md 5's tolerance (issue 10, item 13): once a lane holds the
// max's e = 1, every term below half its ulp is lost. run_row's blocks hold
// kRowSumChain terms per chain (two chains of N lanes), for one SumOfLanes
// per block; rows of up to one block sum exactly as one chain did.
inline constexpr std::int64_t kRowSumChain = 64;
template <class T>
std::int64_t row_sum_block() {
  return kRowSumChain * 2 * static_cast<std::int64_t>(hn::Lanes(hn::ScalableTag<T>()));
}

struct RowSumTotals {
  double sum = 0, weighted_shift = 0, target_mass = 0, target_shift = 0, e_shift = 0;
  double e_grad_p = 0, sum_grad_l = 0;
};

// One position's row of C classes, classes in lanes. grad_prob and
// grad_log_prob are the row's upstream gradients of P and log P, or null.
// The last C % N classes go as one more vector, loaded from a copy padded
// with -inf logits (e = 0) and zeros elsewhere; the sums where padding
// would add 0 * -inf are masked to the row. With kStream, dX and P go out
// by streaming stores (every vector of them aligned, C % N = 0) and e is
// kept in scratch meanwhile. `next` is the next row's X, or null: the plain
// pass 2 prefetches it into L2 as it goes, so that the next row's pass 1
// does not wait on memory while no exp runs.
template <bool kStream, class T>
void run_row(const LossSetup<T>& s, std::int64_t C, std::int64_t i, const T* x, const T* next,
             const T* soft, const T* grad_prob, const T* grad_log_prob, T* dx, T* prob, T* log_prob,
             std::vector<T>& e_scratch, double* loss_out) {
  const hn::ScalableTag<T> d;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t full = C / N * N, end = round_up(C, N);
  const CrossEntropyProblem<T>* pb = s.pb;
  const bool zero_log = pb && pb->zero_target_log_is_zero;
  const bool smoothing = s.index && s.eps > 0;
  const T* class_weight = pb ? pb->class_weight : nullptr;
  const auto in_row = hn::FirstN(d, static_cast<std::size_t>(C - full));
  const T minus_inf = -std::numeric_limits<T>::infinity();
  const auto load = [&](const T* p, std::int64_t c, T pad) {
    if (c < full) return hn::LoadU(d, p + c);
    HWY_ALIGN T padded[HWY_MAX_BYTES / sizeof(T)];
    std::fill(padded, padded + N, pad);
    std::copy(p + c, p + C, padded);
    return hn::Load(d, padded);
  };
  const auto store = [&](V v, T* p, std::int64_t c) {
    if (c < full) return hn::StoreU(v, d, p + c);
    hn::BlendedStore(v, in_row, d, p + c);
  };
  const auto store_out = [&](V v, T* p, std::int64_t c) {  // dX and P
    if constexpr (kStream) {
      hn::Stream(v, d, p + c);
    } else {
      store(v, p, c);
    }
  };
  const auto in_row_only = [&](std::int64_t c, V v) {
    return c < full ? v : hn::IfThenElseZero(in_row, v);
  };
  const auto weight = [&](std::int64_t c) {
    return class_weight ? load(class_weight, c, 0) : hn::Set(d, T(1));
  };

  // Pass 1.
  V mv = load(x, 0, minus_inf);
  for (std::int64_t c = N; c < full; c += N) mv = hn::Max(mv, hn::LoadU(d, x + c));
  if (full > 0 && end > full) mv = hn::Max(mv, load(x, full, minus_inf));
  const T m = hn::GetLane(hn::MaxOfLanes(d, mv));
  // A NaN that the max skipped still reaches every output through the sum.

  // The label's logit, read before pass 2 may overwrite X (in-place call).
  std::int64_t label = -1;
  T x_label = 0;
  if (pb && s.index) {
    label = pb->labels[i];
    if (pb->has_ignore_index && label == pb->ignore_index) label = -1;
    if (label >= 0) x_label = x[label];
  }

  // Pass 2. e is kept where run_tile keeps it, and for the same reasons.
  const bool up_p = grad_prob != nullptr, up_l = grad_log_prob != nullptr;
  const bool up_h = pb && pb->grad_entropy && dx;
  const bool need_h = s.entropy || up_h;
  const bool e_apart = (up_h && dx == x) || (kStream && (dx || prob));
  if (e_apart) e_scratch.resize(static_cast<std::size_t>(C));
  T* e_store = e_apart ? e_scratch.data() : dx ? dx : prob;
  mv = hn::Set(d, m);
  // The class sums, as lanes within a block of row_sum_block classes and in
  // float64 across blocks (RowSumTotals).
  V sum = hn::Zero(d), weighted_shift = hn::Zero(d), target_mass = hn::Zero(d);
  V target_shift = hn::Zero(d), e_shift = hn::Zero(d), e_grad_p = hn::Zero(d),
    sum_grad_l = hn::Zero(d);
  RowSumTotals totals;
  const auto end_block = [&](V& lanes, double& total) {
    total += static_cast<double>(hn::GetLane(hn::SumOfLanes(d, lanes)));
    lanes = hn::Zero(d);
  };
  const auto soft_target = [&](V t) {
    return hn::MulAdd(t, hn::Set(d, 1 - s.eps), hn::Set(d, s.eps_per_class));
  };
  const bool plain = !smoothing && !s.soft && !need_h && !up_p && !up_l;
  const std::int64_t block_classes = row_sum_block<T>();
  for (std::int64_t block = 0; block < end; block += block_classes) {
    const std::int64_t block_end = std::min(end, block + block_classes);
    if (plain) {             // the common cases, without per-class branches
      V sum2 = hn::Zero(d);  // two chains hide the add latency
      std::int64_t c = block;
      for (; c + 2 * N <= std::min(full, block_end); c += 2 * N) {
        if (next) {  // the 2N elements at c, one line or two
          prefetch_line(next + c);
          if (2 * N * static_cast<std::int64_t>(sizeof(T)) > 64) prefetch_line(next + c + N);
        }
        const V e0 = ExpNonPositive(d, hn::Sub(hn::LoadU(d, x + c), mv));
        const V e1 = ExpNonPositive(d, hn::Sub(hn::LoadU(d, x + c + N), mv));
        sum = hn::Add(sum, e0);
        sum2 = hn::Add(sum2, e1);
        if (e_store) {
          hn::StoreU(e0, d, e_store + c);
          hn::StoreU(e1, d, e_store + c + N);
        }
      }
      for (; c < block_end; c += N) {
        const V e = ExpNonPositive(d, hn::Sub(load(x, c, minus_inf), mv));
        sum = hn::Add(sum, e);
        if (e_store) store(e, e_store, c);
      }
      sum = hn::Add(sum, sum2);
      end_block(sum, totals.sum);
      continue;
    }
    for (std::int64_t c = block; c < block_end; c += N) {
      const V shifted = hn::Sub(load(x, c, minus_inf), mv);
      const V e = ExpNonPositive(d, shifted);
      sum = hn::Add(sum, e);
      if (e_store) store(e, e_store, c);
      const V wc = weight(c);
      if (smoothing) weighted_shift = hn::Add(weighted_shift, in_row_only(c, hn::Mul(wc, shifted)));
      if (s.soft) {
        const V target = soft_target(load(soft, c, 0));
        const V wt = in_row_only(c, hn::Mul(wc, target));
        target_mass = hn::Add(target_mass, wt);
        V term = hn::Mul(wt, shifted);
        if (zero_log) term = hn::IfThenZeroElse(hn::Eq(target, hn::Zero(d)), term);
        target_shift = hn::Add(target_shift, in_row_only(c, term));
      }
      if (need_h) {  // e = 0 in the padding
        e_shift = hn::Add(e_shift, hn::IfThenZeroElse(hn::Eq(e, hn::Zero(d)), hn::Mul(e, shifted)));
      }
      if (up_p) e_grad_p = hn::Add(e_grad_p, hn::Mul(e, load(grad_prob, c, 0)));
      if (up_l) sum_grad_l = hn::Add(sum_grad_l, load(grad_log_prob, c, 0));
    }
    end_block(sum, totals.sum);
    if (smoothing) end_block(weighted_shift, totals.weighted_shift);
    if (s.soft) {
      end_block(target_mass, totals.target_mass);
      end_block(target_shift, totals.target_shift);
    }
    if (need_h) end_block(e_shift, totals.e_shift);
    if (up_p) end_block(e_grad_p, totals.e_grad_p);
    if (up_l) end_block(sum_grad_l, totals.sum_grad_l);
  }
  const T log_sum = static_cast<T>(std::log(totals.sum));
  const T inv_sum = static_cast<T>(1 / totals.sum);
  const T h = static_cast<T>(std::log(totals.sum) - totals.e_shift / totals.sum);
  if (s.entropy) s.entropy[i] = h;
  // The upstream gradients' share of dX (AddUpstream), for any lane count.
  const Upstreams upstreams{up_p, up_l, up_h};
  const bool upstream = upstreams.any();
  const T dot_p = static_cast<T>(totals.e_grad_p / totals.sum);
  const T sum_l = static_cast<T>(totals.sum_grad_l);
  const T g_h = up_h ? pb->grad_entropy[i] : T(0);
  const auto add_upstream = [&](auto dd, auto g, auto p, auto shifted, auto grad_p, auto grad_l) {
    return AddUpstream(dd, upstreams, g, p, hn::Sub(shifted, hn::Set(dd, log_sum)), grad_p,
                       hn::Set(dd, dot_p), grad_l, hn::Set(dd, sum_l), hn::Set(dd, g_h),
                       hn::Set(dd, h));
  };

  // Loss and gradient coefficients.
  T k1 = 0, k2 = 0, k3 = 0;
  std::int64_t y = -1;
  if (pb) {
    const T a = pb->pixel_weight ? pb->pixel_weight[i] : T(1);
    const T r = (pb->grad_loss_map ? pb->grad_loss_map[i] : pb->grad_loss_scale) * a;
    T loss = 0;
    if (s.index) {
      if (label >= 0) {
        y = label;
        const T wy = s.class_weight(y);
        const T dy = x_label - m;
        T neg_log_py = log_sum - dy;
        if (pb->prob_floor > 0)
          neg_log_py = -std::log(std::max(std::exp(dy) * inv_sum, pb->prob_floor));
        loss = (1 - s.eps) * wy * neg_log_py;
        if (smoothing)
          loss += s.eps_per_class *
                  (s.class_weight_sum * log_sum - static_cast<T>(totals.weighted_shift));
        loss *= a;
        k2 = r * (1 - s.eps) * wy;
        k3 = r * s.eps_per_class;
      }
    } else {
      const T mass = static_cast<T>(totals.target_mass);
      loss = a * (log_sum * mass - static_cast<T>(totals.target_shift));
      if (pb->prob_floor > 0) {  // Caffe2's label_prob mode: -log(max(p_c, floor))
        V acc = hn::Zero(d);
        double acc_total = 0;
        const V floor_v = hn::Set(d, pb->prob_floor), inv = hn::Set(d, inv_sum);
        for (std::int64_t c = 0; c < end; c += N) {
          const V e =
              e_store ? load(e_store, c, 0) : ExpNonPositive(d, hn::Sub(load(x, c, minus_inf), mv));
          const V p = hn::Mul(e, inv);
          const V target = soft_target(load(soft, c, 0));
          const V kept = hn::IfThenElse(hn::Lt(p, floor_v), floor_v, p);  // NaN stays
          V term = hn::Mul(hn::Mul(weight(c), target), hn::Neg(LogKeepNaN(d, kept)));
          if (zero_log) term = hn::IfThenZeroElse(hn::Eq(target, hn::Zero(d)), term);
          acc = hn::Add(acc, in_row_only(c, term));
          if (c + N == end || (c + N) % block_classes == 0) end_block(acc, acc_total);
        }
        loss = a * static_cast<T>(acc_total);
      }
      k1 = mass;
      k2 = r;
    }
    if (pb->loss_map) pb->loss_map[i] = loss;
    *loss_out = static_cast<double>(loss);
  }

  // Pass 3, with the gradient grouped as in run_tile.
  if (!dx && !prob && !log_prob) return;
  const bool ignored = pb && s.index && y < 0;
  const T p_label = y >= 0 && e_store ? e_store[y] * inv_sum : T(0);
  const V w_sum = hn::Set(d, s.class_weight_sum);
  const V k1v = hn::Set(d, k1), k2v = hn::Set(d, k2), k3v = hn::Set(d, k3);
  const V inv = hn::Set(d, inv_sum), ls = hn::Set(d, log_sum);
  const auto upstream_at = [&](std::int64_t c, V g, V p, V shifted) {
    return add_upstream(d, g, p, shifted, up_p ? load(grad_prob, c, 0) : g,
                        up_l ? load(grad_log_prob, c, 0) : g);
  };
  // The label's class: its own grouping, one lane through the same
  // operations; stored after the loop, or put into its vector before a
  // streaming store (a plain store into a streamed line would flush its
  // write-combining buffer half full and read the line back).
  const bool has_label = dx && !ignored && s.index;
  T g_label = 0;
  if (has_label) {
    const T wy = s.class_weight(y);
    g_label = k2 * (p_label - 1) + (smoothing ? k3 * (p_label * s.class_weight_sum - wy) : T(0));
    if (upstream) {
      const hn::CappedTag<T, 1> d1;
      const auto one = [&](const T* p) { return hn::Set(d1, p ? p[y] : T(0)); };
      g_label = hn::GetLane(add_upstream(d1, hn::Set(d1, g_label), hn::Set(d1, p_label),
                                         hn::Set(d1, x_label - m), one(grad_prob),
                                         one(grad_log_prob)));  // x[y] may be dX by now
    }
  }
  const hn::RebindToSigned<decltype(d)> di;
  for (std::int64_t c = 0; c < end; c += N) {
    V shifted = hn::Zero(d);
    if (log_prob || !e_store || up_h) shifted = hn::Sub(load(x, c, minus_inf), mv);
    const V e = e_store ? load(e_store, c, 0) : ExpNonPositive(d, shifted);
    const V p = hn::Mul(e, inv);
    if (log_prob) store(hn::Sub(shifted, ls), log_prob, c);
    if (prob) store_out(p, prob, c);
    if (!dx) continue;
    V g = hn::Zero(d);
    if (!ignored && s.soft) {
      const V target = soft_target(load(soft, c, 0));
      g = hn::Mul(
          k2v, hn::Sub(hn::Mul(p, k1v), hn::Mul(weight(c), target)));  // not fused, as in run_tile
    } else if (!ignored) {
      g = hn::Mul(k2v, p);
      if (smoothing) g = hn::MulAdd(k3v, hn::MulSub(p, w_sum, weight(c)), g);
    }
    if (upstream) g = upstream_at(c, g, p, shifted);
    if (kStream && has_label && y >= c && y < c + N) {
      const auto at_label =
          hn::Eq(hn::Iota(di, 0), hn::Set(di, static_cast<hn::TFromD<decltype(di)>>(y - c)));
      g = hn::IfThenElse(hn::RebindMask(d, at_label), hn::Set(d, g_label), g);
    }
    store_out(g, dx, c);
  }
  if (has_label && !kStream) dx[y] = g_label;
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_ROWS_INL_H_ toggle
