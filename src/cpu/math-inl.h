// The exp and log of the kernels, per SIMD target.

#if defined(SPATIALSOFTMAX_CPU_MATH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_MATH_INL_H_
#undef SPATIALSOFTMAX_CPU_MATH_INL_H_
#else
#define SPATIALSOFTMAX_CPU_MATH_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

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

// Highway's Log does not promise NaN in, NaN out (nor inf), which SPEC.md 5
// requires of a position with a NaN or +inf logit.
template <class D, class V>
HWY_INLINE V LogKeepNaN(D d, V x) {
  const V log = hn::Log(d, x);
  return hn::IfThenElse(hn::Eq(x, x), log, x);
}

// exp(beta * (x - max)): the spatial kernels' exp, Highway's Exp.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V ExpShifted(D d, V x, V max, V beta) {
  return hn::Exp(d, hn::Mul(hn::Sub(x, max), beta));
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_MATH_INL_H_ toggle
