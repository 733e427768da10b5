// The plain tile kernel: the loss family's fast path for index targets
// without label smoothing (is_plain_index_problem).

#if defined(SPATIALSOFTMAX_CPU_PLAIN_TILES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_PLAIN_TILES_INL_H_
#undef SPATIALSOFTMAX_CPU_PLAIN_TILES_INL_H_
#else
#define SPATIALSOFTMAX_CPU_PLAIN_TILES_INL_H_
#endif

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/blocks.h"
#include "cpu/convert-inl.h"
#include "cpu/loss_setup-inl.h"
#include "cpu/math-inl.h"
#include "cpu/memory-inl.h"
#include "cpu/transpose-inl.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::CrossEntropyProblem;
using core::Geometry;

// The fast path: index targets without label smoothing, whose
// outputs are the loss, P and dX (the forward and fused calls of the usual
// segmentation loss and Caffe2's operators). The passes of run_tile, over a
// class-major copy of the tile:
// - the copy reads X from memory once, row by row. Rows of X that sit a
//   power of two apart (a 512 x 1024 image) share cache sets and would evict
//   each other between passes;
// - pass 2 keeps e in the copy and checks for NaN once per position (a NaN
//   makes every output of its position NaN, docs/semantics.md 5), not per element;
// - pass 3 writes dX = e * (k2 / sum) - k2 * onehot row by row, with
//   streaming stores when the outputs would not stay in the cache anyway.
template <class T, class S>
bool is_plain_index_problem(const LossSetup<T, S>& s) {
  const CrossEntropyProblem<S>* pb = s.pb;
  return pb && s.index && s.eps == 0 && !s.log_prob && !s.entropy && !pb->grad_prob &&
         !pb->grad_log_prob && !pb->grad_entropy;
}

template <class T>
struct PlainScratch {
  std::vector<T> x;      // the tile, class-major: X, then e, then dX (or P) when not direct
  std::vector<T> prob;   // P, when not direct and dX takes x
  std::vector<T> stage;  // a class-last tile, position-major: outputs before they are
                         // streamed, 16-bit inputs widened
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
struct PlainTerms {
  bool pixel_weight = false, class_weight = false, grad_coef = false;

  template <class S>
  explicit PlainTerms(const CrossEntropyProblem<S>& pb)
      : pixel_weight(pb.pixel_weight != nullptr),
        class_weight(pb.class_weight != nullptr),
        grad_coef(pb.grad_logits && (pb.pixel_weight || pb.class_weight || pb.grad_loss_map)) {}
};

// Per position: the label (-1 if ignored or padding), where x_y sits in the
// copy, and the terms that vary: a_i, w_y (0 if ignored) and the gradient's
// k2 = r_i a_i w_y.
template <class T, class S, class L>
void plain_positions(const CrossEntropyProblem<S>& pb, const PlainTerms& vary, const L* labels,
                     std::int64_t i0, std::int64_t count, std::int64_t width, PlainScratch<T>& sc) {
  Index<T>* label = sc.label.data();
  Index<T>* offset = sc.label_offset.data();
  // Labels were checked to be in [0, C) or the ignore_index, which L holds
  // (core::ignore_index_can_match).
  const L ignore = pb.has_ignore_index ? static_cast<L>(pb.ignore_index) : L(-1);
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
    const T a = inside && pb.pixel_weight ? AsCompute<T>(pb.pixel_weight[i]) : T(inside ? 1 : 0);
    const T wy = y < 0 ? T(0) : pb.class_weight ? AsCompute<T>(pb.class_weight[y]) : T(1);
    sc.weight[j] = a;
    sc.label_weight[j] = wy;
    const T r = !inside            ? T(0)
                : pb.grad_loss_map ? AsCompute<T>(pb.grad_loss_map[i])
                                   : static_cast<T>(pb.grad_loss_scale);
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

// Positions [i0, i0 + count) whose class c element is at
// base + c * cstride + j * pstride. Direct when pixels are unit-stride and
// count fills whole vectors: the copy is row by row and the outputs go
// straight to memory; else through the copy, transposed element by element.
// `next` is the next tile's X at the same strides (its class 0, position
// 0) and next_count its positions, prefetched during pass 2; or null.
// S is the problem's element type: T, or a 16-bit type, widened as the tile
// is copied and narrowed as the outputs are written (memory sees 16 bits).
template <class T, class S>
void plain_tile(const LossSetup<T, S>& s, const Geometry& g, const S* logits, std::int64_t i0,
                std::int64_t count, std::int64_t base, std::int64_t cstride, std::int64_t pstride,
                double* loss_partial, bool stream, const S* next, std::int64_t next_count) {
  const hn::ScalableTag<T> d;
  const hn::RebindToSigned<decltype(d)> di;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t C = g.classes;
  const CrossEntropyProblem<S>& pb = *s.pb;
  const PlainTerms vary(pb);
  const bool want_loss = s.want_loss, want_grad = s.want_grad, want_prob = s.prob != nullptr;
  const bool direct = pstride == 1 && count % N == 0;
  const std::int64_t W = round_up(count, N);
  PlainScratch<T>& sc = plain_scratch<T>();
  sc.resize(C, W, !direct && want_grad && want_prob);
  T* xs = sc.x.data();

  if (direct) {
    for (std::int64_t c = 0; c < C; ++c) {
      const S* row = logits + base + c * cstride;
      T* copy = xs + c * W;
      for (std::int64_t j = 0; j < W; j += N) hn::StoreU(LoadWide(d, row + j), d, copy + j);
    }
  } else {
    if (cstride == 1) {  // class last
      if constexpr (std::is_same_v<S, T>) {
        class_last_inputs(logits + base, count, C, xs, W);
      } else {
        sc.stage.resize(static_cast<std::size_t>(count * C));
        widen_array(logits + base, sc.stage.data(), count * C);
        class_last_inputs(sc.stage.data(), count, C, xs, W);
      }
    } else {
      for (std::int64_t j = 0; j < count; ++j) {
        const S* src = logits + base + j * pstride;
        for (std::int64_t c = 0; c < C; ++c) xs[c * W + j] = AsCompute<T>(src[c * cstride]);
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
  constexpr std::int64_t kLine = 64 / static_cast<std::int64_t>(sizeof(S));
  const auto prefetch = [&](std::int64_t j, std::int64_t c) {
    const std::int64_t k = direct ? c * cstride + j : (j / hn::Lanes(d) * C + c) * N;
    const bool inside = direct ? j < next_count : k < next_count * C;
    if (k % kLine < N && inside) prefetch_line(next + k);
  };
  // And its labels (the next positions), the lines of N of them per vector
  // of positions: with few classes they are as many bytes as X.
  const std::size_t label_bytes = pb.labels.dtype == DType::kInt32 ? 4 : 8;
  const auto* next_labels = static_cast<const char*>(pb.labels.data) +
                            (i0 + count) * static_cast<std::int64_t>(label_bytes);
  const std::int64_t next_label_bytes = next_count * static_cast<std::int64_t>(label_bytes);
  const auto prefetch_labels = [&](std::int64_t j) {
    const std::int64_t from = j * static_cast<std::int64_t>(label_bytes);
    const std::int64_t to =
        std::min(from + N * static_cast<std::int64_t>(label_bytes), next_label_bytes);
    for (std::int64_t b = from; b < to; b += 64) prefetch_line(next_labels + b);
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
        hn::StoreU(hn::Sub(hn::GatherIndex(d, xs, hn::LoadU(di, sc.label_offset.data() + at)), m),
                   d, label_shifts + at);
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

  const V grad_coef = hn::Set(d, static_cast<T>(pb.grad_loss_scale));  // when it does not vary
  const bool floor = pb.prob_floor > 0;
  const V floor_v = hn::Set(d, static_cast<T>(pb.prob_floor));
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
    const auto valid =
        hn::RebindMask(d, hn::Gt(hn::LoadU(di, labels_in + j), hn::Set(di, Index<T>(-1))));
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

  // Pass 3, row by row: P = e / sum and dX = e * (k2 / sum) - k2 * onehot,
  // into the outputs (S) when direct, else into the copy (T) and scattered.
  if (keep_e) {
    const std::int64_t out_stride = direct ? cstride : W;
    // Local pointers: the compiler cannot tell that the output rows do not
    // alias the vectors' own pointers, and would reload those per vector.
    const T* const inv_sums = sc.inv_sum.data();
    const T* const grad_scales = sc.grad_scale.data();
    const T* const grad_coefs = sc.grad_coef.data();
    const Index<T>* const labels = sc.label.data();
    const auto rows = [&]<bool kStream, bool kProb, bool kGrad, bool kVaryCoef>(auto* dx,
                                                                                auto* prob) {
      for (std::int64_t c = 0; c < C; ++c) {
        const T* e_row = xs + c * W;
        auto* p_row = kProb ? prob + c * out_stride : nullptr;
        auto* g_row = kGrad ? dx + c * out_stride : nullptr;
        const auto class_c = hn::Set(di, static_cast<Index<T>>(c));
        for (std::int64_t j = 0; j < W; j += N) {
          const V e = hn::LoadU(d, e_row + j);
          if constexpr (kProb)
            StoreNarrow<kStream>(hn::Mul(e, hn::LoadU(d, inv_sums + j)), d, p_row + j);
          if constexpr (kGrad) {
            const auto is_label = hn::RebindMask(d, hn::Eq(hn::LoadU(di, labels + j), class_c));
            const V k2 = kVaryCoef ? hn::LoadU(d, grad_coefs + j) : grad_coef;
            StoreNarrow<kStream>(
                hn::MulSub(e, hn::LoadU(d, grad_scales + j), hn::IfThenElseZero(is_label, k2)), d,
                g_row + j);
          }
        }
      }
    };
    const auto rows_of = [&]<bool kStream>(auto* dx, auto* prob) {
      if (!dx) return rows.template operator()<kStream, true, false, false>(dx, prob);
      const auto with_grad = [&]<bool kProb>() {
        if (vary.grad_coef) return rows.template operator()<kStream, kProb, true, true>(dx, prob);
        rows.template operator()<kStream, kProb, true, false>(dx, prob);
      };
      if (prob) return with_grad.template operator()<true>();
      with_grad.template operator()<false>();
    };
    // Staged position-major outputs: copied out (narrowed to S), streamed
    // where the outputs would not stay in the cache anyway.
    const auto write_staged = [&](const auto* from, auto* to, std::int64_t n) {
      if (stream) {
        stream_array(from, to, n);
      } else {
        narrow_array(from, to, n);
      }
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
          const auto k2 = vary.grad_coef ? hn::LoadU(dd, grad_coefs + j)
                                         : hn::Set(dd, static_cast<T>(pb.grad_loss_scale));
          return hn::MulSub(e, hn::LoadU(dd, grad_scales + j), hn::IfThenElseZero(is_label, k2));
        };
        const auto emit = [&](const auto& value, S* to) {
          if constexpr (std::is_same_v<S, T>) {
            if (!stream) return class_last_outputs(xs, W, count, C, to + base, value);
          }
          // Contiguous: staged, then streamed (or narrowed).
          sc.stage.resize(static_cast<std::size_t>(count * C));
          class_last_outputs(xs, W, count, C, sc.stage.data(), value);
          write_staged(sc.stage.data(), to + base, count * C);
        };
        if (want_prob) emit(prob_of, s.prob);
        if (want_grad) emit(grad_of, pb.grad_logits);
        written = true;
      }
    }
#endif
    if (!written && direct) {
      S* const dx = want_grad ? pb.grad_logits + base : nullptr;
      S* const prob = want_prob ? s.prob + base : nullptr;
      // Streaming needs every row aligned to a (stored) vector.
      const std::size_t align = static_cast<std::size_t>(N) * sizeof(S);
      const auto aligned = [&](const S* p) {
        return !p || (reinterpret_cast<std::uintptr_t>(p) % align == 0 &&
                      (C == 1 || static_cast<std::size_t>(out_stride) * sizeof(S) % align == 0));
      };
      if (stream && aligned(dx) && aligned(prob)) {
        rows_of.template operator()<true>(dx, prob);
        hwy::FlushStream();
      } else {
        rows_of.template operator()<false>(dx, prob);
      }
    } else if (!written) {
      T* const dx = want_grad ? xs : nullptr;
      T* const prob = want_prob ? (want_grad ? sc.prob.data() : xs) : nullptr;
      rows_of.template operator()<false>(dx, prob);
      const auto scatter = [&](const T* buf, S* to) {
        if (cstride == 1 && (stream || !std::is_same_v<S, T>)) {
          // class last: contiguous, so staged and streamed (or narrowed)
          sc.stage.resize(static_cast<std::size_t>(count * C));
          transpose<false>(buf, W, sc.stage.data(), C, C, count);
          return write_staged(sc.stage.data(), to + base, count * C);
        }
        if constexpr (std::is_same_v<S, T>) {
          if (cstride == 1) return transpose<false>(buf, W, to + base, pstride, C, count);
        }
        for (std::int64_t j = 0; j < count; ++j) {
          S* dst = to + base + j * pstride;
          for (std::int64_t c = 0; c < C; ++c) dst[c * cstride] = AsStored<S>(buf[c * W + j]);
        }
      };
      if (want_grad) scatter(dx, pb.grad_logits);
      if (want_prob) scatter(prob, s.prob);
    }
  }

  if (want_loss) {
    if (pb.loss_map) {
      for (std::int64_t j = 0; j < count; ++j) pb.loss_map[i0 + j] = AsStored<S>(losses[j]);
    }
    *loss_partial = float64_sum(losses, W);  // padding lanes hold 0
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_PLAIN_TILES_INL_H_ toggle
