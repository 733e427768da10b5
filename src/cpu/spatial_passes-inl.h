// The vector loops of the spatial soft-argmax's passes: the max, e and its
// float64 sums in a fixed order, and the backward's per-element terms.

#if defined(SPATIALSOFTMAX_CPU_SPATIAL_PASSES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_SPATIAL_PASSES_INL_H_
#undef SPATIALSOFTMAX_CPU_SPATIAL_PASSES_INL_H_
#else
#define SPATIALSOFTMAX_CPU_SPATIAL_PASSES_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "cpu/math-inl.h"
#include "cpu/spatial_axes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

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
double fixed_order_sum(std::int64_t n, const Step& step) {
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
T max_of(const T* x, std::int64_t n, bool& nan) {
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

// e[i] = exp(beta * (x[i] - max)), i < n.
template <class T>
void exp_row(const T* x, std::int64_t n, T max, T beta, T* e) {
  ForEachVector(hn::ScalableTag<T>(), n, [&](auto d, std::int64_t i) {
    hn::StoreU(ExpShifted(d, hn::LoadU(d, x + i), hn::Set(d, max), hn::Set(d, beta)), d, e + i);
  });
}

template <class T>
void scale(T* s, std::int64_t n, T by) {
  ForEachVector(hn::ScalableTag<T>(), n, [&](auto d, std::int64_t i) {
    hn::StoreU(hn::Mul(hn::LoadU(d, s + i), hn::Set(d, by)), d, s + i);
  });
}

// Pass 2 sums of one piece: e[0, n) at row positions [j, j + n) into rs
// (Axes::sums of them); returns sum e dS (0 without dS).
template <class T>
double piece_sums(const Axes& ax, const T* e, const T* ds, std::int64_t j, std::int64_t n,
                  double* rs) {
  rs[0] = fixed_order_sum(
      n, [&](auto d, std::int64_t i, auto acc) { return hn::Add(acc, LoadWide(d, e + i)); });
  for (int s = 1; s < ax.sums; ++s) {
    const double* t = ax.of_sum(s) + j;
    rs[s] = fixed_order_sum(n, [&](auto d, std::int64_t i, auto acc) {
      return hn::MulAdd(LoadWide(d, e + i), hn::LoadU(d, t + i), acc);
    });
  }
  if (!ds) return 0;
  return fixed_order_sum(n, [&](auto d, std::int64_t i, auto acc) {
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

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_SPATIAL_PASSES_INL_H_ toggle
