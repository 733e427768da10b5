// A small persistent thread pool running fixed-size blocks of work. The
// caller's thread takes part; blocks are handed out in order, in runs of
// consecutive blocks per thread (a kernel may prefetch block b + 1), but may finish
// in any order, so callers keep one partial result per block and combine
// them in block order (never per thread) to stay deterministic.
#pragma once

#include <cstdint>
#include <functional>

namespace spatialsoftmax::parallel {

// Runs fn(block) for block in [0, blocks) on up to num_threads() threads
// (or the count of the calling thread's ThreadCount). Nested calls (from
// inside fn) run serially on the calling thread.
void for_each_block(std::int64_t blocks, const std::function<void(std::int64_t)>& fn);

// While it lives, for_each_block calls from this thread use `threads`
// (ExecutionContext::num_threads; 0 keeps num_threads()). Throws Error for a
// count outside [0, kMaxThreads].
class ThreadCount {
 public:
  explicit ThreadCount(int threads);
  ~ThreadCount();
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int previous_;
};

}  // namespace spatialsoftmax::parallel
