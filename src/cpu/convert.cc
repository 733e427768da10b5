// Conversions between the 16-bit storage types and float32 (convert-inl.h),
// for the blocks that 16-bit problems stage through the float32 kernels
// (src/dispatch/staging.h).

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/convert.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <cstdint>

#include "cpu/convert-inl.h"
#include "cpu/kernels.h"
#include "spatialsoftmax/tensor.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void WidenBF16(const BFloat16* from, float* to, std::int64_t n) { widen_array(from, to, n); }
void WidenF16(const Float16* from, float* to, std::int64_t n) { widen_array(from, to, n); }
void NarrowBF16(const float* from, BFloat16* to, std::int64_t n) { narrow_array(from, to, n); }
void NarrowF16(const float* from, Float16* to, std::int64_t n) { narrow_array(from, to, n); }

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
