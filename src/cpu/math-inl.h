// The exp and log of the kernels, per SIMD target. Two exps: the loss
// family's ExpNonPositive (a polynomial of its own in float32, Highway's Exp
// in float64) and the spatial kernels' ExpShifted (Highway's Exp); kl_div.cc
// also calls Highway's Exp directly, on log targets. One log: LogKeepNaN
// (Highway's Log). The row kernel's per-row scalars use <cmath> instead:
// std::log of the float64 sums, std::exp for a floored label (rows-inl.h).
//
// The errors below were measured (issue 11, item 1) on every compiled target
// (AVX3, AVX2: MulAdd is one FMA; SSE4, SSSE3, SCALAR: a multiply and an
// add) as the largest |f(x) - r(x)| / ulp(r(x)), with r = std::exp or
// std::log in double over every float32 x of the range for float32 lanes,
// and r = expl or logl in long double over 2^26 samples for float64 lanes
// (half uniform in value, half uniform in bit pattern).

#if defined(SPATIALSOFTMAX_CPU_MATH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_MATH_INL_H_
#undef SPATIALSOFTMAX_CPU_MATH_INL_H_
#else
#define SPATIALSOFTMAX_CPU_MATH_INL_H_
#endif

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// exp(x) for x <= 0 (x - max), the loss family's exp. Lanes: float32,
// float64. Valid range: [-inf, 0]. The result for a NaN x is unspecified:
// callers decide what a NaN makes of a position.
// float32: Cody-Waite reduction and a degree-6 polynomial. n = round(x /
// ln 2) comes from one MulAdd with 1.5 * 2^23 + 127, whose low mantissa bits
// then hold n + 127, the exponent field of 2^n. Clamping x at -88 makes
// n >= -127, so below x = -87.68 (n = -127) the exponent field is 0 and the
// result exactly 0, with no select; in (-87.68, -87.34) results are
// subnormal (docs/semantics.md 5 allows their flush). Max error over [ln FLT_MIN, 0]
// = [-87.34, 0]: 1.26 ulp on AVX3 and AVX2, 1.28 ulp on the others.
// float64: Highway's Exp (0 below about -745). Max error over
// [ln DBL_MIN, 0] = [-708.4, 0]: 1.01 ulp on AVX3 and AVX2, 0.98 ulp on the
// others.
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

// log(x), the kernels' log: Highway's Log with NaN passing through, as
// Highway's Log does not promise NaN in, NaN out (nor inf), which docs/semantics.md 5
// requires of a position with a NaN or +inf logit (its sum is NaN). Lanes:
// float32, float64. Valid range: (0, FLT_MAX] or (0, DBL_MAX], subnormals
// included; Log(0) is -105.4 (float32) or -746.5 (float64), not -inf, and
// Log(+inf) is ln(FLT_MAX) or ln(DBL_MAX), not +inf. No output depends on
// either: the loss family passes neither, KL drops its Log of a zero target,
// and a +inf KL target gives an infinite term either way.
// Max error over every normal float32: 0.90 ulp on AVX3 and AVX2, 0.95 ulp
// on the others; float64 (over the normal doubles and over [0.5, 2]): 0.91
// and 0.95 ulp.
template <class D, class V>
HWY_INLINE V LogKeepNaN(D d, V x) {
  const V log = hn::Log(d, x);
  return hn::IfThenElse(hn::Eq(x, x), log, x);
}

// exp(beta * (x - max)), the spatial kernels' exp: Highway's Exp, which
// also serves kl_div.cc's exp of log targets. Lanes: float32, float64.
// Valid range of the product: [-inf, ln(FLT_MAX) = 88.72] (float32; beyond,
// +inf) or [-inf, 709.78] (float64); 0 below about -104 (float32) or -745
// (float64), and subnormal above that up to FLT_MIN or DBL_MIN (docs/semantics.md 5
// allows their flush). Max error, float32 over [ln FLT_MIN, 0] = [-87.34,
// 0], where the spatial kernels' products lie: 1.03 ulp on AVX3 and AVX2,
// 0.99 ulp on the others; over [0, 88.72]: 1.02 and 0.98 ulp. float64 over
// [ln DBL_MIN, 0]: 1.01 and 0.98 ulp.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V ExpShifted(D d, V x, V max, V beta) {
  return hn::Exp(d, hn::Mul(hn::Sub(x, max), beta));
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_MATH_INL_H_ toggle
