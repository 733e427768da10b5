// A warp sharing one class row (the Group of reference/rows.h): lane l
// takes classes l, l + 32, ...; max and sum are xor butterflies, so every
// lane ends with the same bits (each step adds the same two values, in
// either order).
#pragma once

#include <cstdint>

#include "cuda/launch.cuh"
#include "reference/rows.h"

namespace spatialsoftmax::cuda {

struct Warp {
  std::int64_t first = 0;  // the lane
  std::int64_t step = kWarp;

  template <class T>
  __device__ T max(T v) const {
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      v = core::rows::max_keep_nan(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
  }
  template <class T>
  __device__ T sum(T v) const {
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
  }
};

// Who computes which position: a thread each class-first (kWarpRows false),
// a warp each class-last. Calls f(i, group, lead) for this thread's
// position i if there is one; `lead` marks the one thread of the group
// that holds per-position results.
template <bool kWarpRows, class F>
__device__ void for_this_row(std::int64_t positions, F&& f) {
  if constexpr (kWarpRows) {
    const std::int64_t i = blockIdx.x * std::int64_t{kWarpsPerBlock} + threadIdx.x / kWarp;
    const int lane = static_cast<int>(threadIdx.x % kWarp);
    if (i < positions) f(i, Warp{lane}, lane == 0);  // i is the same for the whole warp
  } else {
    const std::int64_t i = blockIdx.x * std::int64_t{kThreads} + threadIdx.x;
    if (i < positions) f(i, core::rows::Solo{}, true);
  }
}

// The blocks for_this_row needs for a problem's positions.
inline unsigned row_blocks(const core::Geometry& g) {
  const std::int64_t per_block = g.class_last ? kWarpsPerBlock : kThreads;
  return static_cast<unsigned>((g.positions() + per_block - 1) / per_block);
}

}  // namespace spatialsoftmax::cuda
