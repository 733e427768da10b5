// The loss family: cross-entropy (and NLL over given log-probabilities) and
// softmax / log_softmax / entropy, by tiles (tiles-inl.h, plain_tiles-inl.h)
// or rows (rows-inl.h) in blocks of work run in parallel.
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
// clang-format on

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/blocks.h"
#include "cpu/convert-inl.h"
#include "cpu/kernels.h"
#include "cpu/labels-inl.h"
#include "cpu/loss_setup-inl.h"
#include "cpu/memory-inl.h"
#include "cpu/plain_tiles-inl.h"
#include "cpu/rows-inl.h"
#include "cpu/tiles-inl.h"
#include "parallel/thread_pool.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::CrossEntropyProblem;
using core::Geometry;
using core::SoftmaxProblem;

// Whether positions are processed as rows with classes in lanes.
template <class T>
bool use_rows(const Geometry& g) {
  const bool contiguous_classes = g.class_last || g.pixels == 1;
  return contiguous_classes && g.classes >= kRowClasses;
}

// The plain tiles (is_plain_index_problem) over every position, in
// parallel: a loss partial per tile. S: the problem's element type (T, or
// 16 bits read and written by the tiles themselves).
template <class T, class S>
void run_plain_tiles(const LossSetup<T, S>& s, const Geometry& g, const S* logits,
                     std::vector<double>& partial) {
  const std::int64_t C = g.classes;
  const std::int64_t W = tile_width<T>(C);
  partial.assign(static_cast<std::size_t>(span_blocks(g, W)), 0.0);
  const std::int64_t outputs = (s.want_grad ? 1 : 0) + (s.prob ? 1 : 0);
  const bool stream = streams(outputs * g.positions() * C * static_cast<std::int64_t>(sizeof(S)));
  const bool class_first = !(g.class_last || g.pixels == 1);
  // Where position i's class 0 sits: a tile's base.
  const auto base_of = [&](std::int64_t i) {
    return class_first ? g.offset(i / g.pixels, 0, i % g.pixels) : i * C;
  };
  BlockLabelChecks checks(s.pb->label_check, span_blocks(g, W));
  for_each_span(g, W, [&](std::int64_t b, std::int64_t i0, std::int64_t count) {
    if (!checks.pass(s.pb, b, i0, count)) return;
    const std::int64_t cstride = class_first ? g.pixels : 1, pstride = class_first ? 1 : C;
    // Tiles are consecutive: the next one starts at i0 + count.
    const std::int64_t i1 = i0 + count;
    const std::int64_t next_count = std::min(W, g.positions() - i1);
    const S* next = i1 < g.positions() ? logits + base_of(i1) : nullptr;
    plain_tile(s, g, logits, i0, count, base_of(i0), cstride, pstride,
               &partial[static_cast<std::size_t>(b)], stream, next, next_count);
  });
  checks.finish();
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
    const auto aligned = [&](const T* p) {
      return !p || reinterpret_cast<std::uintptr_t>(p) % vector_bytes == 0;
    };
    const bool stream_rows =
        stream && static_cast<std::size_t>(C) % hn::Lanes(d) == 0 && aligned(dx) && aligned(s.prob);
    parallel::for_each_block(blocks, [&](std::int64_t b) {
      LossScratch<T>& sc = loss_scratch<T>();
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
        const T* const next = i + 1 < rows ? logits + o + C : nullptr;
        if (stream_rows) {
          run_row<true>(s, C, i, logits + o, next, row(soft), row(grad_prob), row(grad_log_prob),
                        dx_row, prob_row, log_prob_row, sc.e, &l);
        } else {
          run_row<false>(s, C, i, logits + o, next, row(soft), row(grad_prob), row(grad_log_prob),
                         dx_row, prob_row, log_prob_row, sc.e, &l);
        }
        sum += l;
      }
      if (stream_rows) {
        hwy::FlushStream();
      } else if (stream) {
        if (dx) stream_array(dx_rows, dx + first * C, count * C);
        if (s.prob) stream_array(prob_rows, s.prob + first * C, count * C);
      }
      partial[static_cast<std::size_t>(b)] = sum;
    });
    checks.finish();
  } else if (is_plain_index_problem(s)) {
    run_plain_tiles(s, g, logits, partial);
  } else {
    const std::int64_t W = tile_width<T>(C);
    partial.assign(static_cast<std::size_t>(span_blocks(g, W)), 0.0);
    const bool class_first = !(g.class_last || g.pixels == 1);
    const auto base_of = [&](std::int64_t i) {
      return class_first ? g.offset(i / g.pixels, 0, i % g.pixels) : i * C;
    };
    BlockLabelChecks checks(label_check, span_blocks(g, W));
    for_each_span(g, W, [&](std::int64_t b, std::int64_t i0, std::int64_t count) {
      if (!checks.pass(s.pb, b, i0, count)) return;
      const std::int64_t cstride = class_first ? g.pixels : 1, pstride = class_first ? 1 : C;
      tile_positions(s, g, logits, i0, count, base_of(i0), cstride, pstride,
                     &partial[static_cast<std::size_t>(b)]);
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
void nll_impl(const CrossEntropyProblem<T>& pb) {
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
void cross_entropy_impl(const CrossEntropyProblem<T>& pb) {
  if (pb.logits_are_log_probs) return nll_impl(pb);
  const LossSetup<T> s = make_setup(pb);
  const double total = run_loss_family(s, pb.geom, pb.logits, pb.target_probs);
  if (pb.loss_sum) *pb.loss_sum = total;
}

template <class T>
void softmax_impl(const SoftmaxProblem<T>& pb) {
  const LossSetup<T> s = make_setup(pb);
  (void)run_loss_family(s, pb.geom, pb.logits, static_cast<const T*>(nullptr));
}

// 16-bit problems that the plain tiles run (false: another kernel would,
// and nothing was written).
template <class S>
bool cross_entropy_16_bit_impl(const CrossEntropyProblem<S>& pb) {
  if (pb.logits_are_log_probs || use_rows<float>(pb.geom)) return false;
  const LossSetup<float, S> s = make_setup(pb);
  if (!is_plain_index_problem(s)) return false;
  std::vector<double> partial;
  run_plain_tiles(s, pb.geom, pb.logits, partial);
  if (pb.loss_sum) {
    double total = 0;
    for (double p : partial) total += p;
    *pb.loss_sum = total;
  }
  return true;
}

void CrossEntropyF32(const CrossEntropyProblem<float>& pb) { cross_entropy_impl(pb); }
bool CrossEntropyBF16(const CrossEntropyProblem<BFloat16>& pb) {
  return cross_entropy_16_bit_impl(pb);
}
bool CrossEntropyF16(const CrossEntropyProblem<Float16>& pb) {
  return cross_entropy_16_bit_impl(pb);
}
void CrossEntropyF64(const CrossEntropyProblem<double>& pb) { cross_entropy_impl(pb); }
void SoftmaxF32(const SoftmaxProblem<float>& pb) { softmax_impl(pb); }
void SoftmaxF64(const SoftmaxProblem<double>& pb) { softmax_impl(pb); }

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(CrossEntropyF32);
HWY_EXPORT(CrossEntropyF64);
HWY_EXPORT(CrossEntropyBF16);
HWY_EXPORT(CrossEntropyF16);
HWY_EXPORT(SoftmaxF32);
HWY_EXPORT(SoftmaxF64);

void cross_entropy(const core::CrossEntropyProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(CrossEntropyF32)(pb);
}
void cross_entropy(const core::CrossEntropyProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(CrossEntropyF64)(pb);
}
bool cross_entropy(const core::CrossEntropyProblem<BFloat16>& pb) {
  return HWY_DYNAMIC_DISPATCH(CrossEntropyBF16)(pb);
}
bool cross_entropy(const core::CrossEntropyProblem<Float16>& pb) {
  return HWY_DYNAMIC_DISPATCH(CrossEntropyF16)(pb);
}
void softmax(const core::SoftmaxProblem<float>& pb) { HWY_DYNAMIC_DISPATCH(SoftmaxF32)(pb); }
void softmax(const core::SoftmaxProblem<double>& pb) { HWY_DYNAMIC_DISPATCH(SoftmaxF64)(pb); }

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
