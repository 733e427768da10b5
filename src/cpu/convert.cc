// Conversions between the 16-bit storage types and float32, for the blocks
// that 16-bit problems stage through the float32 kernels
// (src/dispatch/staging.h). Every target gives the bits of the scalar
// conversions in spatialsoftmax/tensor.h: round to nearest even, NaNs kept.

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/convert.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <cstdint>

#include "cpu/kernels.h"
#include "spatialsoftmax/tensor.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Highway 1.0.3's float16 conversions round correctly only with F16C
// (x86 from AVX2; elsewhere they truncate): without it the scalar ones run.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)
#define SPATIALSOFTMAX_F16_LANES 1
#else
#define SPATIALSOFTMAX_F16_LANES 0
#endif

void WidenBF16(const BFloat16* from, float* to, std::int64_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::bfloat16_t, decltype(d)> dh;
  const auto* in = reinterpret_cast<const hwy::bfloat16_t*>(from);
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  std::int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, in + i)), d, to + i);
  for (; i < n; ++i) to[i] = to_float(from[i]);
}

// Highway 1.0.3's bfloat16 DemoteTo truncates; this rounds half to even in
// the integer lanes, as to_bfloat16 does.
void NarrowBF16(const float* from, BFloat16* to, std::int64_t n) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::RebindToSigned<decltype(d)> di;
  const hn::Rebind<std::uint16_t, decltype(d)> du16;
  auto* out = reinterpret_cast<std::uint16_t*>(to);
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  std::int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, from + i);
    const auto bits = hn::BitCast(du, v);
    const auto half_even = hn::Add(hn::Set(du, 0x7FFFu), hn::And(hn::ShiftRight<16>(bits), hn::Set(du, 1u)));
    const auto rounded = hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)),
                                        hn::Or(bits, hn::Set(du, 0x00400000u)), hn::Add(bits, half_even));
    hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di, hn::ShiftRight<16>(rounded))), du16, out + i);
  }
  for (; i < n; ++i) to[i] = to_bfloat16(from[i]);
}

void WidenF16(const Float16* from, float* to, std::int64_t n) {
  std::int64_t i = 0;
#if SPATIALSOFTMAX_F16_LANES
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const auto* in = reinterpret_cast<const hwy::float16_t*>(from);
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  for (; i + N <= n; i += N) hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, in + i)), d, to + i);
#endif
  for (; i < n; ++i) to[i] = to_float(from[i]);
}

void NarrowF16(const float* from, Float16* to, std::int64_t n) {
  std::int64_t i = 0;
#if SPATIALSOFTMAX_F16_LANES
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  auto* out = reinterpret_cast<hwy::float16_t*>(to);
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  for (; i + N <= n; i += N) hn::StoreU(hn::DemoteTo(dh, hn::LoadU(d, from + i)), dh, out + i);
#endif
  for (; i < n; ++i) to[i] = to_float16(from[i]);
}

#undef SPATIALSOFTMAX_F16_LANES

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(WidenBF16);
HWY_EXPORT(NarrowBF16);
HWY_EXPORT(WidenF16);
HWY_EXPORT(NarrowF16);

void widen(const BFloat16* from, float* to, std::int64_t n) {
  HWY_DYNAMIC_DISPATCH(WidenBF16)(from, to, n);
}
void widen(const Float16* from, float* to, std::int64_t n) {
  HWY_DYNAMIC_DISPATCH(WidenF16)(from, to, n);
}
void narrow(const float* from, BFloat16* to, std::int64_t n) {
  HWY_DYNAMIC_DISPATCH(NarrowBF16)(from, to, n);
}
void narrow(const float* from, Float16* to, std::int64_t n) {
  HWY_DYNAMIC_DISPATCH(NarrowF16)(from, to, n);
}

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
