// kl_div: KL(target || softmax(x)), its elementwise map, sum and gradient.

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/kl_div.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/blocks.h"
#include "cpu/kernels.h"
#include "cpu/math-inl.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::Geometry;

// KL(target || softmax(x)) elementwise (docs/semantics.md 3.5) and its gradient
// dX_c = q_c * sum_j r_j tau_j - r_c tau_c, for the positions in the lanes of
// `d` whose class c sits at base + c * cs (+ lane). Generic over the vector
// type so that full vectors of pixels (class first) and one-lane vectors
// (class last, tails) run the same operations in the same class order, and
// both layouts give the same bits. Returns each lane's sum of the map.
template <class D>
HWY_INLINE hn::Vec<D> KlPositions(D d, const core::KlDivProblem<hn::TFromD<D>>& pb,
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
void kl_div_impl(const core::KlDivProblem<T>& pb) {
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
        hn::Store(KlPositions(d, pb, g.offset(n, 0, p0 + j), g.pixels), d, lane_sums);
        for (std::int64_t l = 0; l < N; ++l) sum += static_cast<double>(lane_sums[l]);
      }
      for (; j < count; ++j) {
        sum +=
            static_cast<double>(hn::GetLane(KlPositions(d1, pb, g.offset(n, 0, p0 + j), g.pixels)));
      }
    } else {
      for (; j < count; ++j) {
        sum += static_cast<double>(hn::GetLane(KlPositions(d1, pb, (i0 + j) * C, 1)));
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

void KlDivF32(const core::KlDivProblem<float>& pb) { kl_div_impl(pb); }
void KlDivF64(const core::KlDivProblem<double>& pb) { kl_div_impl(pb); }

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(KlDivF32);
HWY_EXPORT(KlDivF64);

void kl_div(const core::KlDivProblem<float>& pb) { HWY_DYNAMIC_DISPATCH(KlDivF32)(pb); }
void kl_div(const core::KlDivProblem<double>& pb) { HWY_DYNAMIC_DISPATCH(KlDivF64)(pb); }

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
