// The number of threads the CPU kernels use. Results do not depend on it:
// work is split into fixed-size blocks and reductions combine the blocks'
// partial sums in block order, so every output is bitwise identical for any
// thread count.
#pragma once

namespace spatialsoftmax {

// The most threads the kernels start: more would only add wake-up cost.
inline constexpr int kMaxThreads = 256;

// The value of set_num_threads() once called; before that the environment
// variable SPATIALSOFTMAX_NUM_THREADS if set (an integer in [1, kMaxThreads];
// anything else throws spatialsoftmax::Error naming it), else the number of
// hardware threads, at most kMaxThreads.
int num_threads();
// n in [1, kMaxThreads]; throws spatialsoftmax::Error otherwise. Overrides
// the environment variable; affects later calls from any thread.
void set_num_threads(int n);

}  // namespace spatialsoftmax
