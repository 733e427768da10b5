// The spatial soft-argmax's spatial axes as rows of coordinate tables
// (Axes), and one channel's float64 scalars (Channel): pass 2's sums folded
// in, the keypoints and covariance, and the backward's coefficients.

#if defined(SPATIALSOFTMAX_CPU_SPATIAL_AXES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_SPATIAL_AXES_INL_H_
#undef SPATIALSOFTMAX_CPU_SPATIAL_AXES_INL_H_
#else
#define SPATIALSOFTMAX_CPU_SPATIAL_AXES_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::SpatialSoftArgmaxProblem;

constexpr int kMaxK = kMaxSpatialRank;
// Pass 2 takes a row in pieces of at most kChunk pixels, so a piece's e (and
// the channel-last copy of a group) stays in L1 / L2.
constexpr std::int64_t kChunk = 2048;
// The fastest axes are merged into rows of at least this many pixels, so that
// lanes are not spent on the tails of short rows.
constexpr std::int64_t kMinRow = 64;
// Sums per piece: e, e u_a, e u_a u_b (a <= b).
constexpr int kMaxSums = 1 + kMaxK + kMaxK * (kMaxK + 1) / 2;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// --- the spatial axes as rows ------------------------------------------------------

// Component a = 0 is the fastest axis (docs/semantics.md 4).
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
void for_each_piece(const Axes& ax, const F& f) {
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
inline void fold(const Axes& ax, const double* rs, const double* v, Channel& ch) {
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

inline void finish(const Axes& ax, Channel& ch) {
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
inline void row_terms(const Axes& ax, const double* v, Channel& ch) {
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

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_SPATIAL_AXES_INL_H_ toggle
