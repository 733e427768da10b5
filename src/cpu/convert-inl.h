// The 16-bit storage types in float32 lanes: loads that widen, stores that
// narrow (rounding to nearest even, NaNs kept: the bits of the scalar
// conversions in spatialsoftmax/tensor.h on every target), and the same over
// arrays. Used where a kernel reads or writes 16-bit tensors itself
// (plain_tiles-inl.h) and by convert.cc.

#if defined(SPATIALSOFTMAX_CPU_CONVERT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_CONVERT_INL_H_
#undef SPATIALSOFTMAX_CPU_CONVERT_INL_H_
#else
#define SPATIALSOFTMAX_CPU_CONVERT_INL_H_
#endif

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <cstdint>
#include <type_traits>

#include "spatialsoftmax/tensor.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Highway 1.0.3's float16 conversions round correctly only with F16C (x86
// from AVX2; elsewhere its DemoteTo truncates): without it, lanes go
// through the scalar conversions. Its bfloat16 DemoteTo truncates too, and
// its Ne misses NaNs (an ordered compare): the bfloat16 lanes below are
// integer arithmetic.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)
inline constexpr bool kF16Lanes = true;
#else
inline constexpr bool kF16Lanes = false;
#endif

template <class S>
inline constexpr bool kIs16Bit = std::is_same_v<S, BFloat16> || std::is_same_v<S, Float16>;

// A stored element's value in the compute type.
template <class T, class S>
HWY_INLINE T AsCompute(S v) {
  if constexpr (kIs16Bit<S>) {
    return static_cast<T>(to_float(v));
  } else {
    return static_cast<T>(v);
  }
}
template <class S, class T>
HWY_INLINE S AsStored(T v) {
  if constexpr (std::is_same_v<S, BFloat16>) {
    return to_bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_same_v<S, Float16>) {
    return to_float16(static_cast<float>(v));
  } else {
    return static_cast<S>(v);
  }
}

// Lanes(d) elements of S at p, as d's lanes (float32 for the 16-bit types).
template <class D, class S>
HWY_INLINE hn::Vec<D> LoadWide(D d, const S* p) {
  if constexpr (std::is_same_v<S, BFloat16>) {
    const hn::RebindToUnsigned<D> du;
    const hn::Rebind<std::uint16_t, D> du16;
    const auto bits = hn::PromoteTo(du, hn::LoadU(du16, reinterpret_cast<const std::uint16_t*>(p)));
    return hn::BitCast(d, hn::ShiftLeft<16>(bits));
  } else if constexpr (std::is_same_v<S, Float16>) {
    if constexpr (kF16Lanes) {
      const hn::Rebind<hwy::float16_t, D> dh;
      return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
    } else {
      HWY_ALIGN float lanes[hn::MaxLanes(d)];
      for (std::size_t i = 0; i < hn::Lanes(d); ++i) lanes[i] = to_float(p[i]);
      return hn::Load(d, lanes);
    }
  } else {
    return hn::LoadU(d, p);
  }
}

// v's lanes rounded to bfloat16, in the low half of 32-bit lanes.
template <class D>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<D>> RoundToBF16(D /*d*/, hn::Vec<D> v) {
  const hn::RebindToUnsigned<D> du;
  const auto bits = hn::BitCast(du, v);
  // Adding 0x7FFF plus the kept part's lowest bit rounds half to even; a
  // NaN gets its quiet bit instead.
  const auto half_even =
      hn::Add(hn::Set(du, 0x7FFFu), hn::And(hn::ShiftRight<16>(bits), hn::Set(du, 1u)));
  const auto rounded =
      hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), hn::Or(bits, hn::Set(du, 0x00400000u)),
                     hn::Add(bits, half_even));
  return hn::ShiftRight<16>(rounded);
}

// Stores v's Lanes(d) lanes at p as S; kStream: with a streaming store (p
// aligned to the stored vector).
template <bool kStream = false, class D, class S>
HWY_INLINE void StoreNarrow(hn::Vec<D> v, D d, S* p) {
  const auto put = [](auto w, auto dw, auto* to) {
    if constexpr (kStream) {
      hn::Stream(w, dw, to);
    } else {
      hn::StoreU(w, dw, to);
    }
  };
  if constexpr (std::is_same_v<S, BFloat16>) {
    const hn::RebindToSigned<D> di;
    const hn::Rebind<std::uint16_t, D> du16;
    put(hn::DemoteTo(du16, hn::BitCast(di, RoundToBF16(d, v))), du16,
        reinterpret_cast<std::uint16_t*>(p));
  } else if constexpr (std::is_same_v<S, Float16>) {
    if constexpr (kF16Lanes) {
      const hn::Rebind<hwy::float16_t, D> dh;
      put(hn::DemoteTo(dh, v), dh, reinterpret_cast<hwy::float16_t*>(p));
    } else {
      HWY_ALIGN float lanes[hn::MaxLanes(d)];
      hn::Store(v, d, lanes);
      for (std::size_t i = 0; i < hn::Lanes(d); ++i) p[i] = to_float16(lanes[i]);
    }
  } else {
    put(v, d, p);
  }
}

// to[0, n) = from[0, n) between S and float32.
template <class S>
void widen_array(const S* from, float* to, std::int64_t n) {
  const hn::ScalableTag<float> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  std::int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadWide(d, from + i), d, to + i);
  for (; i < n; ++i) to[i] = to_float(from[i]);
}
// to[0, n) = from[0, n), as S (T itself, or narrowed from float32).
template <class T, class S>
void narrow_array(const T* from, S* to, std::int64_t n) {
  const hn::ScalableTag<T> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  std::int64_t i = 0;
  for (; i + N <= n; i += N) StoreNarrow(hn::LoadU(d, from + i), d, to + i);
  for (; i < n; ++i) to[i] = AsStored<S>(from[i]);
}

// narrow_array with streaming stores where `to` is aligned to a stored
// vector, plain stores at the edges.
template <class T, class S>
void stream_array(const T* from, S* to, std::int64_t n) {
  const hn::ScalableTag<T> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const std::size_t align = static_cast<std::size_t>(N) * sizeof(S);
  std::int64_t i = 0;
  for (; i < n && reinterpret_cast<std::uintptr_t>(to + i) % align != 0; ++i) {
    to[i] = AsStored<S>(from[i]);
  }
  for (; i + N <= n; i += N) StoreNarrow<true>(hn::LoadU(d, from + i), d, to + i);
  for (; i < n; ++i) to[i] = AsStored<S>(from[i]);
  hwy::FlushStream();
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_CONVERT_INL_H_ toggle
