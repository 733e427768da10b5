// Scoped settings of the kernel tests: one SIMD target forced, or a thread
// count, restored at the end of the scope.
#pragma once

#include <cstdint>

#include "cpu/kernels.h"
#include "spatialsoftmax/threads.h"

namespace spatialsoftmax::testing {

// Dispatches the Highway kernels to one target only (one of
// cpu::supported_targets()).
class ScopedTarget {
 public:
  explicit ScopedTarget(std::int64_t target) { cpu::use_only_target_for_test(target); }
  ~ScopedTarget() { cpu::use_only_target_for_test(0); }
  ScopedTarget(const ScopedTarget&) = delete;
  ScopedTarget& operator=(const ScopedTarget&) = delete;
};

class ScopedThreads {
 public:
  explicit ScopedThreads(int n) : old_(num_threads()) { set_num_threads(n); }
  ~ScopedThreads() { set_num_threads(old_); }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int old_;
};

}  // namespace spatialsoftmax::testing
