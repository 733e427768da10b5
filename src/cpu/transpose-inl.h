// Transposes between a position-major tile (element c of position j at
// j * C + c) and its class- or channel-major copy, per SIMD target: included
// by the kernel files inside Highway's foreach_target loop.

// Per-target include guard, as Highway's own -inl headers do it.
#if defined(SPATIALSOFTMAX_KERNELS_TRANSPOSE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_KERNELS_TRANSPOSE_INL_H_
#undef SPATIALSOFTMAX_KERNELS_TRANSPOSE_INL_H_
#else
#define SPATIALSOFTMAX_KERNELS_TRANSPOSE_INL_H_
#endif

#include <cstdint>

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET != HWY_SCALAR
// Transposes the 4 x 4 matrix whose rows are r0..r3 (128-bit float vectors).
template <class D4, class V4 = hn::Vec<D4>>
HWY_INLINE void Transpose4(D4 d4, V4& r0, V4& r1, V4& r2, V4& r3) {
  const hn::Repartition<double, D4> d2;
  const auto t0 = hn::BitCast(d2, hn::InterleaveLower(d4, r0, r1));  // r0[0] r1[0] r0[1] r1[1]
  const auto t1 = hn::BitCast(d2, hn::InterleaveLower(d4, r2, r3));
  const auto t2 = hn::BitCast(d2, hn::InterleaveUpper(d4, r0, r1));  // r0[2] r1[2] r0[3] r1[3]
  const auto t3 = hn::BitCast(d2, hn::InterleaveUpper(d4, r2, r3));
  r0 = hn::BitCast(d4, hn::InterleaveLower(d2, t0, t1));
  r1 = hn::BitCast(d4, hn::InterleaveUpper(d2, t0, t1));
  r2 = hn::BitCast(d4, hn::InterleaveLower(d2, t2, t3));
  r3 = hn::BitCast(d4, hn::InterleaveUpper(d2, t2, t3));
}
#endif

// out[b * out_stride + a] = value(d, in[a * in_stride + b...], b, a) for
// a < rows, b < cols: the lanes of `value` hold elements b, b + 1, ... of row
// a. Square blocks of one 128-bit vector a row (4 x 4 float, 2 x 2 double)
// are transposed in registers (8 shuffles per 16 floats, where element-wise
// copies take a load and a store each). Where rows or cols is not a multiple
// of the block, the last block overlaps the one before it, and the overlap
// is written again with the same bits (the same operations on the same
// inputs). Smaller matrices go one lane at a time, through the same
// operations. The blocks go along rows (kAlongRows), or along columns, so
// that the position-major side is visited in order either way.
template <bool kAlongRows, class T, class Value>
void transpose_blocks(const T* in, std::int64_t in_stride, T* out, std::int64_t out_stride,
                      std::int64_t rows, std::int64_t cols, const Value& value) {
#if HWY_TARGET != HWY_SCALAR
  constexpr std::int64_t B = 16 / static_cast<std::int64_t>(sizeof(T));
  if (rows >= B && cols >= B) {
    const hn::Full128<T> d;
    const auto block = [&](std::int64_t a, std::int64_t b) {
      const T* from = in + a * in_stride + b;
      T* to = out + b * out_stride + a;
      if constexpr (B == 4) {
        auto r0 = value(d, hn::LoadU(d, from), b, a);
        auto r1 = value(d, hn::LoadU(d, from + in_stride), b, a + 1);
        auto r2 = value(d, hn::LoadU(d, from + 2 * in_stride), b, a + 2);
        auto r3 = value(d, hn::LoadU(d, from + 3 * in_stride), b, a + 3);
        Transpose4(d, r0, r1, r2, r3);
        hn::StoreU(r0, d, to);
        hn::StoreU(r1, d, to + out_stride);
        hn::StoreU(r2, d, to + 2 * out_stride);
        hn::StoreU(r3, d, to + 3 * out_stride);
      } else {
        const auto r0 = value(d, hn::LoadU(d, from), b, a);
        const auto r1 = value(d, hn::LoadU(d, from + in_stride), b, a + 1);
        hn::StoreU(hn::InterleaveLower(d, r0, r1), d, to);
        hn::StoreU(hn::InterleaveUpper(d, r0, r1), d, to + out_stride);
      }
    };
    // Block starts along a dimension of n: every B, and n - B to end.
    const auto each_start = [](std::int64_t n, const auto& f) {
      std::int64_t k = 0;
      for (; k + B <= n; k += B) f(k);
      if (k < n) f(n - B);
    };
    if constexpr (kAlongRows) {
      each_start(rows, [&](std::int64_t a) { each_start(cols, [&](std::int64_t b) { block(a, b); }); });
    } else {
      each_start(cols, [&](std::int64_t b) { each_start(rows, [&](std::int64_t a) { block(a, b); }); });
    }
    return;
  }
#endif
  const hn::CappedTag<T, 1> d1;
  const auto one = [&](std::int64_t a, std::int64_t b) {
    out[b * out_stride + a] = hn::GetLane(value(d1, hn::LoadU(d1, in + a * in_stride + b), b, a));
  };
  for (std::int64_t outer = 0; outer < (kAlongRows ? rows : cols); ++outer) {
    for (std::int64_t inner = 0; inner < (kAlongRows ? cols : rows); ++inner) {
      if constexpr (kAlongRows) {
        one(outer, inner);
      } else {
        one(inner, outer);
      }
    }
  }
}

// out[b * out_stride + a] = in[a * in_stride + b] for a < rows, b < cols:
// tiles into their class-major copy (kAlongRows: rows are positions) and out
// of it (columns are positions).
template <bool kAlongRows, class T>
void transpose(const T* in, std::int64_t in_stride, T* out, std::int64_t out_stride,
               std::int64_t rows, std::int64_t cols) {
  transpose_blocks<kAlongRows>(in, in_stride, out, out_stride, rows, cols,
                               [](auto, auto v, std::int64_t, std::int64_t) { return v; });
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_KERNELS_TRANSPOSE_INL_H_ toggle
