// softmax, log_softmax and entropy over the class axis, and their backward,
// on the GPU. Every reduction runs in a fixed order (a thread's loop over the
// classes, or a warp's butterfly), so results are bitwise identical from run
// to run; math in the input's precision, as on the CPU.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>

#include "cuda/kernels.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ inline float exp_of(float v) { return expf(v); }
__device__ inline double exp_of(double v) { return exp(v); }
__device__ inline float log_of(float v) { return logf(v); }
__device__ inline double log_of(double v) { return log(v); }

template <class T>
__device__ inline T warp_max(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v = fmax(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}
template <class T>
__device__ inline T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// The softmax of one position from its classes [first, classes) in steps of
// `step` (a whole row for a thread, a lane's share for a warp), with the
// reductions `reduce_max` / `reduce_sum` combining the shares.
template <class T, class ReduceMax, class ReduceSum>
__device__ void softmax_row(const T* x, std::int64_t stride, std::int64_t classes,
                            std::int64_t first, std::int64_t step, ReduceMax reduce_max,
                            ReduceSum reduce_sum, T* prob, T* log_prob, T* entropy_out) {
  T m = -std::numeric_limits<T>::infinity();
  for (std::int64_t c = first; c < classes; c += step) m = fmax(m, x[c * stride]);
  m = reduce_max(m);
  T s = 0;
  for (std::int64_t c = first; c < classes; c += step) s += exp_of(x[c * stride] - m);
  s = reduce_sum(s);
  const T log_s = log_of(s);
  T h = 0;
  for (std::int64_t c = first; c < classes; c += step) {
    const T lp = x[c * stride] - m - log_s;
    const T p = exp_of(lp);
    if (prob) prob[c * stride] = p;
    if (log_prob) log_prob[c * stride] = lp;
    if (entropy_out) h -= p * lp;
  }
  if (entropy_out) {
    h = reduce_sum(h);
    if (first == 0) *entropy_out = h;
  }
}

template <class T>
__global__ void softmax_per_thread(core::Geometry g, const T* x, T* prob, T* log_prob, T* entropy) {
  const std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (i >= g.positions()) return;
  const std::int64_t b = g.base(i);
  auto same = [](T v) { return v; };
  softmax_row(x + b, g.class_stride(), g.classes, 0, 1, same, same, prob ? prob + b : nullptr,
              log_prob ? log_prob + b : nullptr, entropy ? entropy + i : nullptr);
}

template <class T>
__global__ void softmax_per_warp(core::Geometry g, const T* x, T* prob, T* log_prob, T* entropy) {
  const std::int64_t i = (blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  if (i >= g.positions()) return;  // the whole warp: i is the same for its lanes
  const std::int64_t b = g.base(i);
  softmax_row(
      x + b, std::int64_t{1}, g.classes, std::int64_t{lane}, std::int64_t{kWarp},
      [](T v) { return warp_max(v); }, [](T v) { return warp_sum(v); }, prob ? prob + b : nullptr,
      log_prob ? log_prob + b : nullptr, entropy ? entropy + i : nullptr);
}

// dX from the output y and its upstream gradient g: from softmax
// dX = p (g - sum p g); from log_softmax dX = g - exp(logp) sum g.
template <class T, class ReduceSum>
__device__ void backward_row(const T* y, const T* g, T* dx, std::int64_t stride,
                             std::int64_t classes, std::int64_t first, std::int64_t step,
                             bool from_log, ReduceSum reduce_sum) {
  T acc = 0;
  for (std::int64_t c = first; c < classes; c += step)
    acc += from_log ? g[c * stride] : y[c * stride] * g[c * stride];
  acc = reduce_sum(acc);
  for (std::int64_t c = first; c < classes; c += step) {
    const std::int64_t o = c * stride;
    dx[o] = from_log ? g[o] - exp_of(y[o]) * acc : y[o] * (g[o] - acc);
  }
}

template <class T>
__global__ void backward_per_thread(core::Geometry geom, bool from_log, const T* y, const T* g,
                                    T* dx) {
  const std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (i >= geom.positions()) return;
  const std::int64_t b = geom.base(i);
  backward_row(y + b, g + b, dx + b, geom.class_stride(), geom.classes, 0, 1, from_log,
               [](T v) { return v; });
}

template <class T>
__global__ void backward_per_warp(core::Geometry geom, bool from_log, const T* y, const T* g,
                                  T* dx) {
  const std::int64_t i = (blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  if (i >= geom.positions()) return;
  const std::int64_t b = geom.base(i);
  backward_row(y + b, g + b, dx + b, std::int64_t{1}, geom.classes, std::int64_t{lane},
               std::int64_t{kWarp}, from_log, [](T v) { return warp_sum(v); });
}

unsigned blocks_for(std::int64_t threads) {
  return static_cast<unsigned>((threads + kThreads - 1) / kThreads);
}

void check_launch(const char* op) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(std::string(op) + ": CUDA kernel launch failed: " + cudaGetErrorString(e));
}

cudaStream_t stream_of(const ExecutionContext& context) {
  return static_cast<cudaStream_t>(context.cuda_stream);
}

}  // namespace

template <class T>
void softmax(const core::SoftmaxProblem<T>& p, const ExecutionContext& context) {
  const core::Geometry& g = p.geom;
  // Class-last rows are contiguous: a warp reads one coalesced; class-first
  // neighbouring positions are neighbours in memory: a thread each.
  if (g.class_last) {
    softmax_per_warp<T><<<blocks_for(g.positions() * kWarp), kThreads, 0, stream_of(context)>>>(
        g, p.logits, p.prob, p.log_prob, p.entropy);
  } else {
    softmax_per_thread<T><<<blocks_for(g.positions()), kThreads, 0, stream_of(context)>>>(
        g, p.logits, p.prob, p.log_prob, p.entropy);
  }
  check_launch("softmax");
}

template <class T>
void softmax_backward(const core::SoftmaxBackwardProblem<T>& p, const ExecutionContext& context) {
  const core::Geometry& g = p.geom;
  if (g.class_last) {
    backward_per_warp<T><<<blocks_for(g.positions() * kWarp), kThreads, 0, stream_of(context)>>>(
        g, p.from_log_softmax, p.output, p.grad_output, p.grad_logits);
  } else {
    backward_per_thread<T><<<blocks_for(g.positions()), kThreads, 0, stream_of(context)>>>(
        g, p.from_log_softmax, p.output, p.grad_output, p.grad_logits);
  }
  check_launch("softmax_backward");
}

template void softmax<float>(const core::SoftmaxProblem<float>&, const ExecutionContext&);
template void softmax<double>(const core::SoftmaxProblem<double>&, const ExecutionContext&);
template void softmax_backward<float>(const core::SoftmaxBackwardProblem<float>&,
                                      const ExecutionContext&);
template void softmax_backward<double>(const core::SoftmaxBackwardProblem<double>&,
                                       const ExecutionContext&);

}  // namespace spatialsoftmax::cuda
