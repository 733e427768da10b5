// The tile kernel of the loss family (cross-entropy and softmax): lanes
// are positions, the class loop walks the rows of a class-major tile, the
// three passes of cross_entropy.cc run over one tile.

#if defined(SPATIALSOFTMAX_CPU_TILES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_TILES_INL_H_
#undef SPATIALSOFTMAX_CPU_TILES_INL_H_
#else
#define SPATIALSOFTMAX_CPU_TILES_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/blocks.h"
#include "cpu/loss_setup-inl.h"
#include "cpu/math-inl.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::CrossEntropyProblem;
using core::Geometry;

// A class-major tile: element (c, j) of X at x[c * stride + j]; outputs and
// soft targets share the stride. width is a multiple of the lane count.
template <class T>
struct TileView {
  const T* x = nullptr;
  const T* soft = nullptr;
  const T* grad_prob = nullptr;  // upstream gradients of P and log P
  const T* grad_log_prob = nullptr;
  T* dx = nullptr;
  T* prob = nullptr;
  T* log_prob = nullptr;
  std::int64_t stride = 0;
  std::int64_t width = 0;
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

// The three passes over one tile. Writes the per-position losses into
// t.loss and entropies into `entropy` (if given, length width).
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
    // block by block (rows-inl.h's kRowSumChain says why); each block's
    // first add assigns, so totals is zeroed once per tile.
    std::int64_t block = 0;
    const auto end_block = [&](V& lanes, double* total) {
      if (!blocked) return;
      HWY_ALIGN T lane[kMaxLanes<T>];
      hn::Store(lanes, d, lane);
      for (std::int64_t l = 0; l < N; ++l)
        total[l] = (block ? total[l] : 0.0) + static_cast<double>(lane[l]);
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
        if (smoothing)
          weighted_shift = hn::MulAdd(hn::Set(d, s.class_weight(c)), shifted, weighted_shift);
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
          e_shift =
              hn::Add(e_shift, hn::IfThenZeroElse(hn::Eq(e, hn::Zero(d)), hn::Mul(e, shifted)));
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
          const V smooth =
              hn::Sub(hn::Mul(hn::Set(d, s.class_weight_sum), log_sum), weighted_shift);
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
        V term =
            hn::Mul(hn::Mul(hn::Set(d, s.class_weight(c)), target), hn::Neg(LogKeepNaN(d, kept)));
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
        g = AddUpstream(d, upstreams, g, p, log_p, up_p ? hn::LoadU(d, v.grad_prob + o) : none,
                        dot_p, up_l ? hn::LoadU(d, v.grad_log_prob + o) : none, sum_grad_l,
                        up_h ? hn::LoadU(d, t.grad_entropy.data() + j) : none, h);
      }
      hn::StoreU(g, d, v.dx + o);
    }
    if (soft_floor && s.want_loss) hn::StoreU(hn::Mul(a, floored), d, t.loss.data() + j);
  }
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
  LossScratch<T>& sc = loss_scratch<T>();
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
        for (std::int64_t j = 0; j < count; ++j)
          buf[c * W + j] = src[base + c * cstride + j * pstride];
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
        for (std::int64_t j = 0; j < count; ++j)
          dst[base + c * cstride + j * pstride] = buf[c * W + j];
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

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_TILES_INL_H_ toggle
