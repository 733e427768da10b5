// The number of threads the CPU kernels use. Results do not depend on it:
// work is split into fixed-size blocks and reductions combine the blocks'
// partial sums in block order, so every output is bitwise identical for any
// thread count.
#pragma once

namespace spatialsoftmax {

// Default: the environment variable SPATIALSOFTMAX_NUM_THREADS if set (a
// positive integer), else the number of hardware threads.
int num_threads();
// n >= 1; throws spatialsoftmax::Error otherwise. Affects later calls from
// any thread.
void set_num_threads(int n);

}  // namespace spatialsoftmax
