// Entry points of the CUDA kernels (src/cuda), launched on the context's
// stream. Each launcher checks the launch and throws spatialsoftmax::Error
// naming `op` if it failed; none synchronises with the host.
#pragma once

#include "reference/problems.h"
#include "spatialsoftmax/device.h"

namespace spatialsoftmax::cuda {

// softmax.cu: softmax, log_softmax and entropy over the class axis (a
// thread per position class-first, a warp per position class-last), and
// their backward.
template <class T>
void softmax(const core::SoftmaxProblem<T>& problem, const ExecutionContext& context);
template <class T>
void softmax_backward(const core::SoftmaxBackwardProblem<T>& problem,
                      const ExecutionContext& context);

}  // namespace spatialsoftmax::cuda
