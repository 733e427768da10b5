// The spatial softmax and soft-argmax (SPEC.md 4) as Highway kernels, written
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
// In the backward, h_p (SPEC.md 4) is written as a quadratic in d_a = u_a - E_a;
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
// Precision. float32: exp in float32 (Highway's Exp, <= 1 ulp; 0 below -104,
// so values under FLT_MIN may flush, as SPEC.md 5 allows), every sum over
// pixels and the backward per element in float64, rounded to float32 once.
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
#include <hwy/contrib/math/math-inl.h>
// clang-format on

#include "cpu/spatial_soft_argmax.h"
#include "cpu/transpose-inl.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/problems.h"
#include "parallel/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
// Internal linkage: cross_entropy.cc defines its own helpers in this
// per-target namespace.
namespace {
namespace hn = hwy::HWY_NAMESPACE;

using core::SpatialSoftArgmaxProblem;

constexpr int kMaxK = core::kMaxSpatialRank;
// Pass 2 takes a row in pieces of at most kChunk pixels, so a piece's e (and
// the channel-last copy of a group) stays in L1 / L2.
constexpr std::int64_t kChunk = 2048;
// The fastest axes are merged into rows of at least this many pixels, so that
// lanes are not spent on the tails of short rows.
constexpr std::int64_t kMinRow = 64;
// A block holds runs of channels or images of at least this many elements.
constexpr std::int64_t kBlockElements = std::int64_t{1} << 14;
// Channel last: a block's group of channels is up to 256 bytes of a pixel.
// Whole cache lines per block: with 64-byte groups, two blocks wrote halves
// of each pixel's lines and (8, 32, 128, 128) did not speed up on 2 threads.
constexpr std::int64_t kGroupBytes = 256;
// Sums per piece: e, e u_a, e u_a u_b (a <= b).
constexpr int kMaxSums = 1 + kMaxK + kMaxK * (kMaxK + 1) / 2;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// --- the spatial axes as rows ------------------------------------------------------

// Component a = 0 is the fastest axis (SPEC.md 4).
struct Axes {
  int k = 0;
  int inner = 0;            // components 0..inner-1 vary within a row
  std::int64_t pixels = 1;  // P
  std::int64_t row = 1;     // pixels per row: the product of the inner dims
  bool first = false;       // sums of e u_a wanted (keypoints)
  bool second = false;      // sums of e u_a u_b wanted (covariance)
  int sums = 1;             // per piece: e, then e u_a (a < inner), then e u_a u_b
  const double* coord[kMaxK] = {};
  std::int64_t dim[kMaxK] = {};
  std::vector<double> table;  // the row of u_a or u_a u_b for sums 1, 2, ...

  const double* of_sum(int s) const { return table.data() + (s - 1) * row; }
  const double* u(int a) const { return of_sum(1 + a); }
  // Coordinates v[a], a >= inner, of row r.
  void outer(std::int64_t r, double* v) const {
    for (int a = inner; a < k; ++a) {
      v[a] = coord[a][r % dim[a]];
      r /= dim[a];
    }
  }
};

template <class T>
Axes make_axes(const SpatialSoftArgmaxProblem<T>& pb, bool backward) {
  Axes ax;
  ax.k = pb.spatial_rank;
  ax.pixels = pb.geom.pixels;
  for (int a = 0; a < ax.k; ++a) {
    ax.coord[a] = pb.coordinate[ax.k - 1 - a];
    ax.dim[a] = pb.dims[ax.k - 1 - a];
  }
  if (ax.k > 0) {
    ax.inner = 1;
    ax.row = ax.dim[0];
  }
  while (ax.inner < ax.k && ax.row < kMinRow) ax.row *= ax.dim[ax.inner++];
  ax.second = backward ? pb.grad_covariance != nullptr : pb.covariance != nullptr;
  ax.first = ax.second || (backward ? pb.grad_keypoints != nullptr : pb.keypoints != nullptr);
  const int firsts = ax.first ? ax.inner : 0;
  const int seconds = ax.second ? ax.inner * (ax.inner + 1) / 2 : 0;
  ax.sums = 1 + firsts + seconds;
  ax.table.resize(static_cast<std::size_t>((firsts + seconds) * ax.row));
  double u[kMaxK] = {};
  for (std::int64_t j = 0; j < ax.row; ++j) {
    std::int64_t rem = j;
    for (int a = 0; a < ax.inner; ++a) {
      u[a] = ax.coord[a][rem % ax.dim[a]];
      rem /= ax.dim[a];
    }
    std::int64_t t = j;
    for (int a = 0; a < firsts; ++a, t += ax.row) ax.table[t] = u[a];
    for (int a = 0; a < ax.inner && ax.second; ++a) {
      for (int b = a; b < ax.inner; ++b, t += ax.row) ax.table[t] = u[a] * u[b];
    }
  }
  return ax;
}

// Pass 2 visits each row in pieces of at most kChunk pixels: f(r, j, p, n) for
// row r, row position j, pixel p = r * row + j, n pixels. Both layouts visit
// the same pieces.
template <class F>
void ForEachPiece(const Axes& ax, const F& f) {
  for (std::int64_t r = 0; r < ax.pixels / ax.row; ++r) {
    for (std::int64_t j = 0; j < ax.row; j += kChunk) {
      f(r, j, r * ax.row + j, std::min(kChunk, ax.row - j));
    }
  }
}

// --- one channel's scalars ------------------------------------------------------------

struct Channel {
  bool bad = false;  // a NaN, a +inf or only -inf: every output NaN
  double max = 0;
  // Pass 2 sums: e, e dS, e u_a, e u_a u_b (a <= b).
  double w = 0, gs = 0;
  double m1[kMaxK] = {}, m2[kMaxK][kMaxK] = {};
  // 1 / sum e, keypoints, covariance; backward: the S-mean of h.
  double inv = 0, mean = 0;
  double kp[kMaxK] = {}, cov[kMaxK][kMaxK] = {};
  // Backward: G_E, and gp_ab = G_ab + G_ba (a < b), G_aa; h's coefficients on
  // the current row: lin_a for a < inner, cst.
  double ge[kMaxK] = {}, gp[kMaxK][kMaxK] = {};
  double lin[kMaxK] = {}, cst = 0;
};

// Adds one piece's sums rs at outer coordinates v.
void fold(const Axes& ax, const double* rs, const double* v, Channel& ch) {
  const double s = rs[0];
  ch.w += s;
  if (!ax.first) return;
  for (int a = 0; a < ax.k; ++a) ch.m1[a] += a < ax.inner ? rs[1 + a] : s * v[a];
  if (!ax.second) return;
  int q = 1 + ax.inner;
  for (int a = 0; a < ax.k; ++a) {
    for (int b = a; b < ax.k; ++b) {
      double t;
      if (b < ax.inner) {
        t = rs[q++];
      } else if (a < ax.inner) {
        t = rs[1 + a] * v[b];
      } else {
        t = s * v[a] * v[b];
      }
      ch.m2[a][b] += t;
    }
  }
}

void finish(const Axes& ax, Channel& ch) {
  ch.inv = ch.bad ? kNaN : 1 / ch.w;
  for (int a = 0; a < ax.k; ++a) ch.kp[a] = ch.m1[a] * ch.inv;
  for (int a = 0; a < ax.k && ax.second; ++a) {
    for (int b = a; b < ax.k; ++b) {
      ch.cov[a][b] = ch.cov[b][a] = ch.m2[a][b] * ch.inv - ch.kp[a] * ch.kp[b];
    }
  }
}

template <class T>
void write_outputs(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, std::int64_t nc,
                   const Channel& ch) {
  const int k = ax.k;
  for (int a = 0; a < k; ++a) {
    if (pb.keypoints) pb.keypoints[nc * k + a] = static_cast<T>(ch.kp[a]);
    for (int b = 0; b < k && pb.covariance; ++b) {
      pb.covariance[(nc * k + a) * k + b] = static_cast<T>(ch.cov[a][b]);
    }
  }
}

// sum_q S_q h_q = sum S dS + sum_ab G_ab cov_ab (sum S d_a = 0).
template <class T>
void upstream(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, std::int64_t nc, Channel& ch) {
  const int k = ax.k;
  double mean = pb.grad_softmax ? ch.gs * ch.inv : 0;
  for (int a = 0; a < k && pb.grad_keypoints; ++a) ch.ge[a] = pb.grad_keypoints[nc * k + a];
  if (pb.grad_covariance) {
    const T* g = pb.grad_covariance + nc * k * k;
    for (int a = 0; a < k; ++a) {
      for (int b = 0; b < k; ++b) {
        const double gab = g[a * k + b];
        mean += gab * ch.cov[a][b];
        if (b >= a) ch.gp[a][b] = a == b ? gab : gab + static_cast<double>(g[b * k + a]);
      }
    }
  }
  ch.mean = mean;
}

// h = dS + cst + sum_{a < inner} d_a (lin_a + sum_{a <= b < inner} gp_ab d_b):
// the coefficients of the components constant on row v.
void row_terms(const Axes& ax, const double* v, Channel& ch) {
  double dv[kMaxK] = {};
  for (int b = ax.inner; b < ax.k; ++b) dv[b] = v[b] - ch.kp[b];
  for (int a = 0; a < ax.inner; ++a) {
    double t = ch.ge[a];
    for (int b = ax.inner; b < ax.k && ax.second; ++b) t += ch.gp[a][b] * dv[b];
    ch.lin[a] = t;
  }
  double c = 0;
  for (int a = ax.inner; a < ax.k; ++a) {
    double t = ch.ge[a];
    for (int b = a; b < ax.k && ax.second; ++b) t += ch.gp[a][b] * dv[b];
    c += dv[a] * t;
  }
  ch.cst = c;
}

// --- vector helpers ------------------------------------------------------------------

// T values at p, as many as D has float64 lanes, widened to float64.
template <class D, class T>
HWY_INLINE hn::Vec<D> LoadWide(D d, const T* p) {
  if constexpr (sizeof(T) == sizeof(double)) {
    return hn::LoadU(d, p);
  } else {
    return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, D>(), p));
  }
}

template <class D, class T>
HWY_INLINE void StoreNarrow(D d, hn::Vec<D> v, T* p) {
  if constexpr (sizeof(T) == sizeof(double)) {
    hn::StoreU(v, d, p);
  } else {
    const hn::Rebind<T, D> dt;
    hn::StoreU(hn::DemoteTo(dt, v), dt, p);
  }
}

// Lanes added in lane order (Highway 1.0.3 has no ReduceSum; the order must be fixed).
template <class D>
HWY_INLINE double SumLanes(D d, hn::Vec<D> v) {
  HWY_ALIGN double lanes[HWY_MAX_BYTES / sizeof(double)];
  hn::Store(v, d, lanes);
  double s = lanes[0];
  for (std::size_t l = 1; l < hn::Lanes(d); ++l) s += lanes[l];
  return s;
}

// f(d, i) on whole vectors of [0, n), then f(d1, i) one element at a time.
template <class D, class F>
HWY_INLINE void ForEachVector(D d, std::int64_t n, const F& f) {
  const hn::CappedTag<hn::TFromD<D>, 1> d1;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  std::int64_t i = 0;
  for (; i + lanes <= n; i += lanes) f(d, i);
  for (; i < n; ++i) f(d1, i);
}

// A float64 sum of n terms, acc = step(d, i, acc) adding those at [i, i + lanes),
// in one order fixed by n and the target: four vector sums over runs of four
// vectors (one sum would wait on the add latency), the remaining whole vectors
// into the first, their lanes in order, then the last elements one by one.
template <class Step>
double FixedOrderSum(std::int64_t n, const Step& step) {
  const hn::ScalableTag<double> d;
  const hn::CappedTag<double, 1> d1;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  auto s0 = hn::Zero(d), s1 = s0, s2 = s0, s3 = s0;
  std::int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    s0 = step(d, i, s0);
    s1 = step(d, i + lanes, s1);
    s2 = step(d, i + 2 * lanes, s2);
    s3 = step(d, i + 3 * lanes, s3);
  }
  for (; i + lanes <= n; i += lanes) s0 = step(d, i, s0);
  double sum = SumLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)));
  for (; i < n; ++i) sum = hn::GetLane(step(d1, i, hn::Set(d1, sum)));
  return sum;
}

// The max of x[0, n); nan tells whether one of them is NaN (Max does not).
// NaN is found as !(v == v): Highway 1.0.3's Ne is an ordered compare on
// AVX2 / AVX-512, false for NaN.
template <class T>
T MaxOf(const T* x, std::int64_t n, bool& nan) {
  const hn::ScalableTag<T> d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  auto max = hn::Set(d, -std::numeric_limits<T>::infinity());
  auto seen = hn::Zero(d);
  std::int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::LoadU(d, x + i);
    max = hn::Max(max, v);
    seen = hn::Or(seen, hn::VecFromMask(d, hn::Not(hn::Eq(v, v))));
  }
  T m = hn::GetLane(hn::MaxOfLanes(d, max));
  nan = !hn::AllFalse(d, hn::MaskFromVec(seen));
  for (; i < n; ++i) {
    if (std::isnan(x[i])) nan = true;
    m = std::max(m, x[i]);
  }
  return m;
}

template <class D, class V = hn::Vec<D>>
HWY_INLINE V ExpShifted(D d, V x, V max, V beta) {
  return hn::Exp(d, hn::Mul(hn::Sub(x, max), beta));
}

// e[i] = exp(beta * (x[i] - max)), i < n.
template <class T>
void ExpRow(const T* x, std::int64_t n, T max, T beta, T* e) {
  ForEachVector(hn::ScalableTag<T>(), n, [&](auto d, std::int64_t i) {
    hn::StoreU(ExpShifted(d, hn::LoadU(d, x + i), hn::Set(d, max), hn::Set(d, beta)), d, e + i);
  });
}

template <class T>
void Scale(T* s, std::int64_t n, T by) {
  ForEachVector(hn::ScalableTag<T>(), n, [&](auto d, std::int64_t i) {
    hn::StoreU(hn::Mul(hn::LoadU(d, s + i), hn::Set(d, by)), d, s + i);
  });
}

// Pass 2 sums of one piece: e[0, n) at row positions [j, j + n) into rs
// (Axes::sums of them); returns sum e dS (0 without dS).
template <class T>
double PieceSums(const Axes& ax, const T* e, const T* ds, std::int64_t j, std::int64_t n,
                 double* rs) {
  rs[0] = FixedOrderSum(
      n, [&](auto d, std::int64_t i, auto acc) { return hn::Add(acc, LoadWide(d, e + i)); });
  for (int s = 1; s < ax.sums; ++s) {
    const double* t = ax.of_sum(s) + j;
    rs[s] = FixedOrderSum(n, [&](auto d, std::int64_t i, auto acc) {
      return hn::MulAdd(LoadWide(d, e + i), hn::LoadU(d, t + i), acc);
    });
  }
  if (!ds) return 0;
  return FixedOrderSum(n, [&](auto d, std::int64_t i, auto acc) {
    return hn::MulAdd(LoadWide(d, e + i), LoadWide(d, ds + i), acc);
  });
}

// The quadratic part of h, h += sum_{a < inner} d_a (lin_a + sum_{b >= a} gp_ab d_b),
// from per-lane d_a, lin_a and gp_ab: one sequence of operations for both
// layouts, which differ only in where the operands come from.
template <class D, class DOf, class LinOf, class GpOf>
HWY_INLINE hn::Vec<D> Quadratic(D, const Axes& ax, hn::Vec<D> h, const DOf& d_of,
                                const LinOf& lin_of, const GpOf& gp_of) {
  for (int a = 0; a < ax.inner; ++a) {
    auto t = lin_of(a);
    for (int b = a; b < ax.inner && ax.second; ++b) t = hn::MulAdd(gp_of(a, b), d_of(b), t);
    h = hn::MulAdd(d_of(a), t, h);
  }
  return h;
}

// dX = beta dz with dz = S (h - mean), S = e inv, stored at out; returns the
// d loss / d beta term dz (x - max).
template <class D, class T, class V = hn::Vec<D>>
HWY_INLINE V BackwardElement(D d, V e, V inv, V h, V mean, V beta, V x, V max, T* out) {
  const V dz = hn::Mul(hn::Mul(e, inv), hn::Sub(h, mean));
  StoreNarrow(d, hn::Mul(dz, beta), out);
  return hn::Mul(dz, hn::Sub(x, max));
}

// Copies n pixels x G channels of a channel-last piece (pixel i's channels at
// src + i * C) to channel-major dst (channel c's n pixels at dst + c * n).
template <class T>
void Transpose(const T* src, std::int64_t C, std::int64_t n, std::int64_t G, T* dst) {
  transpose<true>(src, C, dst, n, n, G);
}

// Per-thread buffers, kept between calls.
template <class T>
struct Scratch {
  std::vector<T> e, xs, ds, max, nan, ebuf, inv;
  std::vector<double> lanes;  // channel last: per-channel coefficients, d loss / d beta slots
  std::vector<Channel> ch;
};

template <class T>
Scratch<T>& scratch() {
  thread_local Scratch<T> s;
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
double BackwardRows(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, std::int64_t nc,
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
void ChannelsFirst(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, bool backward,
                   std::int64_t nc0, std::int64_t nc1, double* grad_beta) {
  const std::int64_t P = ax.pixels;
  Scratch<T>& s = scratch<T>();
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
    const T max = MaxOf(x, P, nan);
    ch.max = max;
    ch.bad = nan || !std::isfinite(max);
    ForEachPiece(ax, [&](std::int64_t r, std::int64_t j, std::int64_t p, std::int64_t n) {
      T* e = keep ? keep + p : s.e.data();
      ExpRow(x + p, n, max, beta, e);
      const double gs = PieceSums(ax, e, ds ? ds + p : nullptr, j, n, rs);
      ax.outer(r, v);
      fold(ax, rs, v, ch);
      ch.gs += gs;
    });
    finish(ax, ch);
    if (!backward) {
      write_outputs(pb, ax, nc, ch);
      if (keep) Scale(keep, P, static_cast<T>(ch.inv));
      continue;
    }
    upstream(pb, ax, nc, ch);
    grad_beta[nc] = BackwardRows(pb, ax, nc, ch);
  }
}

// --- channel axis last: channels in lanes -----------------------------------------------

// Images [n0, n1), channels [c0, c0 + G) of each. The same arithmetic as
// ChannelsFirst, channel by channel (see the top of the file).
template <class T>
void ChannelsLast(const SpatialSoftArgmaxProblem<T>& pb, const Axes& ax, bool backward,
                  std::int64_t n0, std::int64_t n1, std::int64_t c0, std::int64_t G,
                  double* grad_beta) {
  const hn::ScalableTag<T> dt;
  const hn::ScalableTag<double> d;
  const std::int64_t lanes = static_cast<std::int64_t>(hn::Lanes(d));
  const std::int64_t P = ax.pixels, C = pb.geom.classes, L = ax.row;
  const std::int64_t piece = std::min(ax.row, kChunk);
  const bool with_ds = backward && pb.grad_softmax;
  Scratch<T>& s = scratch<T>();
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

    ForEachPiece(ax, [&](std::int64_t r, std::int64_t j, std::int64_t p, std::int64_t len) {
      T* xs = s.xs.data();
      T* dss = s.ds.data();
      Transpose(x + p * C, C, len, G, xs);
      if (ds) Transpose(ds + p * C, C, len, G, dss);
      ax.outer(r, v);
      for (std::int64_t c = 0; c < G; ++c) {
        ExpRow(xs + c * len, len, max[c], beta, s.e.data());
        const double gs = PieceSums(ax, s.e.data(), ds ? dss + c * len : nullptr, j, len, rs);
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
    // the d loss / d beta sums: one per lane of BackwardRows, and its tail.
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
    const std::int64_t body = L - L % lanes;  // row positions BackwardRows takes in whole vectors
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
void Run(const SpatialSoftArgmaxProblem<T>& pb, bool backward) {
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
      ChannelsFirst(pb, ax, backward, b * run, std::min(channels, (b + 1) * run), grad_beta.data());
    });
  } else {
    const std::int64_t G = std::min(C, kGroupBytes / static_cast<std::int64_t>(sizeof(T)));
    const std::int64_t groups = (C + G - 1) / G;
    const std::int64_t run = std::max<std::int64_t>(1, kBlockElements / (P * G));
    parallel::for_each_block((N + run - 1) / run * groups, [&](std::int64_t b) {
      const std::int64_t n0 = b / groups * run, c0 = b % groups * G;
      ChannelsLast(pb, ax, backward, n0, std::min(N, n0 + run), c0, std::min(G, C - c0),
                   grad_beta.data());
    });
  }
  if (pb.grad_beta) {
    double total = 0;
    for (double t : grad_beta) total += t;
    *pb.grad_beta = total;
  }
}

void SoftArgmaxF32(const SpatialSoftArgmaxProblem<float>& pb) { Run(pb, false); }
void SoftArgmaxF64(const SpatialSoftArgmaxProblem<double>& pb) { Run(pb, false); }
void SoftArgmaxBackwardF32(const SpatialSoftArgmaxProblem<float>& pb) { Run(pb, true); }
void SoftArgmaxBackwardF64(const SpatialSoftArgmaxProblem<double>& pb) { Run(pb, true); }

}  // namespace
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
