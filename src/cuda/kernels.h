// Entry points of the CUDA kernels (src/cuda), launched on the context's
// stream. Each launcher checks the launch and throws spatialsoftmax::Error
// naming the operation if it failed; none synchronises with the host. The
// loss launchers take their scalars from the problem's DeviceScalars
// (reference/problems.h): the labels' and weights' checks, the mean's
// denominator and the scalar loss are computed on the device.
#pragma once

#include <cstddef>
#include <string_view>

#include "reference/problems.h"
#include "spatialsoftmax/device.h"

namespace spatialsoftmax::cuda {

// softmax.cu: softmax, log_softmax and entropy, and their backward.
template <class T>
void softmax(const core::SoftmaxProblem<T>& problem, const ExecutionContext& context);
template <class T>
void softmax_backward(const core::SoftmaxBackwardProblem<T>& problem,
                      const ExecutionContext& context);

// cross_entropy.cu: cross-entropy and NLL, forward, backward and fused.
template <class T>
void cross_entropy(const core::CrossEntropyProblem<T>& problem, const ExecutionContext& context);

// kl_div.cu
template <class T>
void kl_div(const core::KlDivProblem<T>& problem, const ExecutionContext& context);

// prob_minus_target.cu: Caffe2's gradients from a supplied P.
template <class T>
void prob_minus_target(const core::ProbMinusTargetProblem<T>& problem,
                       const ExecutionContext& context);

// spatial_soft_argmax.cu: the spatial softmax and soft-argmax (grad_beta is
// not computed: it stays null in a device problem).
template <class T>
void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& problem,
                         const ExecutionContext& context);
template <class T>
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& problem,
                                  const ExecutionContext& context);

// memory.cu: dense device memory owned by a tensor (released in stream
// order on the stream it was allocated on), and a copy of `bytes` between
// any host and device memory, complete when it returns (cudaMemcpyDefault:
// unified addressing tells the directions apart).
Tensor allocate(DType dtype, const Shape& shape, bool zeroed, Device device,
                const ExecutionContext& context);
void copy(void* dst, const void* src, std::size_t bytes, const ExecutionContext& context);

// checks.cu: an Error naming `op` unless cuda:`index` is the calling
// thread's current CUDA device, where every launcher runs.
void check_current_device(int index, std::string_view op);
// checks.cu: the first error a device check recorded since the last call
// (after waiting for the context's stream if `wait`); false if none.
bool take_error(const ExecutionContext& context, bool wait, core::DeviceError* error);

}  // namespace spatialsoftmax::cuda
