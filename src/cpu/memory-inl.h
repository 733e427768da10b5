// Prefetches of the loss family, per SIMD target.

#if defined(SPATIALSOFTMAX_CPU_MEMORY_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_MEMORY_INL_H_
#undef SPATIALSOFTMAX_CPU_MEMORY_INL_H_
#else
#define SPATIALSOFTMAX_CPU_MEMORY_INL_H_
#endif

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <cstdint>

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Prefetches p's cache line into L2, not L1: the tiles prefetch the next
// tile while they work on theirs, 64 KiB of X each, more than an L1 holds
// (32 KiB on Zen 4, 48 KiB on recent Xeons), so prefetcht0 evicted the
// current tile between its passes (prefetcht1 took 2x150x256x256 NCHW
// forward on one Zen 4 core from 11.3 to 7.8 ms with spatialsoftmax bench).
// hwy::Prefetch and __builtin_prefetch vanish from these target-attributed
// functions with GCC 12 (no prefetch instruction in the object file); an
// asm statement stays. Prefetching never faults.
HWY_INLINE void prefetch_line(const void* p) {
#if HWY_ARCH_X86 && (HWY_COMPILER_GCC || HWY_COMPILER_CLANG)
  asm volatile("prefetcht1 %0" ::"m"(*static_cast<const char*>(p)));
#else
  hwy::Prefetch(static_cast<const char*>(p));
#endif
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_MEMORY_INL_H_ toggle
