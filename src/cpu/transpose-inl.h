// Transposes between a position-major tile (element c of position j at
// j * C + c) and its class- or channel-major copy, per SIMD target, and the
// plain tiles' class-last copies built on them.

// Per-target include guard, as Highway's own -inl headers do it.
#if defined(SPATIALSOFTMAX_CPU_TRANSPOSE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_TRANSPOSE_INL_H_
#undef SPATIALSOFTMAX_CPU_TRANSPOSE_INL_H_
#else
#define SPATIALSOFTMAX_CPU_TRANSPOSE_INL_H_
#endif

#include <hwy/highway.h>

#include <cstdint>

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
      each_start(rows,
                 [&](std::int64_t a) { each_start(cols, [&](std::int64_t b) { block(a, b); }); });
    } else {
      each_start(cols,
                 [&](std::int64_t b) { each_start(rows, [&](std::int64_t a) { block(a, b); }); });
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

// Pass 3 of a class-last tile: out[j * C + c] = value(d, e, j, c) for the
// class-major e (row stride W), by transpose_blocks, or for 2 or 3 classes
// by interleaving stores of whole vectors of positions.
template <class T, class Value>
void class_last_outputs(const T* e, std::int64_t W, std::int64_t count, std::int64_t C, T* out,
                        const Value& value) {
  std::int64_t j0 = 0;
#if HWY_TARGET != HWY_SCALAR
  if (C == 2 || C == 3) {
    const hn::ScalableTag<T> d;
    const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
    for (; j0 + N <= count; j0 += N) {
      const auto v0 = value(d, hn::LoadU(d, e + j0), j0, 0);
      const auto v1 = value(d, hn::LoadU(d, e + W + j0), j0, 1);
      if (C == 2) {
        hn::StoreInterleaved2(v0, v1, d, out + j0 * C);
      } else {
        hn::StoreInterleaved3(v0, v1, value(d, hn::LoadU(d, e + 2 * W + j0), j0, 2), d,
                              out + j0 * C);
      }
    }
  }
#endif
  const auto shifted = [&](auto dd, auto v, std::int64_t j, std::int64_t c) {
    return value(dd, v, j + j0, c);
  };
  transpose_blocks<false>(e + j0, W, out + j0 * C, C, C, count - j0, shifted);
}

// The class-major copy xs (row stride W) of `count` class-last positions at
// x (x[j * C + c]), the inverse of class_last_outputs: 2 or 3 classes by
// deinterleaving loads of whole vectors of positions, else transpose_blocks.
template <class T>
void class_last_inputs(const T* x, std::int64_t count, std::int64_t C, T* xs, std::int64_t W) {
  std::int64_t done = 0;
  if (C == 2 || C == 3) {
    const hn::ScalableTag<T> d;
    const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
    for (; done + N <= count; done += N) {
      const T* from = x + done * C;
      hn::Vec<decltype(d)> v0, v1, v2;
      if (C == 2) {
        hn::LoadInterleaved2(d, from, v0, v1);
      } else {
        hn::LoadInterleaved3(d, from, v0, v1, v2);
        hn::StoreU(v2, d, xs + 2 * W + done);
      }
      hn::StoreU(v0, d, xs + done);
      hn::StoreU(v1, d, xs + W + done);
    }
  }
  transpose<true>(x + done * C, C, xs + done, W, count - done, C);
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_TRANSPOSE_INL_H_ toggle
