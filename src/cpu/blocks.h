// Work blocks of the kernels and their sizes: plain C++, shared by every
// target. A block's extent depends on the geometry (and for the tiles the
// SIMD target) only, never on the thread count, so that every sum is made
// of the same partial sums in the same order at any thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#include "parallel/thread_pool.h"
#include "reference/problems.h"

namespace spatialsoftmax::cpu {

inline std::int64_t round_up(std::int64_t n, std::int64_t to) { return (n + to - 1) / to * to; }

// The work blocks of every kernel: runs of at most `len` consecutive
// positions that never cross an image (with P = 1 the layouts coincide and
// runs go across the batch), so both layouts cut the positions alike. Calls
// fn(block, i0, count) in parallel; the blocks depend on the geometry and
// `len` only, never on the thread count.
template <class F>
void for_each_span(const core::Geometry& g, std::int64_t len, F&& fn) {
  const std::int64_t span = g.pixels == 1 ? g.positions() : g.pixels;
  if (span == 0 || g.positions() == 0) return;
  const std::int64_t per_span = (span + len - 1) / len;
  parallel::for_each_block(g.positions() / span * per_span, [&](std::int64_t b) {
    const std::int64_t first = (b % per_span) * len;
    fn(b, b / per_span * span + first, std::min(len, span - first));
  });
}

inline std::int64_t span_blocks(const core::Geometry& g, std::int64_t len) {
  const std::int64_t span = g.pixels == 1 ? g.positions() : g.pixels;
  if (span == 0 || g.positions() == 0) return 0;
  return g.positions() / span * ((span + len - 1) / len);
}

// Rows processed per block: about 256 KiB of X, at least one row.
template <class T>
std::int64_t rows_per_block(std::int64_t classes) {
  return std::max<std::int64_t>(1,
                                (std::int64_t{256} * 1024 / static_cast<std::int64_t>(sizeof(T))) /
                                    std::max<std::int64_t>(classes, 1));
}

// Whether outputs of this many bytes go around the cache (streaming
// stores): outputs this large would evict the cache anyway, and a streamed
// line is not read from memory before it is written. A fixed size, as the
// caches a VM reports say little (this one claims the socket's 256 MiB L3).
inline bool streams(std::int64_t output_bytes) { return output_bytes >= (std::int64_t{16} << 20); }

}  // namespace spatialsoftmax::cpu
