// The groups that share one class row (the Group of reference/rows.h) and
// who computes which position. A warp: lane l takes classes l, l + 32, ...,
// max and sum are xor butterflies, so every lane ends with the same bits
// (each step adds the same two values, in either order). A block: thread t
// takes classes t, t + 256, ..., reductions are block_reduce's fixed tree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

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

struct BlockRow {
  std::int64_t first = 0;  // the thread
  std::int64_t step = kThreads;

  template <class T>
  __device__ T max(T v) const {
    return block_reduce(v, [](T a, T b) { return core::rows::max_keep_nan(a, b); });
  }
  template <class T>
  __device__ T sum(T v) const {
    return block_reduce(v, [](T a, T b) { return a + b; });
  }
  __device__ void sync() const { __syncthreads(); }
};

// How positions map onto threads. Class-first rows are strided by the
// pixels, and neighbouring positions are neighbours in memory: a thread
// each. Class-last rows are contiguous: short ones (C <= 32) a thread each
// too (a warp reads 32 neighbouring rows), longer ones a warp each, and rows
// beyond 1024 classes a block each, so that a row's re-reads stay in cache
// and the reductions have 256 threads.
enum class RowMapping { kThread, kWarp, kBlock };

inline RowMapping row_mapping(const core::Geometry& g) {
  if (!g.class_last || g.classes <= kWarp) return RowMapping::kThread;
  return g.classes <= 1024 ? RowMapping::kWarp : RowMapping::kBlock;
}

// At most this many blocks: the loops below stride over the rest, so no
// size overflows the grid.
constexpr std::int64_t kMaxRowBlocks = std::int64_t{1} << 20;

// Calls f(i, group, lead) for each of this thread's positions i in turn (a
// grid-stride loop); `lead` marks the one thread of the group that holds
// per-position results. Every thread of a group reaches the same calls.
template <RowMapping kMapping, class F>
__device__ void for_this_row(std::int64_t positions, F&& f) {
  if constexpr (kMapping == RowMapping::kBlock) {
    for (std::int64_t i = blockIdx.x; i < positions; i += gridDim.x)
      f(i, BlockRow{threadIdx.x}, threadIdx.x == 0);
  } else if constexpr (kMapping == RowMapping::kWarp) {
    const int lane = static_cast<int>(threadIdx.x % kWarp);
    const std::int64_t step = std::int64_t{gridDim.x} * kWarpsPerBlock;
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

// The dynamic shared memory that stages one block row (a block-mapped
// position's logits, copied once and read by every pass from there), or 0
// where rows are not block-mapped or a row does not fit beside the
// kernel's own shared memory on the current device.
std::size_t row_staging_bytes(const core::Geometry& g, std::size_t element_bytes);
// Lets `kernel` take `bytes` of dynamic shared memory (beyond the default
// 48 KiB it must ask); Error naming `op` if the device refuses.
void allow_dynamic_shared_memory(const void* kernel, std::size_t bytes, const char* op);

// The grid of a row kernel (0 for no positions).
inline unsigned row_grid(const core::Geometry& g) {
  const RowMapping mapping = row_mapping(g);
  const std::int64_t per_block = mapping == RowMapping::kBlock  ? 1
                                 : mapping == RowMapping::kWarp ? kWarpsPerBlock
                                                                : kThreads;
  const std::int64_t needed = (g.positions() + per_block - 1) / per_block;
  return static_cast<unsigned>(needed < kMaxRowBlocks ? needed : kMaxRowBlocks);
}

// Launches a row kernel: launch(mapping, blocks) with the mapping as a
// compile-time constant (std::integral_constant) and row_grid's size, or
// nothing when there are no positions.
template <class Launch>
void launch_rows(const core::Geometry& g, Launch&& launch) {
  const unsigned blocks = row_grid(g);
  if (blocks == 0) return;
  switch (row_mapping(g)) {
    case RowMapping::kThread:
      launch(std::integral_constant<RowMapping, RowMapping::kThread>{}, blocks);
      break;
    case RowMapping::kWarp:
      launch(std::integral_constant<RowMapping, RowMapping::kWarp>{}, blocks);
      break;
    case RowMapping::kBlock:
      launch(std::integral_constant<RowMapping, RowMapping::kBlock>{}, blocks);
      break;
  }
}

}  // namespace spatialsoftmax::cuda
