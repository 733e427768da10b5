





// The SIMD kernels of the loss family, written once with Highway and compiled
// for every target of HWY_TARGETS; the best one the CPU supports is chosen at
// run time (foreach_target + HWY_DYNAMIC_DISPATCH). No -march flag is used.
//
// Layouts. With the class axis first, a tile is C rows of W consecutive
// pixels of one image: pixels sit in lanes and the class loop walks rows.
// With the class axis last and few classes, W positions are transposed into
// a class-major scratch tile and the same tile kernel runs on it. With many
// classes (class axis last, or P = 1), each position's row of C classes is
// processed with classes in lanes.
//
// Each position takes three passes over its classes: the max, then
// e = exp(x - max) summed (and kept in the gradient buffer), then the
// outputs. The passes after the first read a tile that is in cache, so
// memory sees one read of X and one write of dX.
//
// Determinism: tiles and row groups depend on C and the SIMD target only, a
// block of work is a tile (or a row group), and loss partial sums are
// float64 per block, combined in block order.

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/cross_entropy.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>
#include <hwy/cache_control.h>
// clang-format on

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "core/problems.h"
#include "cpu/kernels.h"
#include "cpu/transpose-inl.h"
#include "parallel/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::CrossEntropyProblem;
using core::Geometry;
using core::LabelCheck;
using core::ProbMinusTargetProblem;
using core::SoftmaxProblem;

// exp(x) for x <= 0 (x - max): Cody-Waite reduction and a degree-6
// polynomial, about 1 ulp in float32. n = round(x / ln 2) comes from one
// MulAdd with 1.5 * 2^23 + 127, whose low mantissa bits then hold n + 127,
// the exponent field of 2^n. Clamping x at -88 makes n >= -127, so results
// below FLT_MIN come out as exactly 0 (SPEC.md 5 allows the flush) with no
// select. The result for a NaN x is unspecified: callers decide what a NaN
// makes of a position. float64 uses Highway's Exp.
template <class D, class V>
HWY_INLINE V ExpNonPositiveNoNaN(D d, V x) {
  using T = hn::TFromD<D>;
  if constexpr (sizeof(T) == 8) {
    return hn::Exp(d, x);
  } else {
    const hn::RebindToSigned<D> di;
    const V xc = hn::Max(x, hn::Set(d, -88.0f));
    const V magic = hn::Set(d, 12583039.0f);  // 1.5 * 2^23 + 127
    const V t = hn::MulAdd(xc, hn::Set(d, 1.44269504088896341f), magic);
    const V n = hn::Sub(t, magic);
    V r = hn::NegMulAdd(n, hn::Set(d, 0.693359375f), xc);
    r = hn::NegMulAdd(n, hn::Set(d, -2.12194440e-4f), r);
    // 1 + r + r^2 q(r), q of degree 5 by Estrin's scheme (a shorter chain
    // of dependent operations than Horner's).
    const V r2 = hn::Mul(r, r);
    const V q01 = hn::MulAdd(hn::Set(d, 1.6666665459e-1f), r, hn::Set(d, 5.0000001201e-1f));
    const V q23 = hn::MulAdd(hn::Set(d, 8.3334519073e-3f), r, hn::Set(d, 4.1665795894e-2f));
    const V q45 = hn::MulAdd(hn::Set(d, 1.9875691500e-4f), r, hn::Set(d, 1.3981999507e-3f));
    const V q = hn::MulAdd(hn::MulAdd(q45, r2, q23), r2, q01);
    const V p = hn::MulAdd(q, r2, hn::Add(r, hn::Set(d, 1.0f)));
    return hn::Mul(p, hn::BitCast(d, hn::ShiftLeft<23>(hn::BitCast(di, t))));
  }
}

// The same with NaN passing through (Highway's Exp does not promise it).
template <class D, class V>
HWY_INLINE V ExpNonPositive(D d, V x) {
  return hn::IfThenElse(hn::Eq(x, x), ExpNonPositiveNoNaN(d, x), x);
}

// Prefetches p's cache line. hwy::Prefetch and __builtin_prefetch vanish
// from these target-attributed functions with GCC 12 (no prefetcht0 in the
// object file); an asm statement stays. Prefetching never faults.
HWY_INLINE void PrefetchLine(const void* p) {
#if HWY_ARCH_X86 && (HWY_COMPILER_GCC || HWY_COMPILER_CLANG)
  asm volatile("prefetcht0 %0" ::"m"(*static_cast<const char*>(p)));
#else
  hwy::Prefetch(static_cast<const char*>(p));
#endif
}

// Highway's Log does not promise NaN in, NaN out (nor inf), which SPEC.md 5
// requires of a position with a NaN or +inf logit.
template <class D, class V>
HWY_INLINE V LogKeepNaN(D d, V x) {
  const V log = hn::Log(d, x);
  return hn::IfThenElse(hn::Eq(x, x), log, x);
}

template <class T>
using Index = hwy::MakeSigned<T>;  // label lanes as wide as T's

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
template <class T>
struct LossSetup {
  const CrossEntropyProblem<T>* pb = nullptr;  // null: softmax outputs only
  bool soft = false, index = false;
  T eps = 0, eps_per_class = 0, class_weight_sum = 0;
  bool want_loss = false, want_grad = false;
  T* prob = nullptr;
  T* log_prob = nullptr;
  T* entropy = nullptr;

  T class_weight(std::int64_t c) const {
    return pb && pb->class_weight ? pb->class_weight[c] : T(1);
  }
};

template <class T>
LossSetup<T> make_setup(const CrossEntropyProblem<T>& pb) {
  LossSetup<T> s;
  s.pb = &pb;
  s.soft = pb.target_probs != nullptr;
  s.index = !s.soft;
  s.eps = pb.label_smoothing;
  s.eps_per_class = s.eps / static_cast<T>(pb.geom.classes);
  for (std::int64_t c = 0; c < pb.geom.classes; ++c) s.class_weight_sum += s.class_weight(c);
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

// A class-major tile: element (c, j) of X at x[c * stride + j]; outputs and
// soft targets share the stride. width is a multiple of the lane count.
template <class T>
struct TileView {
  const T* x = nullptr;
  const T* soft = nullptr;
  const T* grad_prob = nullptr;      // upstream gradients of P and log P
  const T* grad_log_prob = nullptr;
  T* dx = nullptr;
  T* prob = nullptr;
  T* log_prob = nullptr;
  std::int64_t stride = 0;
  std::int64_t width = 0;
};

// The three passes over one tile. Writes the per-position losses into
// t.loss and entropies into `entropy` (if given, length width).
// Sums over a position's classes add vectors within blocks and the blocks'
// totals in float64. One float32 chain per lane over 10^6 classes drifts
// past SPEC.md 5's tolerance (issue 10, item 13): once a lane holds the
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

template <class T>
inline constexpr std::size_t kMaxLanes = HWY_MAX_BYTES / sizeof(T);

// run_tile's lanes are positions, each with its own chain of a term per
// class and its own float64 total: past kTileOneBlock classes (more than
// ADE20K's 150, so the common class counts keep one chain), blocks of
// kTileSumBlock, for a store and N float64 adds per block.
inline constexpr std::int64_t kTileOneBlock = 512;
inline constexpr std::int64_t kTileSumBlock = 128;

template <class T>
struct LaneTotals {
  double sum[kMaxLanes<T>] = {}, weighted_shift[kMaxLanes<T>] = {}, target_mass[kMaxLanes<T>] = {};
  double target_shift[kMaxLanes<T>] = {}, e_shift[kMaxLanes<T>] = {}, e_grad_p[kMaxLanes<T>] = {};
  double sum_grad_l[kMaxLanes<T>] = {};
};

template <class T>
void run_tile(const LossSetup<T>& s, std::int64_t classes, const TileView<T>& v,
              PositionTerms<T>& t, T* entropy, std::vector<T>& max_scratch,
              std::vector<T>& e_scratch) {
  const hn::ScalableTag<T> d;
  const hn::RebindToSigned<decltype(d)> di;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t W = v.width, st = v.stride;
  const CrossEntropyProblem<T>* pb = s.pb;
  const bool floor = pb && pb->prob_floor > 0;
  const bool zero_log = pb && pb->zero_target_log_is_zero;
  const bool smoothing = s.index && s.eps > 0;

  // Pass 1, row by row (prefetch-friendly): the max per position.
  max_scratch.resize(static_cast<std::size_t>(W));
  T* m = max_scratch.data();
  for (std::int64_t j = 0; j < W; j += N) hn::StoreU(hn::LoadU(d, v.x + j), d, m + j);
  for (std::int64_t c = 1; c < classes; ++c) {
    const T* row = v.x + c * st;
    for (std::int64_t j = 0; j < W; j += N) {
      hn::StoreU(hn::Max(hn::LoadU(d, m + j), hn::LoadU(d, row + j)), d, m + j);
    }
  }

  // Where e = exp(x - m) is kept between passes 2 and 3: in dX, which pass 3
  // overwrites anyway, or else P. When dX is X (the in-place call) and H's
  // upstream gradient still reads x in pass 3, e goes to scratch instead.
  const bool e_apart = pb && pb->grad_entropy && v.dx && v.dx == v.x;
  if (e_apart) e_scratch.resize(static_cast<std::size_t>(classes * W));
  T* e_store = e_apart ? e_scratch.data() : v.dx ? v.dx : v.prob;
  const std::int64_t est = e_apart ? W : st;
  const bool pick_label = s.index && pb && s.want_loss && classes <= 32;
  const bool soft_floor = s.soft && floor;
  const V one = hn::Set(d, T(1));
  const bool blocked = classes > kTileOneBlock;
  const std::int64_t block_classes = blocked ? kTileSumBlock : classes;
  LaneTotals<T> totals;
  for (std::int64_t j = 0; j < W; j += N) {
    const V mv = hn::LoadU(d, m + j);
    V sum = hn::Zero(d), weighted_shift = hn::Zero(d), target_mass = hn::Zero(d);
    V target_shift = hn::Zero(d), e_shift = hn::Zero(d);
    const auto yv = hn::LoadU(di, t.label.data() + j);
    // Pass 2: e, its sum, and the sums the loss needs. The common case gets
    // loops without per-class branches.
    // x_y - m: with few classes picked up in pass 2 by a select per class,
    // else gathered lane by lane now, before pass 2 may overwrite X (the
    // in-place fused call writes e over X).
    V gathered = hn::Zero(d);
    if (s.index && pb && s.want_loss && !pick_label) {
      HWY_ALIGN T label_shift[HWY_MAX_BYTES / sizeof(T)];
      for (std::int64_t l = 0; l < N; ++l) {
        const Index<T> y = t.label[j + l];
        label_shift[l] = y >= 0 ? v.x[y * st + j + l] - m[j + l] : T(0);
      }
      gathered = hn::Load(d, label_shift);
    }
    // Upstream gradients of P, log P and H (added to dX in pass 3).
    const bool up_p = v.grad_prob != nullptr, up_l = v.grad_log_prob != nullptr;
    const bool up_h = pb && pb->grad_entropy && v.dx;
    const Upstreams upstreams{up_p, up_l, up_h};
    const bool need_h = s.entropy || up_h;
    V e_grad_p = hn::Zero(d), sum_grad_l = hn::Zero(d);
    const bool plain = !smoothing && !s.soft && !need_h && !up_p && !up_l;
    V picked = hn::Zero(d);
    const auto pick = [&](std::int64_t c, V shifted) {
      const auto is_label = hn::RebindMask(d, hn::Eq(yv, hn::Set(di, static_cast<Index<T>>(c))));
      picked = hn::IfThenElse(is_label, shifted, picked);
    };
    // More than kTileOneBlock classes: the lanes' sums are added in float64
    // block by block (kRowSumChain says why); each block's first add
    // assigns, so totals is zeroed once per tile.
    std::int64_t block = 0;
    const auto end_block = [&](V& lanes, double* total) {
      if (!blocked) return;
      HWY_ALIGN T lane[kMaxLanes<T>];
      hn::Store(lanes, d, lane);
      for (std::int64_t l = 0; l < N; ++l) total[l] = (block ? total[l] : 0.0) + static_cast<double>(lane[l]);
      lanes = hn::Zero(d);
    };
    const auto end_blocks = [&](V& lanes, const double* total) {
      if (!blocked) return;
      HWY_ALIGN T lane[kMaxLanes<T>];
      for (std::int64_t l = 0; l < N; ++l) lane[l] = static_cast<T>(total[l]);
      lanes = hn::Load(d, lane);
    };
    for (; block < classes; block += block_classes) {
      const std::int64_t block_end = std::min(classes, block + block_classes);
      if (plain) {
        for (std::int64_t c = block; c < block_end; ++c) {
          const V shifted = hn::Sub(hn::LoadU(d, v.x + c * st + j), mv);
          const V e = ExpNonPositive(d, shifted);
          sum = hn::Add(sum, e);
          if (e_store) hn::StoreU(e, d, e_store + c * est + j);
          if (pick_label) pick(c, shifted);
        }
      }
      for (std::int64_t c = block; c < block_end && !plain; ++c) {
        const V shifted = hn::Sub(hn::LoadU(d, v.x + c * st + j), mv);
        const V e = ExpNonPositive(d, shifted);
        sum = hn::Add(sum, e);
        if (pick_label) pick(c, shifted);
        if (e_store) hn::StoreU(e, d, e_store + c * est + j);
        if (smoothing) weighted_shift = hn::MulAdd(hn::Set(d, s.class_weight(c)), shifted, weighted_shift);
        if (s.soft) {
          V target = hn::LoadU(d, v.soft + c * st + j);
          target = hn::MulAdd(target, hn::Set(d, 1 - s.eps), hn::Set(d, s.eps_per_class));
          const V wt = hn::Mul(hn::Set(d, s.class_weight(c)), target);
          target_mass = hn::Add(target_mass, wt);
          V term = hn::Mul(wt, shifted);
          if (zero_log) term = hn::IfThenZeroElse(hn::Eq(target, hn::Zero(d)), term);
          target_shift = hn::Add(target_shift, term);
        }
        if (need_h) {
          e_shift = hn::Add(e_shift, hn::IfThenZeroElse(hn::Eq(e, hn::Zero(d)), hn::Mul(e, shifted)));
        }
        if (up_p) e_grad_p = hn::Add(e_grad_p, hn::Mul(e, hn::LoadU(d, v.grad_prob + c * st + j)));
        if (up_l) sum_grad_l = hn::Add(sum_grad_l, hn::LoadU(d, v.grad_log_prob + c * st + j));
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
    end_blocks(sum, totals.sum);
    if (smoothing) end_blocks(weighted_shift, totals.weighted_shift);
    if (s.soft) {
      end_blocks(target_mass, totals.target_mass);
      end_blocks(target_shift, totals.target_shift);
    }
    if (need_h) end_blocks(e_shift, totals.e_shift);
    if (up_p) end_blocks(e_grad_p, totals.e_grad_p);
    if (up_l) end_blocks(sum_grad_l, totals.sum_grad_l);
    const V log_sum = LogKeepNaN(d, sum);
    const V inv_sum = hn::Div(one, sum);
    const V h = hn::NegMulAdd(e_shift, inv_sum, log_sum);
    if (s.entropy) hn::StoreU(h, d, entropy + j);
    const V dot_p = hn::Mul(e_grad_p, inv_sum);

    // The loss and the gradient coefficients of these positions.
    const V a = hn::LoadU(d, t.weight.data() + j);
    const V r = hn::LoadU(d, t.upstream.data() + j);
    const auto valid = hn::RebindMask(d, hn::Gt(yv, hn::Set(di, Index<T>(-1))));
    // Gradient: index targets k2 * (p - onehot) + k3 * (p * sum_j w_j - w_c)
    // (the reference's grouping, so that p = 1 gives exactly 0); soft
    // targets k1 * p - k2 * w_c * T'_c.
    V k1 = hn::Zero(d), k2 = hn::Zero(d), k3 = hn::Zero(d);
    if (s.index && pb) {
      const V dy = pick_label ? picked : gathered;
      const V wy = hn::LoadU(d, t.label_weight.data() + j);
      if (s.want_loss) {
        V neg_log_py = hn::Sub(log_sum, dy);
        if (floor) {
          const V py = hn::Mul(ExpNonPositive(d, dy), inv_sum);
          neg_log_py = hn::Neg(LogKeepNaN(d, hn::IfThenElse(hn::Lt(py, hn::Set(d, pb->prob_floor)),
                                                            hn::Set(d, pb->prob_floor), py)));
        }
        V loss = hn::Mul(hn::Mul(hn::Set(d, 1 - s.eps), wy), neg_log_py);
        if (smoothing) {
          const V smooth = hn::Sub(hn::Mul(hn::Set(d, s.class_weight_sum), log_sum), weighted_shift);
          loss = hn::MulAdd(hn::Set(d, s.eps_per_class), smooth, loss);
        }
        hn::StoreU(hn::IfThenElseZero(valid, hn::Mul(a, loss)), d, t.loss.data() + j);
      }
      k2 = hn::Mul(r, hn::Mul(hn::Set(d, 1 - s.eps), wy));
      k3 = hn::Mul(r, hn::Set(d, s.eps_per_class));
    } else if (s.soft) {
      if (s.want_loss && !soft_floor) {
        const V loss = hn::Mul(a, hn::MulSub(log_sum, target_mass, target_shift));
        hn::StoreU(loss, d, t.loss.data() + j);
      }
      k1 = target_mass;
      k2 = r;
    }
    // Pass 3: the outputs, and the floored loss of probability targets
    // (Caffe2's label_prob mode), which needs every p_c.
    const bool pass3 = v.dx || v.prob || v.log_prob || soft_floor;
    if (!pass3) continue;
    V floored = hn::Zero(d);
    for (std::int64_t c = 0; c < classes; ++c) {
      const std::int64_t o = c * st + j;
      V shifted = hn::Zero(d);
      if (v.log_prob || !e_store) shifted = hn::Sub(hn::LoadU(d, v.x + o), mv);
      const V e = e_store ? hn::LoadU(d, e_store + c * est + j) : ExpNonPositive(d, shifted);
      const V p = hn::Mul(e, inv_sum);
      if (v.log_prob) hn::StoreU(hn::Sub(shifted, log_sum), d, v.log_prob + o);
      if (v.prob) hn::StoreU(p, d, v.prob + o);
      if (soft_floor) {
        V target = hn::LoadU(d, v.soft + o);
        target = hn::MulAdd(target, hn::Set(d, 1 - s.eps), hn::Set(d, s.eps_per_class));
        const V floor_v = hn::Set(d, pb->prob_floor);
        const V kept = hn::IfThenElse(hn::Lt(p, floor_v), floor_v, p);  // NaN stays
        V term = hn::Mul(hn::Mul(hn::Set(d, s.class_weight(c)), target), hn::Neg(LogKeepNaN(d, kept)));
        if (zero_log) term = hn::IfThenZeroElse(hn::Eq(target, hn::Zero(d)), term);
        floored = hn::Add(floored, term);
      }
      if (!v.dx) continue;
      const V wc = hn::Set(d, s.class_weight(c));
      V g;
      if (s.soft) {
        V target = hn::LoadU(d, v.soft + o);
        target = hn::MulAdd(target, hn::Set(d, 1 - s.eps), hn::Set(d, s.eps_per_class));
        // Not fused: p * k1 and w_c * T'_c round alike, so p = 1 (C = 1) gives exactly 0.
        g = hn::Mul(k2, hn::Sub(hn::Mul(p, k1), hn::Mul(wc, target)));
      } else {
        // As plain_tile does, so that asking for more outputs keeps dX's bits.
        const auto is_label = hn::RebindMask(d, hn::Eq(yv, hn::Set(di, static_cast<Index<T>>(c))));
        g = hn::MulSub(e, hn::Mul(k2, inv_sum), hn::IfThenElseZero(is_label, k2));
        if (smoothing) g = hn::MulAdd(k3, hn::MulSub(p, hn::Set(d, s.class_weight_sum), wc), g);
        g = hn::IfThenElseZero(valid, g);
      }
      if (upstreams.any()) {
        const V none = hn::Zero(d);
        // log p reads X, which the in-place call overwrites only below.
        const V log_p = up_h ? hn::Sub(hn::Sub(hn::LoadU(d, v.x + o), mv), log_sum) : none;
        g = AddUpstream(d, upstreams, g, p, log_p, up_p ? hn::LoadU(d, v.grad_prob + o) : none, dot_p,
                        up_l ? hn::LoadU(d, v.grad_log_prob + o) : none, sum_grad_l,
                        up_h ? hn::LoadU(d, t.grad_entropy.data() + j) : none, h);
      }
      hn::StoreU(g, d, v.dx + o);
    }
    if (soft_floor && s.want_loss) hn::StoreU(hn::Mul(a, floored), d, t.loss.data() + j);
  }
}

// Scratch buffers of one thread.
template <class T>
struct Scratch {
  std::vector<T> x, soft, grad_prob, grad_log_prob, dx, prob, log_prob, entropy, max, e;
  PositionTerms<T> terms;
};

template <class T>
Scratch<T>& scratch() {
  thread_local Scratch<T> s;
  return s;
}

std::int64_t round_up(std::int64_t n, std::int64_t to) { return (n + to - 1) / to * to; }

// The work blocks of every kernel: runs of at most `len` consecutive
// positions that never cross an image (with P = 1 the layouts coincide and
// runs go across the batch), so both layouts cut the positions alike. Calls
// fn(block, i0, count) in parallel; the blocks depend on the geometry and
// `len` only, never on the thread count.
template <class F>
void for_each_span(const Geometry& g, std::int64_t len, F&& fn) {
  const std::int64_t span = g.pixels == 1 ? g.positions() : g.pixels;
  if (span == 0 || g.positions() == 0) return;
  const std::int64_t per_span = (span + len - 1) / len;
  parallel::for_each_block(g.positions() / span * per_span, [&](std::int64_t b) {
    const std::int64_t first = (b % per_span) * len;
    fn(b, b / per_span * span + first, std::min(len, span - first));
  });
}

std::int64_t span_blocks(const Geometry& g, std::int64_t len) {
  const std::int64_t span = g.pixels == 1 ? g.positions() : g.pixels;
  if (span == 0 || g.positions() == 0) return 0;
  return g.positions() / span * ((span + len - 1) / len);
}

// Tile width: about 64 KiB of X per tile (it stays in L2 between passes;
// 16 and 32 KiB measured slower), a multiple of the lanes, at most 2048
// positions. Depends on C and the target only.
template <class T>
std::int64_t tile_width(std::int64_t classes) {
  const hn::ScalableTag<T> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t fit = (std::int64_t{64} * 1024 / static_cast<std::int64_t>(sizeof(T))) /
                           std::max<std::int64_t>(classes, 1);
  return std::clamp<std::int64_t>(fit / N * N, N, 2048);
}

// Runs the tile kernel on positions [i0, i0 + count) whose class c element
// is at base + c * cstride + j * pstride (j the position within the tile).
// Direct when pixels are unit-stride and count fills whole vectors; through
// class-major scratch otherwise.
template <class T>
void tile_positions(const LossSetup<T>& s, const Geometry& g, const T* logits, std::int64_t i0,
                    std::int64_t count, std::int64_t base, std::int64_t cstride,
                    std::int64_t pstride, double* loss_partial) {
  const hn::ScalableTag<T> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t C = g.classes;
  Scratch<T>& sc = scratch<T>();
  const CrossEntropyProblem<T>* pb = s.pb;
  const bool direct = pstride == 1 && count % N == 0;
  const std::int64_t W = direct ? count : round_up(count, N);
  resolve_positions(s, i0, count, W, sc.terms);

  TileView<T> v;
  v.width = W;
  T* entropy = nullptr;
  if (s.entropy) {
    sc.entropy.resize(static_cast<std::size_t>(W));
    entropy = sc.entropy.data();
  }
  if (direct) {
    v.stride = cstride;
    v.x = logits + base;
    v.soft = s.soft ? pb->target_probs + base : nullptr;
    v.grad_prob = s.want_grad && pb->grad_prob ? pb->grad_prob + base : nullptr;
    v.grad_log_prob = s.want_grad && pb->grad_log_prob ? pb->grad_log_prob + base : nullptr;
    v.dx = s.want_grad ? pb->grad_logits + base : nullptr;
    v.prob = s.prob ? s.prob + base : nullptr;
    v.log_prob = s.log_prob ? s.log_prob + base : nullptr;
  } else {
    v.stride = W;
    const auto gather = [&](std::vector<T>& buf, const T* src) {
      buf.assign(static_cast<std::size_t>(C * W), T(0));
      for (std::int64_t c = 0; c < C; ++c) {
        for (std::int64_t j = 0; j < count; ++j) buf[c * W + j] = src[base + c * cstride + j * pstride];
      }
      return buf.data();
    };
    const auto space = [&](std::vector<T>& buf, bool want) -> T* {
      if (!want) return nullptr;
      buf.resize(static_cast<std::size_t>(C * W));
      return buf.data();
    };
    v.x = gather(sc.x, logits);
    v.soft = s.soft ? gather(sc.soft, pb->target_probs) : nullptr;
    v.grad_prob = s.want_grad && pb->grad_prob ? gather(sc.grad_prob, pb->grad_prob) : nullptr;
    v.grad_log_prob =
        s.want_grad && pb->grad_log_prob ? gather(sc.grad_log_prob, pb->grad_log_prob) : nullptr;
    v.dx = space(sc.dx, s.want_grad);
    v.prob = space(sc.prob, s.prob != nullptr);
    v.log_prob = space(sc.log_prob, s.log_prob != nullptr);
  }
  run_tile(s, C, v, sc.terms, entropy, sc.max, sc.e);

  if (!direct) {
    const auto scatter = [&](const T* buf, T* dst) {
      if (!buf) return;
      for (std::int64_t c = 0; c < C; ++c) {
        for (std::int64_t j = 0; j < count; ++j) dst[base + c * cstride + j * pstride] = buf[c * W + j];
      }
    };
    scatter(v.dx, s.want_grad ? pb->grad_logits : nullptr);
    scatter(v.prob, s.prob);
    scatter(v.log_prob, s.log_prob);
  }
  if (entropy) std::copy(entropy, entropy + count, s.entropy + i0);
  if (pb && s.want_loss) {
    double sum = 0;
    for (std::int64_t j = 0; j < count; ++j) {
      const T l = sc.terms.loss[static_cast<std::size_t>(j)];
      if (pb->loss_map) pb->loss_map[i0 + j] = l;
      sum += static_cast<double>(l);
    }
    *loss_partial = sum;
  }
}

// The fast path: index targets without label smoothing, whose
// outputs are the loss, P and dX (the forward and fused calls of the usual
// segmentation loss and Caffe2's operators). The passes of run_tile, over a
// class-major copy of the tile:
// - the copy reads X from memory once, row by row. Rows of X that sit a
//   power of two apart (a 512 x 1024 image) share cache sets and would evict
//   each other between passes;
// - pass 2 keeps e in the copy and checks for NaN once per position (a NaN
//   makes every output of its position NaN, SPEC.md 5), not per element;
// - pass 3 writes dX = e * (k2 / sum) - k2 * onehot row by row, with
//   streaming stores when the outputs would not stay in the cache anyway.
template <class T>
bool is_plain_index_problem(const LossSetup<T>& s) {
  const CrossEntropyProblem<T>* pb = s.pb;
  return pb && s.index && s.eps == 0 && !s.log_prob && !s.entropy &&
         !pb->grad_prob && !pb->grad_log_prob && !pb->grad_entropy;
}

template <class T>
struct PlainScratch {
  std::vector<T> x;     // the tile, class-major: X, then e, then dX (or P) when not direct
  std::vector<T> prob;  // P, when not direct and dX takes x
  std::vector<T> stage;  // a class-last tile's output, position-major, before it is streamed
  std::vector<T> weight, label_weight, grad_coef, grad_scale, inv_sum, loss;
  std::vector<T> sum, shifted_sum, label_shift;
  std::vector<Index<T>> label, label_offset;

  void resize(std::int64_t classes, std::int64_t width, bool prob_too) {
    const auto n = static_cast<std::size_t>(width);
    x.resize(static_cast<std::size_t>(classes) * n);
    if (prob_too) prob.resize(x.size());
    for (auto* v : {&weight, &label_weight, &grad_coef, &grad_scale, &inv_sum, &loss, &sum,
                    &shifted_sum, &label_shift}) {
      v->resize(n);
    }
    label.resize(n);
    label_offset.resize(n);
  }
};

template <class T>
PlainScratch<T>& plain_scratch() {
  thread_local PlainScratch<T> s;
  return s;
}

// Which per-position terms vary; the others are constants (a_i = w_y = 1,
// k2 = the upstream scale), and padding lanes are made inert by their
// label -1 alone.
template <class T>
struct PlainTerms {
  bool pixel_weight = false, class_weight = false, grad_coef = false;

  explicit PlainTerms(const CrossEntropyProblem<T>& pb)
      : pixel_weight(pb.pixel_weight != nullptr),
        class_weight(pb.class_weight != nullptr),
        grad_coef(pb.grad_logits &&
                  (pb.pixel_weight || pb.class_weight || pb.grad_loss_map)) {}
};

// Per position: the label (-1 if ignored or padding), where x_y sits in the
// copy, and the terms that vary: a_i, w_y (0 if ignored) and the gradient's
// k2 = r_i a_i w_y.
template <class T, class L>
void plain_positions(const CrossEntropyProblem<T>& pb, const PlainTerms<T>& vary, const L* labels,
                     std::int64_t i0, std::int64_t count, std::int64_t width, PlainScratch<T>& sc) {
  Index<T>* label = sc.label.data();
  Index<T>* offset = sc.label_offset.data();
  // Labels were checked to be in [0, C) or the ignore_index; one that L
  // cannot hold matches none.
  const bool ignore_fits = static_cast<std::int64_t>(static_cast<L>(pb.ignore_index)) == pb.ignore_index;
  const L ignore = pb.has_ignore_index && ignore_fits ? static_cast<L>(pb.ignore_index) : L(-1);
  for (std::int64_t j = 0; j < count; ++j) {  // no branches: the compiler vectorizes it
    const L y = labels[i0 + j];
    const bool valid = y != ignore && y >= 0;  // a label < 0 is the ignore_index
    label[j] = valid ? static_cast<Index<T>>(y) : Index<T>(-1);
    offset[j] = static_cast<Index<T>>((valid ? static_cast<std::int64_t>(y) : 0) * width + j);
  }
  for (std::int64_t j = count; j < width; ++j) {
    label[j] = -1;
    offset[j] = static_cast<Index<T>>(j);
  }
  if (!(vary.pixel_weight || vary.class_weight || vary.grad_coef)) return;
  for (std::int64_t j = 0; j < width; ++j) {
    const std::int64_t i = i0 + j, y = label[j];
    const bool inside = j < count;
    const T a = inside && pb.pixel_weight ? pb.pixel_weight[i] : T(inside ? 1 : 0);
    const T wy = y < 0 ? T(0) : pb.class_weight ? pb.class_weight[y] : T(1);
    sc.weight[j] = a;
    sc.label_weight[j] = wy;
    const T r = !inside ? T(0) : pb.grad_loss_map ? pb.grad_loss_map[i] : pb.grad_loss_scale;
    sc.grad_coef[j] = (r * a) * wy;
  }
}

// The float64 sum of x[0, n): float64 lanes (two vectors of them, so that
// the adds are two independent chains), then the lanes, then the tail, in
// an order fixed by n and the target.
template <class T>
double float64_sum(const T* x, std::int64_t n) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<T, decltype(dd)> dt;  // as many lanes of T
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(dd));
  const auto load = [&](std::int64_t i) {
    if constexpr (sizeof(T) == sizeof(double)) {
      return hn::LoadU(dd, x + i);
    } else {
      return hn::PromoteTo(dd, hn::LoadU(dt, x + i));
    }
  };
  auto s0 = hn::Zero(dd), s1 = hn::Zero(dd);
  std::int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    s0 = hn::Add(s0, load(i));
    s1 = hn::Add(s1, load(i + N));
  }
  if (i + N <= n) {
    s0 = hn::Add(s0, load(i));
    i += N;
  }
  double total = hn::GetLane(hn::SumOfLanes(dd, hn::Add(s0, s1)));
  for (; i < n; ++i) total += static_cast<double>(x[i]);
  return total;
}

// Pass 3 of a class-last tile: out[j * C + c] = value(d, e, j, c) for the
// class-major e (row stride W), by transpose_blocks, or for 2 or 3 classes
// by interleaving stores of whole vectors of positions.
template <class T, class Value>
void class_last_outputs(const T* e, std::int64_t W, std::int64_t count, std::int64_t C, T* out,
                        const Value& value) {
  std::int64_t j0 = 0;
#if HWY_TARGET != HWY_SCALAR
  if (C == 2 || C == 3) {
    const hn::ScalableTag<T> d;
    const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
    for (; j0 + N <= count; j0 += N) {
      const auto v0 = value(d, hn::LoadU(d, e + j0), j0, 0);
      const auto v1 = value(d, hn::LoadU(d, e + W + j0), j0, 1);
      if (C == 2) {
        hn::StoreInterleaved2(v0, v1, d, out + j0 * C);
      } else {
        hn::StoreInterleaved3(v0, v1, value(d, hn::LoadU(d, e + 2 * W + j0), j0, 2), d, out + j0 * C);
      }
    }
  }
#endif
  const auto shifted = [&](auto dd, auto v, std::int64_t j, std::int64_t c) { return value(dd, v, j + j0, c); };
  transpose_blocks<false>(e + j0, W, out + j0 * C, C, C, count - j0, shifted);
}


// The class-major copy xs (row stride W) of `count` class-last positions at
// x (x[j * C + c]), the inverse of class_last_outputs: 2 or 3 classes by
// deinterleaving loads of whole vectors of positions, else transpose_blocks.
template <class T>
void class_last_inputs(const T* x, std::int64_t count, std::int64_t C, T* xs, std::int64_t W) {
  std::int64_t done = 0;
  if (C == 2 || C == 3) {
    const hn::ScalableTag<T> d;
    const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
    for (; done + N <= count; done += N) {
      const T* from = x + done * C;
      hn::Vec<decltype(d)> v0, v1, v2;
      if (C == 2) {
        hn::LoadInterleaved2(d, from, v0, v1);
      } else {
        hn::LoadInterleaved3(d, from, v0, v1, v2);
        hn::StoreU(v2, d, xs + 2 * W + done);
      }
      hn::StoreU(v0, d, xs + done);
      hn::StoreU(v1, d, xs + W + done);
    }
  }
  transpose<true>(x + done * C, C, xs + done, W, count - done, C);
}

// dst[0, n) = src[0, n) with streaming stores where dst is aligned to a
// vector, plain stores at the edges.
template <class T>
void stream_copy(const T* src, T* dst, std::int64_t n) {
  const hn::ScalableTag<T> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::size_t align = static_cast<std::size_t>(N) * sizeof(T);
  std::int64_t i = 0;
  for (; i < n && reinterpret_cast<std::uintptr_t>(dst + i) % align != 0; ++i) dst[i] = src[i];
  for (; i + N <= n; i += N) hn::Stream(hn::LoadU(d, src + i), d, dst + i);
  for (; i < n; ++i) dst[i] = src[i];
  hwy::FlushStream();
}

// Positions [i0, i0 + count) whose class c element is at
// base + c * cstride + j * pstride. Direct when pixels are unit-stride and
// count fills whole vectors: the copy is row by row and the outputs go
// straight to memory; else through the copy, transposed element by element.
// `next` is the next tile's X at the same strides (its class 0, position
// 0) and next_count its positions, prefetched during pass 2; or null.
template <class T>
void plain_tile(const LossSetup<T>& s, const Geometry& g, const T* logits, std::int64_t i0,
                std::int64_t count, std::int64_t base, std::int64_t cstride, std::int64_t pstride,
                double* loss_partial, bool stream, const T* next, std::int64_t next_count) {
  const hn::ScalableTag<T> d;
  const hn::RebindToSigned<decltype(d)> di;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t C = g.classes;
  const CrossEntropyProblem<T>& pb = *s.pb;
  const PlainTerms<T> vary(pb);
  const bool want_loss = s.want_loss, want_grad = s.want_grad, want_prob = s.prob != nullptr;
  const bool direct = pstride == 1 && count % N == 0;
  const std::int64_t W = round_up(count, N);
  PlainScratch<T>& sc = plain_scratch<T>();
  sc.resize(C, W, !direct && want_grad && want_prob);
  T* xs = sc.x.data();

  if (direct) {
    for (std::int64_t c = 0; c < C; ++c) {
      const T* row = logits + base + c * cstride;
      T* copy = xs + c * W;
      for (std::int64_t j = 0; j < W; j += N) hn::StoreU(hn::LoadU(d, row + j), d, copy + j);
    }
  } else {
    if (cstride == 1) {  // class last
      class_last_inputs(logits + base, count, C, xs, W);
    } else {
      for (std::int64_t j = 0; j < count; ++j) {
        const T* src = logits + base + j * pstride;
        for (std::int64_t c = 0; c < C; ++c) xs[c * W + j] = src[c * cstride];
      }
    }
    for (std::int64_t c = 0; c < C; ++c) std::fill(xs + c * W + count, xs + (c + 1) * W, T(0));
  }
  if (pb.labels.dtype == DType::kInt32) {
    plain_positions(pb, vary, static_cast<const std::int32_t*>(pb.labels.data), i0, count, W, sc);
  } else {
    plain_positions(pb, vary, static_cast<const std::int64_t*>(pb.labels.data), i0, count, W, sc);
  }

  // The next tile, a cache line at a time, spread over pass 2: element k of
  // the tile's visit order (class-major rows, or contiguous positions).
  // (Constant divisors: an integer division here would cost as much as an exp.)
  constexpr std::int64_t kLine = 64 / static_cast<std::int64_t>(sizeof(T));
  const auto prefetch = [&](std::int64_t j, std::int64_t c) {
    const std::int64_t k = direct ? c * cstride + j : (j / hn::Lanes(d) * C + c) * N;
    const bool inside = direct ? j < next_count : k < next_count * C;
    if (k % kLine < N && inside) PrefetchLine(next + k);
  };
  // And its labels (the next positions), the lines of N of them per vector
  // of positions: with few classes they are as many bytes as X.
  const std::size_t label_bytes = pb.labels.dtype == DType::kInt32 ? 4 : 8;
  const auto* next_labels = static_cast<const char*>(pb.labels.data) + (i0 + count) * static_cast<std::int64_t>(label_bytes);
  const std::int64_t next_label_bytes = next_count * static_cast<std::int64_t>(label_bytes);
  const auto prefetch_labels = [&](std::int64_t j) {
    const std::int64_t from = j * static_cast<std::int64_t>(label_bytes);
    const std::int64_t to = std::min(from + N * static_cast<std::int64_t>(label_bytes), next_label_bytes);
    for (std::int64_t b = from; b < to; b += 64) PrefetchLine(next_labels + b);
  };

  // Pass 2: the max and e = exp(x - max) over the copy, two vectors of
  // positions at a time: exp is a long chain of dependent operations, and
  // two independent chains keep the FMA units busy. Then the loss and the
  // per-position coefficients of pass 3.
  const bool keep_e = want_grad || want_prob;
  const V one = hn::Set(d, T(1));
  const V none = hn::Zero(d);
  T* sums = sc.sum.data();
  T* shifted_sums = sc.shifted_sum.data();
  T* label_shifts = sc.label_shift.data();
  // shifted_sum is NaN exactly when some x - max is (x NaN, or +inf at the
  // position): shifts are <= 0 or -inf otherwise.
  const auto exp_pass = [&]<bool kKeepE, bool kPrefetch, bool kPair>(std::int64_t j) {
    const std::int64_t j1 = kPair ? j + N : j;
    if constexpr (kPrefetch) {
      prefetch_labels(j);
      if constexpr (kPair) prefetch_labels(j1);
    }
    V m0 = hn::LoadU(d, xs + j), m1 = hn::LoadU(d, xs + j1);
    for (std::int64_t c = 1; c < C; ++c) {
      m0 = hn::Max(m0, hn::LoadU(d, xs + c * W + j));
      if constexpr (kPair) m1 = hn::Max(m1, hn::LoadU(d, xs + c * W + j1));
    }
    if (want_loss) {  // x_y - max, read before e replaces x
      const auto gather = [&](std::int64_t at, V m) {
        hn::StoreU(hn::Sub(hn::GatherIndex(d, xs, hn::LoadU(di, sc.label_offset.data() + at)), m), d,
                   label_shifts + at);
      };
      gather(j, m0);
      if constexpr (kPair) gather(j1, m1);
    }
    V sum0 = none, sum1 = none, shifted_sum0 = none, shifted_sum1 = none;
    for (std::int64_t c = 0; c < C; ++c) {
      T* at0 = xs + c * W + j;
      const V shifted0 = hn::Sub(hn::LoadU(d, at0), m0);
      const V e0 = ExpNonPositiveNoNaN(d, shifted0);
      if constexpr (kKeepE) hn::StoreU(e0, d, at0);
      sum0 = hn::Add(sum0, e0);
      shifted_sum0 = hn::Add(shifted_sum0, shifted0);
      if constexpr (kPair) {
        T* at1 = xs + c * W + j1;
        const V shifted1 = hn::Sub(hn::LoadU(d, at1), m1);
        const V e1 = ExpNonPositiveNoNaN(d, shifted1);
        if constexpr (kKeepE) hn::StoreU(e1, d, at1);
        sum1 = hn::Add(sum1, e1);
        shifted_sum1 = hn::Add(shifted_sum1, shifted1);
      }
      if constexpr (kPrefetch) {
        prefetch(j, c);
        if constexpr (kPair) prefetch(j1, c);
      }
    }
    hn::StoreU(sum0, d, sums + j);
    hn::StoreU(shifted_sum0, d, shifted_sums + j);
    if constexpr (kPair) {
      hn::StoreU(sum1, d, sums + j1);
      hn::StoreU(shifted_sum1, d, shifted_sums + j1);
    }
  };
  const auto exp_passes = [&]<bool kKeepE, bool kPrefetch>() {
    std::int64_t j = 0;
    for (; j + 2 * N <= W; j += 2 * N) exp_pass.template operator()<kKeepE, kPrefetch, true>(j);
    if (j < W) exp_pass.template operator()<kKeepE, kPrefetch, false>(j);
  };
  if (keep_e && next) {
    exp_passes.template operator()<true, true>();
  } else if (keep_e) {
    exp_passes.template operator()<true, false>();
  } else if (next) {
    exp_passes.template operator()<false, true>();
  } else {
    exp_passes.template operator()<false, false>();
  }

  const V grad_coef = hn::Set(d, pb.grad_loss_scale);  // when it does not vary
  const bool floor = pb.prob_floor > 0;
  const V floor_v = hn::Set(d, pb.prob_floor);
  // Local pointers: stores through T* could alias the vectors' own pointers.
  T* const losses = sc.loss.data();
  T* const inv_sums_out = sc.inv_sum.data();
  T* const grad_scales_out = sc.grad_scale.data();
  const T* const weights = sc.weight.data();
  const T* const label_weights = sc.label_weight.data();
  const T* const grad_coefs_in = sc.grad_coef.data();
  const Index<T>* const labels_in = sc.label.data();
  for (std::int64_t j = 0; j < W; j += N) {
    const V shifted_sum = hn::LoadU(d, shifted_sums + j);
    const auto no_nan = hn::Eq(shifted_sum, shifted_sum);
    const V sum = hn::IfThenElse(no_nan, hn::LoadU(d, sums + j), shifted_sum);
    const auto valid = hn::RebindMask(d, hn::Gt(hn::LoadU(di, labels_in + j), hn::Set(di, Index<T>(-1))));
    const V inv_sum = hn::Div(one, sum);
    if (want_loss) {
      const V label_shift = hn::LoadU(d, label_shifts + j);
      V neg_log_py = hn::Sub(LogKeepNaN(d, sum), label_shift);
      if (floor) {  // -log(max(p_y, floor)), from p_y (Caffe2)
        const V py = hn::Mul(ExpNonPositive(d, label_shift), inv_sum);
        neg_log_py = hn::Neg(LogKeepNaN(d, hn::IfThenElse(hn::Lt(py, floor_v), floor_v, py)));
      }
      const V a = vary.pixel_weight ? hn::LoadU(d, weights + j) : one;
      const V wy = vary.class_weight ? hn::LoadU(d, label_weights + j) : one;
      hn::StoreU(hn::IfThenElseZero(valid, hn::Mul(a, hn::Mul(wy, neg_log_py))), d, losses + j);
    }
    if (want_prob) hn::StoreU(inv_sum, d, inv_sums_out + j);
    if (want_grad) {
      const V k2 = vary.grad_coef ? hn::LoadU(d, grad_coefs_in + j) : grad_coef;
      hn::StoreU(hn::IfThenElseZero(valid, hn::Mul(k2, inv_sum)), d, grad_scales_out + j);
      if (!hn::AllTrue(d, no_nan)) {  // an ignored position's dX is 0 even if its e is not finite
        const auto clear = hn::AndNot(valid, hn::Not(no_nan));
        for (std::int64_t c = 0; c < C; ++c) {
          T* at = xs + c * W + j;
          hn::StoreU(hn::IfThenZeroElse(clear, hn::LoadU(d, at)), d, at);
        }
      }
    }
  }

  // Pass 3, row by row: P = e / sum and dX = e * (k2 / sum) - k2 * onehot.
  if (keep_e) {
    T* dx = want_grad ? (direct ? pb.grad_logits + base : xs) : nullptr;
    T* prob = want_prob ? (direct ? s.prob + base : want_grad ? sc.prob.data() : xs) : nullptr;
    const std::int64_t out_stride = direct ? cstride : W;
    // Local pointers: the compiler cannot tell that the output rows do not
    // alias the vectors' own pointers, and would reload those per vector.
    const T* const inv_sums = sc.inv_sum.data();
    const T* const grad_scales = sc.grad_scale.data();
    const T* const grad_coefs = sc.grad_coef.data();
    const Index<T>* const labels = sc.label.data();
    const auto rows = [&]<bool kStream, bool kProb, bool kGrad, bool kVaryCoef>() {
      const auto put = [&](V v, T* to) {
        if constexpr (kStream) {
          hn::Stream(v, d, to);
        } else {
          hn::StoreU(v, d, to);
        }
      };
      for (std::int64_t c = 0; c < C; ++c) {
        const T* e_row = xs + c * W;
        T* p_row = kProb ? prob + c * out_stride : nullptr;
        T* g_row = kGrad ? dx + c * out_stride : nullptr;
        const auto class_c = hn::Set(di, static_cast<Index<T>>(c));
        for (std::int64_t j = 0; j < W; j += N) {
          const V e = hn::LoadU(d, e_row + j);
          if constexpr (kProb) put(hn::Mul(e, hn::LoadU(d, inv_sums + j)), p_row + j);
          if constexpr (kGrad) {
            const auto is_label = hn::RebindMask(d, hn::Eq(hn::LoadU(di, labels + j), class_c));
            const V k2 = kVaryCoef ? hn::LoadU(d, grad_coefs + j) : grad_coef;
            put(hn::MulSub(e, hn::LoadU(d, grad_scales + j), hn::IfThenElseZero(is_label, k2)), g_row + j);
          }
        }
      }
    };
    const auto rows_of = [&]<bool kStream>() {
      if (!dx) return rows.template operator()<kStream, true, false, false>();
      const auto with_grad = [&]<bool kProb>() {
        if (vary.grad_coef) return rows.template operator()<kStream, kProb, true, true>();
        rows.template operator()<kStream, kProb, true, false>();
      };
      if (prob) return with_grad.template operator()<true>();
      with_grad.template operator()<false>();
    };
    bool written = false;
#if HWY_TARGET != HWY_SCALAR
    if constexpr (sizeof(T) == 4) {
      if (!direct && cstride == 1) {  // class last: position-major outputs, straight from e
        // The outputs of class c at positions [j, j + Lanes(dd)), for any
        // lane count: what `rows` computes.
        const auto prob_of = [&](auto dd, auto e, std::int64_t j, std::int64_t) {
          return hn::Mul(e, hn::LoadU(dd, inv_sums + j));
        };
        const auto grad_of = [&](auto dd, auto e, std::int64_t j, std::int64_t c) {
          const hn::RebindToSigned<decltype(dd)> ddi;
          const auto class_c = hn::Set(ddi, static_cast<Index<T>>(c));
          const auto is_label = hn::RebindMask(dd, hn::Eq(hn::LoadU(ddi, labels + j), class_c));
          const auto k2 = vary.grad_coef ? hn::LoadU(dd, grad_coefs + j) : hn::Set(dd, pb.grad_loss_scale);
          return hn::MulSub(e, hn::LoadU(dd, grad_scales + j), hn::IfThenElseZero(is_label, k2));
        };
        const auto emit = [&](const auto& value, T* to) {
          if (stream) {  // contiguous: staged, then streamed
            sc.stage.resize(static_cast<std::size_t>(count * C));
            class_last_outputs(xs, W, count, C, sc.stage.data(), value);
            stream_copy(sc.stage.data(), to + base, count * C);
          } else {
            class_last_outputs(xs, W, count, C, to + base, value);
          }
        };
        if (want_prob) emit(prob_of, s.prob);
        if (want_grad) emit(grad_of, pb.grad_logits);
        written = true;
      }
    }
#endif
    if (!written) {
      // Streaming needs every row aligned to a vector.
      const std::size_t align = static_cast<std::size_t>(N) * sizeof(T);
      const auto aligned = [&](const T* p) {
        return !p || (reinterpret_cast<std::uintptr_t>(p) % align == 0 &&
                      (C == 1 || static_cast<std::size_t>(out_stride) * sizeof(T) % align == 0));
      };
      if (stream && direct && aligned(dx) && aligned(prob)) {
        rows_of.template operator()<true>();
        hwy::FlushStream();
      } else {
        rows_of.template operator()<false>();
      }
      if (!direct) {
        const auto scatter = [&](const T* buf, T* to) {
          if (cstride == 1 && stream) {  // class last: contiguous, so staged and streamed
            sc.stage.resize(static_cast<std::size_t>(count * C));
            transpose<false>(buf, W, sc.stage.data(), C, C, count);
            return stream_copy(sc.stage.data(), to + base, count * C);
          }
          if (cstride == 1) return transpose<false>(buf, W, to + base, pstride, C, count);
          for (std::int64_t j = 0; j < count; ++j) {
            T* dst = to + base + j * pstride;
            for (std::int64_t c = 0; c < C; ++c) dst[c * cstride] = buf[c * W + j];
          }
        };
        if (want_grad) scatter(dx, pb.grad_logits);
        if (want_prob) scatter(prob, s.prob);
      }
    }
  }

  if (want_loss) {
    if (pb.loss_map) std::copy(losses, losses + count, pb.loss_map + i0);
    *loss_partial = float64_sum(losses, W);  // padding lanes hold 0
  }
}

// Whether outputs of this many bytes go around the cache (streaming
// stores): outputs this large would evict the cache anyway, and a streamed
// line is not read from memory before it is written. A fixed size, as the
// caches a VM reports say little (this one claims the socket's 256 MiB L3).
bool streams(std::int64_t output_bytes) { return output_bytes >= (std::int64_t{16} << 20); }

// One position's row of C classes, classes in lanes. grad_prob and
// grad_log_prob are the row's upstream gradients of P and log P, or null.
// The last C % N classes go as one more vector, loaded from a copy padded
// with -inf logits (e = 0) and zeros elsewhere; the sums where padding
// would add 0 * -inf are masked to the row. With kStream, dX and P go out
// by streaming stores (every vector of them aligned, C % N = 0) and e is
// kept in scratch meanwhile.
template <bool kStream, class T>
void run_row(const LossSetup<T>& s, std::int64_t C, std::int64_t i, const T* x, const T* soft,
             const T* grad_prob, const T* grad_log_prob, T* dx, T* prob, T* log_prob,
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
  const auto in_row_only = [&](std::int64_t c, V v) { return c < full ? v : hn::IfThenElseZero(in_row, v); };
  const auto weight = [&](std::int64_t c) { return class_weight ? load(class_weight, c, 0) : hn::Set(d, T(1)); };

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
  V target_shift = hn::Zero(d), e_shift = hn::Zero(d), e_grad_p = hn::Zero(d), sum_grad_l = hn::Zero(d);
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
    if (plain) {  // the common cases, without per-class branches
      V sum2 = hn::Zero(d);  // two chains hide the add latency
      std::int64_t c = block;
      for (; c + 2 * N <= std::min(full, block_end); c += 2 * N) {
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
                       hn::Set(dd, dot_p), grad_l, hn::Set(dd, sum_l), hn::Set(dd, g_h), hn::Set(dd, h));
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
        if (pb->prob_floor > 0) neg_log_py = -std::log(std::max(std::exp(dy) * inv_sum, pb->prob_floor));
        loss = (1 - s.eps) * wy * neg_log_py;
        if (smoothing) loss += s.eps_per_class * (s.class_weight_sum * log_sum - static_cast<T>(totals.weighted_shift));
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
          const V e = e_store ? load(e_store, c, 0) : ExpNonPositive(d, hn::Sub(load(x, c, minus_inf), mv));
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
    return add_upstream(d, g, p, shifted, up_p ? load(grad_prob, c, 0) : g, up_l ? load(grad_log_prob, c, 0) : g);
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
      g_label = hn::GetLane(add_upstream(d1, hn::Set(d1, g_label), hn::Set(d1, p_label), hn::Set(d1, x_label - m),
                                         one(grad_prob), one(grad_log_prob)));  // x[y] may be dX by now
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
      g = hn::Mul(k2v, hn::Sub(hn::Mul(p, k1v), hn::Mul(weight(c), target)));  // not fused, as in run_tile
    } else if (!ignored) {
      g = hn::Mul(k2v, p);
      if (smoothing) g = hn::MulAdd(k3v, hn::MulSub(p, w_sum, weight(c)), g);
    }
    if (upstream) g = upstream_at(c, g, p, shifted);
    if (kStream && has_label && y >= c && y < c + N) {
      const auto at_label = hn::Eq(hn::Iota(di, 0), hn::Set(di, static_cast<hn::TFromD<decltype(di)>>(y - c)));
      g = hn::IfThenElse(hn::RebindMask(d, at_label), hn::Set(d, g_label), g);
    }
    store_out(g, dx, c);
  }
  if (has_label && !kStream) dx[y] = g_label;
}

// The label scan of the API's checks without weights: how many of
// y[0, n) count toward the mean (not ignore_index, in [0, classes)), and
// whether any other is out of range. Counts build up in the lanes as
// subtracted all-ones masks; the caller passes blocks small enough that no
// lane overflows.
template <class L>
std::int64_t CountLabelsImpl(const L* y, std::int64_t n, std::int64_t classes, bool has_ignore,
                             std::int64_t ignore, bool* bad) {
  constexpr std::int64_t kMax = std::numeric_limits<L>::max();
  // An ignore_index that L cannot hold matches no label; a label is never above kMax.
  has_ignore = has_ignore && ignore >= std::numeric_limits<L>::min() && ignore <= kMax;
  const L highest = static_cast<L>(std::min(classes - 1, kMax));
  const auto counts_scalar = [&](L label) { return !(has_ignore && label == static_cast<L>(ignore)); };
  const auto in_range_scalar = [&](L label) { return label >= 0 && label <= highest; };
  std::int64_t valid = 0, i = 0;
  bool any_bad = false;
#if HWY_TARGET != HWY_SCALAR
  const hn::ScalableTag<L> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const auto hi = hn::Set(d, highest), minus_one = hn::Set(d, L(-1)), ignored = hn::Set(d, static_cast<L>(ignore));
  auto count = hn::Zero(d), out_of_range = hn::Zero(d);
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, y + i);
    const auto in_range = hn::And(hn::Gt(v, minus_one), hn::Not(hn::Gt(v, hi)));
    auto counted = hn::MaskFromVec(hn::Not(hn::Zero(d)));
    if (has_ignore) counted = hn::Not(hn::Eq(v, ignored));
    count = hn::Sub(count, hn::VecFromMask(d, hn::And(counted, in_range)));
    out_of_range = hn::Or(out_of_range, hn::VecFromMask(d, hn::AndNot(in_range, counted)));
  }
  valid = static_cast<std::int64_t>(hn::GetLane(hn::SumOfLanes(d, count)));
  any_bad = !hn::AllFalse(d, hn::MaskFromVec(out_of_range));
#endif
  for (; i < n; ++i) {
    const bool counted = counts_scalar(y[i]), in_range = in_range_scalar(y[i]);
    valid += counted && in_range;
    any_bad |= counted && !in_range;
  }
  *bad = any_bad;
  return valid;
}

std::int64_t CountLabelsI32(const std::int32_t* y, std::int64_t n, std::int64_t classes,
                            bool has_ignore, std::int64_t ignore, bool* bad) {
  return CountLabelsImpl(y, n, classes, has_ignore, ignore, bad);
}
std::int64_t CountLabelsI64(const std::int64_t* y, std::int64_t n, std::int64_t classes,
                            bool has_ignore, std::int64_t ignore, bool* bad) {
  return CountLabelsImpl(y, n, classes, has_ignore, ignore, bad);
}

// The in-kernel label check (CrossEntropyProblem::label_check) of one block
// of work, positions [i0, i0 + count), just before the block reads them, so
// that the labels come from memory once. Adds to *counted; false if a label
// is out of range (the block is then skipped).
template <class T>
bool block_labels_fine(const CrossEntropyProblem<T>& pb, std::int64_t i0, std::int64_t count,
                       std::int64_t* counted) {
  bool bad = false;
  const std::int64_t C = pb.geom.classes;
  if (pb.labels.dtype == DType::kInt32) {
    *counted += CountLabelsImpl(static_cast<const std::int32_t*>(pb.labels.data) + i0, count, C,
                                pb.has_ignore_index, pb.ignore_index, &bad);
  } else {
    *counted += CountLabelsImpl(static_cast<const std::int64_t*>(pb.labels.data) + i0, count, C,
                                pb.has_ignore_index, pb.ignore_index, &bad);
  }
  return !bad;
}

// Per-block results of the label check, combined after the blocks ran.
struct BlockLabelChecks {
  LabelCheck* out = nullptr;  // null: no check
  std::vector<std::int64_t> counted;
  std::vector<char> bad;

  BlockLabelChecks(LabelCheck* check, std::int64_t blocks) : out(check) {
    if (!out) return;
    counted.assign(static_cast<std::size_t>(blocks), 0);
    bad.assign(static_cast<std::size_t>(blocks), 0);
  }
  // Whether block b may run.
  template <class T>
  bool pass(const CrossEntropyProblem<T>* pb, std::int64_t b, std::int64_t i0, std::int64_t count) {
    if (!out) return true;
    const auto k = static_cast<std::size_t>(b);
    bad[k] = !block_labels_fine(*pb, i0, count, &counted[k]);
    return !bad[k];
  }
  void finish() {
    if (!out) return;
    for (std::int64_t c : counted) out->counted += c;
    for (char b : bad) out->bad = out->bad || b;
  }
};

// Rows processed per block: about 256 KiB of X, at least one row.
template <class T>
std::int64_t rows_per_block(std::int64_t classes) {
  return std::max<std::int64_t>(1, (std::int64_t{256} * 1024 / static_cast<std::int64_t>(sizeof(T))) /
                                       std::max<std::int64_t>(classes, 1));
}

// Whether positions are processed as rows with classes in lanes.
template <class T>
bool use_rows(const Geometry& g) {
  const bool contiguous_classes = g.class_last || g.pixels == 1;
  return contiguous_classes && g.classes >= kRowClasses;
}

// The driver: blocks of tiles or rows, in parallel, loss partials in order.
template <class T>
double run_loss_family(const LossSetup<T>& s, const Geometry& g, const T* logits, const T* soft) {
  const std::int64_t C = g.classes;
  std::vector<double> partial;
  LabelCheck* const label_check = s.pb && s.index ? s.pb->label_check : nullptr;
  if (use_rows<T>(g)) {
    const std::int64_t rows = g.positions();
    const std::int64_t per_block = rows_per_block<T>(C);
    const std::int64_t blocks = (rows + per_block - 1) / per_block;
    partial.assign(static_cast<std::size_t>(blocks), 0.0);
    BlockLabelChecks checks(label_check, blocks);
    const T* grad_prob = s.want_grad ? s.pb->grad_prob : nullptr;
    const T* grad_log_prob = s.want_grad ? s.pb->grad_log_prob : nullptr;
    T* dx = s.want_grad ? s.pb->grad_logits : nullptr;
    // Large dX and P are staged per block and streamed out: a row's e is kept
    // in dX (or P) between passes, and in memory that would be a read of
    // every output line before it is written.
    const std::int64_t outputs = (dx ? 1 : 0) + (s.prob ? 1 : 0);
    const bool stream = streams(outputs * rows * C * static_cast<std::int64_t>(sizeof(T)));
    // Rows whose vectors all sit aligned stream straight from pass 3.
    const hn::ScalableTag<T> d;
    const std::size_t vector_bytes = hn::Lanes(d) * sizeof(T);
    const auto aligned = [&](const T* p) { return !p || reinterpret_cast<std::uintptr_t>(p) % vector_bytes == 0; };
    const bool stream_rows = stream && static_cast<std::size_t>(C) % hn::Lanes(d) == 0 && aligned(dx) && aligned(s.prob);
    parallel::for_each_block(blocks, [&](std::int64_t b) {
      Scratch<T>& sc = scratch<T>();
      const std::int64_t first = b * per_block, count = std::min(rows, first + per_block) - first;
      if (!checks.pass(s.pb, b, first, count)) return;
      const auto staged = [&](std::vector<T>& buf, T* out) {
        if (!stream || stream_rows || !out) return out;
        buf.resize(static_cast<std::size_t>(count * C));
        return buf.data();
      };
      T* dx_rows = staged(sc.dx, dx);  // row first's dX and P
      T* prob_rows = staged(sc.prob, s.prob);
      if (!stream || stream_rows) {
        dx_rows = dx ? dx + first * C : nullptr;
        prob_rows = s.prob ? s.prob + first * C : nullptr;
      }
      double sum = 0;
      for (std::int64_t r = 0; r < count; ++r) {
        const std::int64_t i = first + r, o = i * C;
        double l = 0;
        const auto row = [o](const T* base) { return base ? base + o : nullptr; };
        T* const dx_row = dx_rows ? dx_rows + r * C : nullptr;
        T* const prob_row = prob_rows ? prob_rows + r * C : nullptr;
        T* const log_prob_row = s.log_prob ? s.log_prob + o : nullptr;
        if (stream_rows) {
          run_row<true>(s, C, i, logits + o, row(soft), row(grad_prob), row(grad_log_prob), dx_row,
                        prob_row, log_prob_row, sc.e, &l);
        } else {
          run_row<false>(s, C, i, logits + o, row(soft), row(grad_prob), row(grad_log_prob), dx_row,
                         prob_row, log_prob_row, sc.e, &l);
        }
        sum += l;
      }
      if (stream_rows) {
        hwy::FlushStream();
      } else if (stream) {
        if (dx) stream_copy(dx_rows, dx + first * C, count * C);
        if (s.prob) stream_copy(prob_rows, s.prob + first * C, count * C);
      }
      partial[static_cast<std::size_t>(b)] = sum;
    });
    checks.finish();
  } else {
    const std::int64_t W = tile_width<T>(C);
    partial.assign(static_cast<std::size_t>(span_blocks(g, W)), 0.0);
    const bool plain = is_plain_index_problem(s);
    const std::int64_t outputs = (s.want_grad ? 1 : 0) + (s.prob ? 1 : 0);
    const bool stream = streams(outputs * g.positions() * C * static_cast<std::int64_t>(sizeof(T)));
    const bool class_first = !(g.class_last || g.pixels == 1);
    // Where position i's class 0 sits: a tile's base.
    const auto base_of = [&](std::int64_t i) {
      return class_first ? g.offset(i / g.pixels, 0, i % g.pixels) : i * C;
    };
    BlockLabelChecks checks(label_check, span_blocks(g, W));
    for_each_span(g, W, [&](std::int64_t b, std::int64_t i0, std::int64_t count) {
      if (!checks.pass(s.pb, b, i0, count)) return;
      double* out = &partial[static_cast<std::size_t>(b)];
      const std::int64_t cstride = class_first ? g.pixels : 1, pstride = class_first ? 1 : C;
      if (plain) {  // tiles are consecutive: the next one starts at i0 + count
        const std::int64_t i1 = i0 + count;
        const std::int64_t next_count = std::min(W, g.positions() - i1);
        const T* next = i1 < g.positions() ? logits + base_of(i1) : nullptr;
        plain_tile(s, g, logits, i0, count, base_of(i0), cstride, pstride, out, stream, next, next_count);
      } else {
        tile_positions(s, g, logits, i0, count, base_of(i0), cstride, pstride, out);
      }
    });
    checks.finish();
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// NLL over given log-probabilities (ONNX NegativeLogLikelihoodLoss): one
// element read per position and a sparse gradient, so a gather and a
// scatter over the same blocks as the other kernels, no SIMD needed.
template <class T>
void NllImpl(const CrossEntropyProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const std::int64_t C = g.classes;
  const bool class_first = !g.class_last && g.pixels > 1;
  std::vector<double> partial(static_cast<std::size_t>(span_blocks(g, 4096)), 0.0);
  BlockLabelChecks checks(pb.label_check, span_blocks(g, 4096));
  for_each_span(g, 4096, [&](std::int64_t b, std::int64_t i0, std::int64_t count) {
    if (!checks.pass(&pb, b, i0, count)) return;
    const std::int64_t n = class_first ? i0 / g.pixels : 0, p0 = class_first ? i0 % g.pixels : 0;
    const auto at = [&](std::int64_t j, std::int64_t c) {
      return class_first ? g.offset(n, c, p0 + j) : (i0 + j) * C + c;
    };
    if (pb.grad_logits) {  // zero the block's gradient, then scatter
      if (class_first) {
        for (std::int64_t c = 0; c < C; ++c) std::fill_n(pb.grad_logits + at(0, c), count, T(0));
      } else {
        std::fill_n(pb.grad_logits + i0 * C, count * C, T(0));
      }
    }
    double sum = 0;
    for (std::int64_t j = 0; j < count; ++j) {
      const std::int64_t i = i0 + j, y = pb.labels[i];
      T loss = 0;
      if (!(pb.has_ignore_index && y == pb.ignore_index)) {
        const T a = pb.pixel_weight ? pb.pixel_weight[i] : T(1);
        const T wy = pb.class_weight ? pb.class_weight[y] : T(1);
        loss = wy * -pb.logits[at(j, y)] * a;
        if (pb.grad_logits) {
          const T r = (pb.grad_loss_map ? pb.grad_loss_map[i] : pb.grad_loss_scale) * a;
          pb.grad_logits[at(j, y)] = -r * wy;
        }
      }
      if (pb.loss_map) pb.loss_map[i] = loss;
      sum += static_cast<double>(loss);
    }
    partial[static_cast<std::size_t>(b)] = sum;
  });
  checks.finish();
  if (pb.loss_sum) {
    double total = 0;
    for (double p : partial) total += p;
    *pb.loss_sum = total;
  }
}

template <class T>
void CrossEntropyImpl(const CrossEntropyProblem<T>& pb) {
  if (pb.logits_are_log_probs) return NllImpl(pb);
  const LossSetup<T> s = make_setup(pb);
  const double total = run_loss_family(s, pb.geom, pb.logits, pb.target_probs);
  if (pb.loss_sum) *pb.loss_sum = total;
}

template <class T>
void SoftmaxImpl(const SoftmaxProblem<T>& pb) {
  const LossSetup<T> s = make_setup(pb);
  (void)run_loss_family(s, pb.geom, pb.logits, static_cast<const T*>(nullptr));
}

// Caffe2's gradient from P: dX = (P - target) * w_i * coef, 0 when ignored.
template <class T>
void ProbMinusTargetImpl(const ProbMinusTargetProblem<T>& pb) {
  const hn::ScalableTag<T> d;
  const hn::RebindToSigned<decltype(d)> di;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const Geometry& g = pb.geom;
  const std::int64_t C = g.classes;
  const auto coefficient = [&](std::int64_t i, Index<T>* y) {
    const std::int64_t label = pb.target_probs ? -1 : pb.labels[i];
    const bool ignored = !pb.target_probs && pb.has_ignore_index && label == pb.ignore_index;
    *y = ignored ? Index<T>(-1) : static_cast<Index<T>>(label);
    if (ignored) return T(0);
    return (pb.pixel_weight ? pb.pixel_weight[i] : T(1)) * pb.coef;
  };
  if (g.class_last || g.pixels == 1) {
    const std::int64_t full = C / N * N;
    for_each_span(g, 256, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
      for (std::int64_t i = i0; i < i0 + count; ++i) {
        Index<T> y;
        const T k = coefficient(i, &y);
        const T* p = pb.prob + i * C;
        const T* t = pb.target_probs ? pb.target_probs + i * C : nullptr;
        T* dx = pb.grad_logits + i * C;
        const bool ignored = !t && y < 0;
        const V kv = hn::Set(d, k);
        for (std::int64_t c = 0; c < full; c += N) {
          const V target = t ? hn::LoadU(d, t + c) : hn::Zero(d);
          hn::StoreU(ignored ? hn::Zero(d) : hn::Mul(hn::Sub(hn::LoadU(d, p + c), target), kv), d, dx + c);
        }
        for (std::int64_t c = full; c < C; ++c) dx[c] = ignored ? T(0) : (p[c] - (t ? t[c] : T(0))) * k;
        if (!t && !ignored) dx[y] -= k;
      }
    });
    return;
  }
  // Class first: pixels in lanes.
  for_each_span(g, 1024, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
    const std::int64_t n = i0 / g.pixels, p0 = i0 % g.pixels;
    HWY_ALIGN T k[1024];
    HWY_ALIGN Index<T> y[1024];
    for (std::int64_t j = 0; j < count; ++j) k[j] = coefficient(n * g.pixels + p0 + j, &y[j]);
    const std::int64_t full = count / N * N;
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t o = g.offset(n, c, p0);
      const T* p = pb.prob + o;
      const T* t = pb.target_probs ? pb.target_probs + o : nullptr;
      T* dx = pb.grad_logits + o;
      const auto cv = hn::Set(di, static_cast<Index<T>>(c));
      for (std::int64_t j = 0; j < full; j += N) {
        const auto yv = hn::Load(di, y + j);
        const V kv = hn::Load(d, k + j);
        V target = t ? hn::LoadU(d, t + j)
                     : hn::IfThenElseZero(hn::RebindMask(d, hn::Eq(yv, cv)), hn::Set(d, T(1)));
        V g_ = hn::Mul(hn::Sub(hn::LoadU(d, p + j), target), kv);
        if (!t) g_ = hn::IfThenElseZero(hn::RebindMask(d, hn::Gt(yv, hn::Set(di, Index<T>(-1)))), g_);
        hn::StoreU(g_, d, dx + j);
      }
      for (std::int64_t j = full; j < count; ++j) {
        const bool ignored = !t && y[j] < 0;
        const T target = t ? t[j] : (y[j] == c ? T(1) : T(0));
        dx[j] = ignored ? T(0) : (p[j] - target) * k[j];
      }
    }
  });
}

// Backward of softmax (dX = p * (g - sum_j p_j g_j)) or log_softmax
// (dX = g - exp(y) * sum_j g_j). Class first: pixels in lanes, the sum over
// classes in class order per lane. Class last (or P = 1): one position at a
// time, in class order too, so that both layouts give the same bits.
template <class T>
void SoftmaxBackwardImpl(const core::SoftmaxBackwardProblem<T>& pb) {
  const hn::ScalableTag<T> d;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const Geometry& g = pb.geom;
  const std::int64_t C = g.classes;
  const bool log = pb.from_log_softmax;
  // One position, classes at stride cs: the lane code's operations on
  // one-lane vectors, so that every position gets the same bits whatever
  // its layout or place in a tile (no compiler contraction into FMA).
  const hn::CappedTag<T, 1> d1;
  using V1 = hn::Vec<decltype(d1)>;
  const auto position = [&](std::int64_t b, std::int64_t cs) {
    const T* y = pb.output + b;
    const T* gy = pb.grad_output + b;
    V1 dot = hn::Zero(d1);
    for (std::int64_t c = 0; c < C; ++c) {
      const V1 g1 = hn::Set(d1, gy[c * cs]);
      dot = hn::Add(dot, log ? g1 : hn::Mul(hn::Set(d1, y[c * cs]), g1));
    }
    for (std::int64_t c = 0; c < C; ++c) {
      const V1 y1 = hn::Set(d1, y[c * cs]), g1 = hn::Set(d1, gy[c * cs]);
      const V1 dx = log ? hn::Sub(g1, hn::Mul(ExpNonPositive(d1, y1), dot)) : hn::Mul(y1, hn::Sub(g1, dot));
      pb.grad_logits[b + c * cs] = hn::GetLane(dx);
    }
  };
  if (g.class_last || g.pixels == 1) {
    for_each_span(g, 1024, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
      for (std::int64_t i = i0; i < i0 + count; ++i) position(i * C, 1);
    });
    return;
  }
  for_each_span(g, 1024, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
    const std::int64_t n = i0 / g.pixels, p0 = i0 % g.pixels;
    const std::int64_t full = count / N * N;
    const std::int64_t base = g.offset(n, 0, p0), st = g.pixels;
    for (std::int64_t j = 0; j < full; j += N) {
      V dot = hn::Zero(d);
      for (std::int64_t c = 0; c < C; ++c) {
        const V gy = hn::LoadU(d, pb.grad_output + base + c * st + j);
        dot = hn::Add(dot, log ? gy : hn::Mul(hn::LoadU(d, pb.output + base + c * st + j), gy));
      }
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t o = base + c * st + j;
        const V y = hn::LoadU(d, pb.output + o), gy = hn::LoadU(d, pb.grad_output + o);
        const V dx = log ? hn::Sub(gy, hn::Mul(ExpNonPositive(d, y), dot)) : hn::Mul(y, hn::Sub(gy, dot));
        hn::StoreU(dx, d, pb.grad_logits + o);
      }
    }
    for (std::int64_t j = full; j < count; ++j) position(base + j, st);
  });
}

// KL(target || softmax(x)) elementwise (SPEC.md 3.5) and its gradient
// dX_c = q_c * sum_j r_j tau_j - r_c tau_c, for the positions in the lanes of
// `d` whose class c sits at base + c * cs (+ lane). Generic over the vector
// type so that full vectors of pixels (class first) and one-lane vectors
// (class last, tails) run the same operations in the same class order, and
// both layouts give the same bits. Returns each lane's sum of the map.
template <class D>
HWY_INLINE hn::Vec<D> kl_positions(D d, const core::KlDivProblem<hn::TFromD<D>>& pb,
                                   std::int64_t base, std::int64_t cs) {
  using T = hn::TFromD<D>;
  using V = hn::Vec<D>;
  const std::int64_t C = pb.geom.classes;
  const T* x = pb.logits + base;
  const T* t = pb.target + base;
  V m = hn::LoadU(d, x);
  for (std::int64_t c = 1; c < C; ++c) m = hn::Max(m, hn::LoadU(d, x + c * cs));
  V sum = hn::Zero(d);
  for (std::int64_t c = 0; c < C; ++c) {
    const V e = ExpNonPositive(d, hn::Sub(hn::LoadU(d, x + c * cs), m));
    sum = hn::Add(sum, e);
    if (pb.grad_logits) hn::StoreU(e, d, pb.grad_logits + base + c * cs);
  }
  const V log_sum = LogKeepNaN(d, sum);
  const V inv_sum = hn::Div(hn::Set(d, T(1)), sum);
  const V zero = hn::Zero(d);
  const V nan = hn::Set(d, std::numeric_limits<T>::quiet_NaN());
  V total = zero, weighted_mass = zero;
  for (std::int64_t c = 0; c < C; ++c) {
    const V tc = hn::LoadU(d, t + c * cs);
    const V log_q = hn::Sub(hn::Sub(hn::LoadU(d, x + c * cs), m), log_sum);
    V v, tau;
    if (pb.log_target) {
      tau = hn::IfThenElse(hn::Eq(tc, tc), hn::Exp(d, tc), tc);
      v = hn::Mul(tau, hn::Sub(tc, log_q));
    } else {
      tau = tc;
      const V positive = hn::Mul(tc, hn::Sub(LogKeepNaN(d, tc), log_q));
      v = hn::IfThenElse(hn::Gt(tc, zero), positive, hn::IfThenElse(hn::Eq(tc, zero), zero, nan));
    }
    if (pb.out_map) hn::StoreU(v, d, pb.out_map + base + c * cs);
    total = hn::Add(total, v);
    const V r = pb.grad_map ? hn::LoadU(d, pb.grad_map + base + c * cs) : hn::Set(d, pb.grad_scale);
    weighted_mass = hn::Add(weighted_mass, hn::Mul(r, tau));
  }
  if (pb.grad_logits) {
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t o = base + c * cs;
      const V q = hn::Mul(hn::LoadU(d, pb.grad_logits + o), inv_sum);
      const V tc = hn::LoadU(d, t + c * cs);
      const V tau = pb.log_target ? hn::IfThenElse(hn::Eq(tc, tc), hn::Exp(d, tc), tc) : tc;
      const V r = pb.grad_map ? hn::LoadU(d, pb.grad_map + o) : hn::Set(d, pb.grad_scale);
      hn::StoreU(hn::Sub(hn::Mul(q, weighted_mass), hn::Mul(r, tau)), d, pb.grad_logits + o);
    }
  }
  return total;
}

template <class T>
void KlDivImpl(const core::KlDivProblem<T>& pb) {
  const hn::ScalableTag<T> d;
  const hn::CappedTag<T, 1> d1;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const Geometry& g = pb.geom;
  const std::int64_t C = g.classes;
  std::vector<double> partial(static_cast<std::size_t>(span_blocks(g, 1024)), 0.0);
  for_each_span(g, 1024, [&](std::int64_t b, std::int64_t i0, std::int64_t count) {
    HWY_ALIGN T lane_sums[HWY_MAX_BYTES / sizeof(T)] = {};
    double sum = 0;
    std::int64_t j = 0;
    if (!g.class_last && g.pixels > 1) {
      const std::int64_t n = i0 / g.pixels, p0 = i0 % g.pixels;
      for (; j + N <= count; j += N) {
        hn::Store(kl_positions(d, pb, g.offset(n, 0, p0 + j), g.pixels), d, lane_sums);
        for (std::int64_t l = 0; l < N; ++l) sum += static_cast<double>(lane_sums[l]);
      }
      for (; j < count; ++j) {
        sum += static_cast<double>(hn::GetLane(kl_positions(d1, pb, g.offset(n, 0, p0 + j), g.pixels)));
      }
    } else {
      for (; j < count; ++j) {
        sum += static_cast<double>(hn::GetLane(kl_positions(d1, pb, (i0 + j) * C, 1)));
      }
    }
    partial[static_cast<std::size_t>(b)] = sum;
  });
  if (pb.out_sum) {
    double total = 0;
    for (double p : partial) total += p;
    *pb.out_sum = total;
  }
}

void KlDivF32(const core::KlDivProblem<float>& pb) { KlDivImpl(pb); }
void KlDivF64(const core::KlDivProblem<double>& pb) { KlDivImpl(pb); }
void SoftmaxBackwardF32(const core::SoftmaxBackwardProblem<float>& pb) { SoftmaxBackwardImpl(pb); }
void SoftmaxBackwardF64(const core::SoftmaxBackwardProblem<double>& pb) { SoftmaxBackwardImpl(pb); }
void CrossEntropyF32(const CrossEntropyProblem<float>& pb) { CrossEntropyImpl(pb); }
void CrossEntropyF64(const CrossEntropyProblem<double>& pb) { CrossEntropyImpl(pb); }
void SoftmaxF32(const SoftmaxProblem<float>& pb) { SoftmaxImpl(pb); }
void SoftmaxF64(const SoftmaxProblem<double>& pb) { SoftmaxImpl(pb); }
void ProbMinusTargetF32(const ProbMinusTargetProblem<float>& pb) { ProbMinusTargetImpl(pb); }
void ProbMinusTargetF64(const ProbMinusTargetProblem<double>& pb) { ProbMinusTargetImpl(pb); }

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(CrossEntropyF32);
HWY_EXPORT(CrossEntropyF64);
HWY_EXPORT(SoftmaxF32);
HWY_EXPORT(SoftmaxF64);
HWY_EXPORT(ProbMinusTargetF32);
HWY_EXPORT(ProbMinusTargetF64);
HWY_EXPORT(SoftmaxBackwardF32);
HWY_EXPORT(SoftmaxBackwardF64);
HWY_EXPORT(KlDivF32);
HWY_EXPORT(KlDivF64);
HWY_EXPORT(CountLabelsI32);
HWY_EXPORT(CountLabelsI64);

std::int64_t count_labels(const std::int32_t* y, std::int64_t n, std::int64_t classes,
                          std::optional<std::int64_t> ignore, bool* bad) {
  return HWY_DYNAMIC_DISPATCH(CountLabelsI32)(y, n, classes, ignore.has_value(), ignore.value_or(0), bad);
}
std::int64_t count_labels(const std::int64_t* y, std::int64_t n, std::int64_t classes,
                          std::optional<std::int64_t> ignore, bool* bad) {
  return HWY_DYNAMIC_DISPATCH(CountLabelsI64)(y, n, classes, ignore.has_value(), ignore.value_or(0), bad);
}

void kl_div(const core::KlDivProblem<float>& pb) { HWY_DYNAMIC_DISPATCH(KlDivF32)(pb); }
void kl_div(const core::KlDivProblem<double>& pb) { HWY_DYNAMIC_DISPATCH(KlDivF64)(pb); }

void softmax_backward(const core::SoftmaxBackwardProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftmaxBackwardF32)(pb);
}
void softmax_backward(const core::SoftmaxBackwardProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftmaxBackwardF64)(pb);
}

// The SIMD loss of probability targets ignores prob_floor (-log(max(p_c, floor))
// per class, SPEC.md 3.1; Caffe2's label_prob mode): the reference runs those.
void cross_entropy(const core::CrossEntropyProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(CrossEntropyF32)(pb);
}
void cross_entropy(const core::CrossEntropyProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(CrossEntropyF64)(pb);
}
void softmax(const core::SoftmaxProblem<float>& pb) { HWY_DYNAMIC_DISPATCH(SoftmaxF32)(pb); }
void softmax(const core::SoftmaxProblem<double>& pb) { HWY_DYNAMIC_DISPATCH(SoftmaxF64)(pb); }
void prob_minus_target(const core::ProbMinusTargetProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(ProbMinusTargetF32)(pb);
}
void prob_minus_target(const core::ProbMinusTargetProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(ProbMinusTargetF64)(pb);
}


std::vector<std::int64_t> supported_targets() {
  std::vector<std::int64_t> out;
  const std::int64_t usable = hwy::SupportedTargets() & HWY_TARGETS;
  for (int bit = 0; bit < 63; ++bit) {  // a lower bit is a better target
    const std::int64_t t = std::int64_t{1} << bit;
    if (usable & t) out.push_back(t);
  }
  return out;
}

std::int64_t active_target() {
  const std::vector<std::int64_t> targets = supported_targets();
  return targets.empty() ? 0 : targets.front();
}

std::string target_name(std::int64_t target) { return hwy::TargetName(target); }

void use_only_target_for_test(std::int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
