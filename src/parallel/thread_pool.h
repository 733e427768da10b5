// A small persistent thread pool running fixed-size blocks of work. The
// caller's thread takes part; blocks are handed out in order, in runs of
// consecutive blocks per thread (a kernel may prefetch block b + 1), but may finish
// in any order, so callers keep one partial result per block and combine
// them in block order (never per thread) to stay deterministic.
#pragma once

#include <cstdint>
#include <functional>

namespace spatialsoftmax::parallel {

// Runs fn(block) for block in [0, blocks) on up to num_threads() threads.
// Nested calls (from inside fn) run serially on the calling thread.
void for_each_block(std::int64_t blocks, const std::function<void(std::int64_t)>& fn);

}  // namespace spatialsoftmax::parallel
