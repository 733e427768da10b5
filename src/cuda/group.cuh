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
  // Every lane's reads before any lane's writes (dX over X).
  __device__ void sync() const { __syncwarp(); }
};

// Who computes which positions: a thread each class-first (kWarpRows false),
// a warp each class-last, in a grid-stride loop over a grid of at most
// kMaxRowBlocks blocks (so that no size overflows the grid). Calls
// f(i, group, lead) for each of this thread's positions i in turn; `lead`
// marks the one thread of the group that holds per-position results.
constexpr std::int64_t kMaxRowBlocks = std::int64_t{1} << 20;

template <bool kWarpRows, class F>
__device__ void for_this_row(std::int64_t positions, F&& f) {
  if constexpr (kWarpRows) {
    const int lane = static_cast<int>(threadIdx.x % kWarp);
    const std::int64_t step = std::int64_t{gridDim.x} * kWarpsPerBlock;
    // i is the same for the whole warp.
    for (std::int64_t i = blockIdx.x * std::int64_t{kWarpsPerBlock} + threadIdx.x / kWarp;
         i < positions; i += step) {
      f(i, Warp{lane}, lane == 0);
    }
  } else {
    const std::int64_t step = std::int64_t{gridDim.x} * kThreads;
    for (std::int64_t i = blockIdx.x * std::int64_t{kThreads} + threadIdx.x; i < positions;
         i += step) {
      f(i, core::rows::Solo{}, true);
    }
  }
}

// The blocks for_this_row runs on for a problem's positions; 0 for none (a
// launcher launches nothing then).
inline unsigned row_blocks(const core::Geometry& g) {
  const std::int64_t per_block = g.class_last ? kWarpsPerBlock : kThreads;
  const std::int64_t blocks = (g.positions() + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks < kMaxRowBlocks ? blocks : kMaxRowBlocks);
}

}  // namespace spatialsoftmax::cuda
