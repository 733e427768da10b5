// The spatial softmax and soft-argmax (docs/semantics.md 4) as Highway kernels, written
// once and compiled for every target of HWY_TARGETS; the best one the CPU
// supports is chosen at run time (foreach_target + HWY_DYNAMIC_DISPATCH). No
// -march flag is used.
//
// Each channel (n, c) takes three passes over its P pixels:
//  1. the max, and whether a NaN occurs;
//  2. e = exp(beta * (x - max)) and, in float64, sum e, sum e u_a, sum e u_a u_b
//     (covariance) and sum e dS (backward with grad_softmax);
//  3. what needs those totals: S = e / sum e, or dX and the d loss / d beta terms.
//
// Coordinates. The fastest spatial axes, merged until a row holds kMinRow
// pixels, vary within a row: their coordinates and products are tables of one
// row. The slower axes are constant along a row and enter once per row (fold),
// so per pixel pass 2 is a few dot products of e with tables, for any k.
// In the backward, h_p (docs/semantics.md 4) is written as a quadratic in d_a = u_a - E_a;
// the parts that are constant per channel cancel in h_p - sum_q S_q h_q, and
// that mean is sum S dS + sum_ab G_ab cov_ab, known after pass 2: pass 3 is a
// single pass.
//
// Layouts. Channel axis first: a channel's pixels are contiguous and sit in
// lanes. Channel axis last: passes 1 and 3 put channels in lanes (the max is
// exact in any order, pass 3 is elementwise); pass 2 copies each piece of a
// row, for a group of channels, into channel-major scratch and runs the
// channel-first code on it. Both layouts thus round alike and give bitwise
// equal outputs (tests/test_properties.cc, LayoutTest): every sum has one
// order, fixed by the pixel index, the target and the shape.
//
// Precision. float32: exp in float32 (Highway's Exp, math-inl.h's
// ExpShifted: at most 1.03 ulp, measured; 0 below -104, so values under
// FLT_MIN may flush, as docs/semantics.md 5 allows), every sum over pixels and the
// backward per element in float64, rounded to float32 once.
// float64: everything in float64.
//
// Determinism. Blocks are runs of channels (channel first) or runs of images
// times a group of channels (channel last), fixed by the shape. d loss / d beta
// is kept per channel and summed in channel order, so every output is bitwise
// identical for any thread count.
//
// Non-finite inputs, as the reference: a channel with a NaN, a +inf or only
// -inf values has NaN outputs; -inf values next to a finite max get S = 0 (and,
// as in the reference, make d loss / d beta NaN: 0 * (-inf)).

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/spatial_soft_argmax.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/spatial_axes-inl.h"
#include "cpu/spatial_passes-inl.h"
#include "cpu/transpose-inl.h"
#include "parallel/thread_pool.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::SpatialSoftArgmaxProblem;

// A block holds runs of channels or images of at least this many elements.
constexpr std::int64_t kBlockElements = std::int64_t{1} << 14;
// Channel last: a block's group of channels is up to 256 bytes of a pixel.
// Whole cache lines per block: with 64-byte groups, two blocks wrote halves
// of each pixel's lines and (8, 32, 128, 128) did not speed up on 2 threads.
constexpr std::int64_t kGroupBytes = 256;

// Copies n pixels x G channels of a channel-last piece (pixel i's channels at
// src + i * C) to channel-major dst (channel c's n pixels at dst + c * n).
template <class T>
void transpose_channels(const T* src, std::int64_t C, std::int64_t n, std::int64_t G, T* dst) {
  transpose<true>(src, C, dst, n, n, G);
}

// Per-thread buffers, kept between calls.
template <class T>
struct SpatialScratch {
  std::vector<T> e, xs, ds, max, nan, ebuf, inv;
  std::vector<double> lanes;  // channel last: per-channel coefficients, d loss / d beta slots
  std::vector<Channel> ch;
};

template <class T>
SpatialScratch<T>& spatial_scratch() {
  thread_local SpatialScratch<T> s;
  return s;
}

template <class V>
void grow(std::vector<V>& v, std::int64_t n) {
  if (v.size() < static_cast<std::size_t>(n)) v.resize(static_cast<std::size_t>(n));
}

// --- channel axis first: pixels in lanes -----------------------------------------------

// Pass 3 of the backward for channel nc, whose e is in grad_input; returns its
// d loss / d beta: whole vectors of each row into one vector sum (lanes by
// row position), the rows' last elements into a scalar.
template <class T>
double backward_rows(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, std::int64_t nc,
                     Channel& ch) {
  const hn::ScalableTag<double> d;
  const hn::CappedTag<double, 1> d1;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t P = ax.pixels, L = ax.row;
  const T* x = pb.input + nc * P;
  T* g = pb.grad_input + nc * P;
  const T* ds = pb.grad_softmax ? pb.grad_softmax + nc * P : nullptr;
  const auto element = [&](auto dd, std::int64_t p, std::int64_t j) {
    auto h = hn::Set(dd, ch.cst);
    if (ds) h = hn::Add(h, LoadWide(dd, ds + p));
    if (ax.first) {
      h = Quadratic(
          dd, ax, h,
          [&](int a) { return hn::Sub(hn::LoadU(dd, ax.u(a) + j), hn::Set(dd, ch.kp[a])); },
          [&](int a) { return hn::Set(dd, ch.lin[a]); },
          [&](int a, int b) { return hn::Set(dd, ch.gp[a][b]); });
    }
    return BackwardElement(dd, LoadWide(dd, g + p), hn::Set(dd, ch.inv), h, hn::Set(dd, ch.mean),
                           hn::Set(dd, pb.beta), LoadWide(dd, x + p), hn::Set(dd, ch.max), g + p);
  };
  auto acc = hn::Zero(d);
  double tail = 0;
  double v[kMaxK] = {};
  for (std::int64_t r = 0; r < P / L; ++r) {
    if (ax.first) {
      ax.outer(r, v);
      row_terms(ax, v, ch);
    }
    std::int64_t j = 0;
    for (; j + lanes <= L; j += lanes) acc = hn::Add(acc, element(d, r * L + j, j));
    for (; j < L; ++j) tail += hn::GetLane(element(d1, r * L + j, j));
  }
  return SumLanes(d, acc) + tail;
}

// Channels [nc0, nc1) (index n * C + c); d loss / d beta of channel nc into grad_beta[nc].
template <class T>
void channels_first(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, bool backward,
                    std::int64_t nc0, std::int64_t nc1, double* grad_beta) {
  const std::int64_t P = ax.pixels;
  SpatialScratch<T>& s = spatial_scratch<T>();
  grow(s.e, std::min(ax.row, kChunk));
  const T beta = static_cast<T>(pb.beta);
  double rs[kMaxSums], v[kMaxK] = {};
  for (std::int64_t nc = nc0; nc < nc1; ++nc) {
    const T* x = pb.input + nc * P;
    // e is kept where the output goes; pass 3 rewrites it in place.
    T* keep = backward ? pb.grad_input + nc * P : pb.softmax ? pb.softmax + nc * P : nullptr;
    const T* ds = backward && pb.grad_softmax ? pb.grad_softmax + nc * P : nullptr;
    Channel ch;
    bool nan = false;
    const T max = max_of(x, P, nan);
    ch.max = max;
    ch.bad = nan || !std::isfinite(max);
    for_each_piece(ax, [&](std::int64_t r, std::int64_t j, std::int64_t p, std::int64_t n) {
      T* e = keep ? keep + p : s.e.data();
      exp_row(x + p, n, max, beta, e);
      const double gs = piece_sums(ax, e, ds ? ds + p : nullptr, j, n, rs);
      ax.outer(r, v);
      fold(ax, rs, v, ch);
      ch.gs += gs;
    });
    finish(ax, ch);
    if (!backward) {
      write_outputs(pb, ax, nc, ch);
      if (keep) scale(keep, P, static_cast<T>(ch.inv));
      continue;
    }
    upstream(pb, ax, nc, ch);
    grad_beta[nc] = backward_rows(pb, ax, nc, ch);
  }
}

// --- channel axis last: channels in lanes -----------------------------------------------

// Images [n0, n1), channels [c0, c0 + G) of each. The same arithmetic as
// channels_first, channel by channel (see the top of the file).
template <class T>
void channels_last(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, bool backward,
                   std::int64_t n0, std::int64_t n1, std::int64_t c0, std::int64_t G,
                   double* grad_beta) {
  const hn::ScalableTag<T> dt;
  const hn::ScalableTag<double> d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t P = ax.pixels, C = pb.geom.classes, L = ax.row;
  const std::int64_t piece = std::min(ax.row, kChunk);
  const bool with_ds = backward && pb.grad_softmax;
  SpatialScratch<T>& s = spatial_scratch<T>();
  grow(s.e, piece);
  grow(s.xs, piece * G);
  if (with_ds) grow(s.ds, piece * G);
  grow(s.max, G);
  grow(s.nan, G);
  grow(s.ebuf, G);
  grow(s.inv, G);
  grow(s.ch, G);
  T* const max = s.max.data();
  T* const nan = s.nan.data();
  Channel* const ch = s.ch.data();
  const T beta = static_cast<T>(pb.beta);
  double rs[kMaxSums], v[kMaxK] = {};
  for (std::int64_t n = n0; n < n1; ++n) {
    const std::int64_t image = n * P * C + c0, nc0 = n * C + c0;
    const T* x = pb.input + image;  // pixel p's channels at x + p * C
    const T* ds = with_ds ? pb.grad_softmax + image : nullptr;

    std::fill(max, max + G, -std::numeric_limits<T>::infinity());
    std::fill(nan, nan + G, T(0));
    for (std::int64_t p = 0; p < P; ++p) {
      const T* xp = x + p * C;
      ForEachVector(dt, G, [&](auto dd, std::int64_t c) {
        const auto val = hn::LoadU(dd, xp + c);
        hn::StoreU(hn::Max(hn::LoadU(dd, max + c), val), dd, max + c);
        hn::StoreU(hn::Or(hn::LoadU(dd, nan + c), hn::VecFromMask(dd, hn::Not(hn::Eq(val, val)))),
                   dd, nan + c);
      });
    }
    for (std::int64_t c = 0; c < G; ++c) {
      ch[c] = Channel();
      ch[c].max = max[c];
      ch[c].bad = std::isnan(nan[c]) || !std::isfinite(max[c]);  // nan[c]: all bits or none
    }

    for_each_piece(ax, [&](std::int64_t r, std::int64_t j, std::int64_t p, std::int64_t len) {
      T* xs = s.xs.data();
      T* dss = s.ds.data();
      transpose_channels(x + p * C, C, len, G, xs);
      if (ds) transpose_channels(ds + p * C, C, len, G, dss);
      ax.outer(r, v);
      for (std::int64_t c = 0; c < G; ++c) {
        exp_row(xs + c * len, len, max[c], beta, s.e.data());
        const double gs = piece_sums(ax, s.e.data(), ds ? dss + c * len : nullptr, j, len, rs);
        fold(ax, rs, v, ch[c]);
        ch[c].gs += gs;
      }
    });
    for (std::int64_t c = 0; c < G; ++c) finish(ax, ch[c]);

    if (!backward) {
      for (std::int64_t c = 0; c < G; ++c) write_outputs(pb, ax, nc0 + c, ch[c]);
      if (!pb.softmax) continue;
      T* const inv = s.inv.data();
      for (std::int64_t c = 0; c < G; ++c) inv[c] = static_cast<T>(ch[c].inv);
      T* out = pb.softmax + image;
      for (std::int64_t p = 0; p < P; ++p) {
        ForEachVector(dt, G, [&](auto dd, std::int64_t c) {
          const auto e = ExpShifted(dd, hn::LoadU(dd, x + p * C + c), hn::LoadU(dd, max + c),
                                    hn::Set(dd, beta));
          hn::StoreU(hn::Mul(e, hn::LoadU(dd, inv + c)), dd, out + p * C + c);
        });
      }
      continue;
    }

    // Backward: per-channel coefficients in lanes, then pass 3 pixel by pixel.
    for (std::int64_t c = 0; c < G; ++c) upstream(pb, ax, nc0 + c, ch[c]);
    const int pairs = ax.second ? ax.inner * (ax.inner + 1) / 2 : 0;
    const int inner = ax.first ? ax.inner : 0;
    // Rows of G: inv, mean, max, cst, kp_a, lin_a (a < inner), gp pairs; then
    // the d loss / d beta sums: one per lane of backward_rows, and its tail.
    const std::int64_t coefficients = 4 + 2 * inner + pairs, slots = lanes + 1;
    grow(s.lanes, (coefficients + slots) * G);
    double* const inv = s.lanes.data();
    double* const mean = inv + G;
    double* const max64 = mean + G;
    double* const cst = max64 + G;
    double* const kp = cst + G;
    double* const lin = kp + inner * G;
    double* const gp = lin + inner * G;
    double* const acc = gp + pairs * G;
    std::fill(acc, acc + slots * G, 0.0);
    int pair[kMaxK][kMaxK] = {};
    for (int a = 0, q = 0; a < ax.inner && ax.second; ++a) {
      for (int b = a; b < ax.inner; ++b) pair[a][b] = q++;
    }
    for (std::int64_t c = 0; c < G; ++c) {
      inv[c] = ch[c].inv;
      mean[c] = ch[c].mean;
      max64[c] = ch[c].max;
      cst[c] = ch[c].cst;
      for (int a = 0; a < inner; ++a) kp[a * G + c] = ch[c].kp[a];
      for (int a = 0; a < ax.inner && ax.second; ++a) {
        for (int b = a; b < ax.inner; ++b) gp[pair[a][b] * G + c] = ch[c].gp[a][b];
      }
    }
    const std::int64_t body = L - L % lanes;  // row positions backward_rows takes in whole vectors
    T* const ebuf = s.ebuf.data();
    for (std::int64_t r = 0; r < P / L; ++r) {
      if (ax.first) {
        ax.outer(r, v);
        for (std::int64_t c = 0; c < G; ++c) {
          row_terms(ax, v, ch[c]);
          cst[c] = ch[c].cst;
          for (int a = 0; a < inner; ++a) lin[a * G + c] = ch[c].lin[a];
        }
      }
      for (std::int64_t j = 0; j < L; ++j) {
        const std::int64_t at = (r * L + j) * C;
        const T* xp = x + at;
        const T* dp = ds ? ds + at : nullptr;
        T* out = pb.grad_input + image + at;
        ForEachVector(dt, G, [&](auto dd, std::int64_t c) {
          hn::StoreU(
              ExpShifted(dd, hn::LoadU(dd, xp + c), hn::LoadU(dd, max + c), hn::Set(dd, beta)), dd,
              ebuf + c);
        });
        double* slot = acc + (j < body ? j % lanes : lanes) * G;
        ForEachVector(d, G, [&](auto dd, std::int64_t c) {
          auto h = hn::LoadU(dd, cst + c);
          if (dp) h = hn::Add(h, LoadWide(dd, dp + c));
          if (ax.first) {
            h = Quadratic(
                dd, ax, h,
                [&](int a) {
                  return hn::Sub(hn::Set(dd, ax.u(a)[j]), hn::LoadU(dd, kp + a * G + c));
                },
                [&](int a) { return hn::LoadU(dd, lin + a * G + c); },
                [&](int a, int b) { return hn::LoadU(dd, gp + pair[a][b] * G + c); });
          }
          const auto term = BackwardElement(
              dd, LoadWide(dd, ebuf + c), hn::LoadU(dd, inv + c), h, hn::LoadU(dd, mean + c),
              hn::Set(dd, pb.beta), LoadWide(dd, xp + c), hn::LoadU(dd, max64 + c), out + c);
          hn::StoreU(hn::Add(hn::LoadU(dd, slot + c), term), dd, slot + c);
        });
      }
    }
    for (std::int64_t c = 0; c < G; ++c) {
      double g = acc[c];
      for (std::int64_t l = 1; l < lanes; ++l) g += acc[l * G + c];
      grad_beta[nc0 + c] = g + acc[lanes * G + c];
    }
  }
}

// --- problems ------------------------------------------------------------------------

template <class T>
void soft_argmax_impl(const SpatialSoftArgmaxProblem<T>& pb, bool backward) {
  const core::Geometry& g = pb.geom;
  const std::int64_t N = g.batch, C = g.classes, P = g.pixels, channels = N * C;
  if (pb.grad_beta) *pb.grad_beta = 0;
  if (channels == 0) return;
  if (P == 0) {  // empty sums: keypoints and covariance 0, as the reference
    const std::int64_t k = pb.spatial_rank;
    if (pb.keypoints) std::fill(pb.keypoints, pb.keypoints + channels * k, T(0));
    if (pb.covariance) std::fill(pb.covariance, pb.covariance + channels * k * k, T(0));
    return;
  }
  const Axes ax = make_axes(pb, backward);
  std::vector<double> grad_beta(static_cast<std::size_t>(backward ? channels : 0));
  if (!g.class_last) {
    const std::int64_t run = std::max<std::int64_t>(1, kBlockElements / P);
    parallel::for_each_block((channels + run - 1) / run, [&](std::int64_t b) {
      channels_first(pb, ax, backward, b * run, std::min(channels, (b + 1) * run),
                     grad_beta.data());
    });
  } else {
    const std::int64_t G = std::min(C, kGroupBytes / static_cast<std::int64_t>(sizeof(T)));
    const std::int64_t groups = (C + G - 1) / G;
    const std::int64_t run = std::max<std::int64_t>(1, kBlockElements / (P * G));
    parallel::for_each_block((N + run - 1) / run * groups, [&](std::int64_t b) {
      const std::int64_t n0 = b / groups * run, c0 = b % groups * G;
      channels_last(pb, ax, backward, n0, std::min(N, n0 + run), c0, std::min(G, C - c0),
                    grad_beta.data());
    });
  }
  if (pb.grad_beta) {
    double total = 0;
    for (double t : grad_beta) total += t;
    *pb.grad_beta = total;
  }
}

void SoftArgmaxF32(const SpatialSoftArgmaxProblem<float>& pb) { soft_argmax_impl(pb, false); }
void SoftArgmaxF64(const SpatialSoftArgmaxProblem<double>& pb) { soft_argmax_impl(pb, false); }
void SoftArgmaxBackwardF32(const SpatialSoftArgmaxProblem<float>& pb) {
  soft_argmax_impl(pb, true);
}
void SoftArgmaxBackwardF64(const SpatialSoftArgmaxProblem<double>& pb) {
  soft_argmax_impl(pb, true);
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(SoftArgmaxF32);
HWY_EXPORT(SoftArgmaxF64);
HWY_EXPORT(SoftArgmaxBackwardF32);
HWY_EXPORT(SoftArgmaxBackwardF64);

bool runs(const core::SpatialSoftArgmaxProblem<float>& pb) {
  return pb.beta >= 0x1p-100 && pb.beta <= 0x1p100;
}
bool runs(const core::SpatialSoftArgmaxProblem<double>&) { return true; }

void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftArgmaxF32)(pb);
}
void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftArgmaxF64)(pb);
}
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftArgmaxBackwardF32)(pb);
}
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftArgmaxBackwardF64)(pb);
}

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
