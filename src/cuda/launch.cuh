// What every CUDA kernel file shares: block size, launch checks, the
// context's stream, stream-ordered scratch memory and the fixed-order sums
// that make every reduction bitwise identical from run to run (no
// floating-point atomics anywhere).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "spatialsoftmax/device.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::cuda {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kThreads / kWarp;

inline unsigned blocks_for(std::int64_t threads) {
  return static_cast<unsigned>((threads + kThreads - 1) / kThreads);
}

inline void check_cuda(cudaError_t e, std::string_view op, const char* what) {
  if (e != cudaSuccess) {
    throw Error(std::string(op) + ": " + what + " failed: " + cudaGetErrorString(e));
  }
}
// After a launch: a configuration error (never a kernel's own failure, which
// would need a synchronisation to see).
inline void check_launch(const char* op) {
  check_cuda(cudaGetLastError(), op, "CUDA kernel launch");
}

inline cudaStream_t stream_of(const ExecutionContext& context) {
  return static_cast<cudaStream_t>(context.cuda_stream);
}

// Device scratch for one operation, allocated and freed in stream order
// (cudaMallocAsync), so that it neither synchronises nor breaks a CUDA
// graph capture.
class Workspace {
 public:
  Workspace(std::size_t bytes, cudaStream_t stream, const char* op) : stream_(stream) {
    check_cuda(cudaMallocAsync(&data_, bytes == 0 ? 1 : bytes, stream), op, "cudaMallocAsync");
  }
  Workspace(Workspace&& other) noexcept : data_(other.data_), stream_(other.stream_) {
    other.data_ = nullptr;
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  Workspace& operator=(Workspace&&) = delete;
  ~Workspace() {
    if (data_) cudaFreeAsync(data_, stream_);
  }
  template <class U>
  U* at(std::size_t byte_offset) const {
    return reinterpret_cast<U*>(static_cast<char*>(data_) + byte_offset);
  }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

// op over one T per thread of the block, in a fixed tree order (thread t
// takes op(v[t], v[t + w]) for w = kThreads/2, ..., 1), so the bits depend on
// the values alone; every thread gets the result. The slots hold T widened to
// double (exact) and op works in T. All threads of the block must call it.
template <class T, class Op>
__device__ T block_reduce(T v, Op op) {
  __shared__ double slots[kThreads];
  slots[threadIdx.x] = static_cast<double>(v);
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) {
      slots[threadIdx.x] = static_cast<double>(
          op(static_cast<T>(slots[threadIdx.x]), static_cast<T>(slots[threadIdx.x + width])));
    }
    __syncthreads();
  }
  const T result = static_cast<T>(slots[0]);
  __syncthreads();  // before a next call overwrites the slots
  return result;
}

__device__ inline double block_sum(double v) {
  return block_reduce(v, [](double a, double b) { return a + b; });
}

// The max, keeping a NaN (a max is exact: any order gives the same bits).
__device__ inline double block_max(double v) {
  return block_reduce(v, [](double a, double b) { return (b > a || b != b) ? b : a; });
}

// The sum of partials[k * stride] for k in [0, count), by one block: each
// thread sums its k = t, t + kThreads, ... in order, then block_sum. The
// order depends on `count` only.
__device__ inline double sum_partials(const double* partials, std::int64_t count,
                                      std::int64_t stride = 1) {
  double s = 0;
  for (std::int64_t k = threadIdx.x; k < count; k += kThreads) s += partials[k * stride];
  return block_sum(s);
}

}  // namespace spatialsoftmax::cuda
