// Device memory that tensors own (the allocating forms on a device) and the
// copies between host and device memory. Allocation and release are stream
// ordered (cudaMallocAsync / cudaFreeAsync on the stream the memory was
// allocated on), so neither waits for the device.
#include <mutex>
#include <unordered_map>

#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace spatialsoftmax::cuda {
namespace {

// The stream each live allocation was made on, for its release.
struct Streams {
  std::mutex mutex;
  std::unordered_map<void*, cudaStream_t> of;
};

Streams& streams() {
  static Streams* s = new Streams;  // outlives static tensors
  return *s;
}

void release(void* data) {
  cudaStream_t stream = nullptr;
  {
    Streams& s = streams();
    const std::lock_guard lock(s.mutex);
    const auto it = s.of.find(data);
    if (it != s.of.end()) {
      stream = it->second;
      s.of.erase(it);
    }
  }
  // A destructor cannot throw: a stream destroyed meanwhile leaves the
  // synchronous release.
  if (cudaFreeAsync(data, stream) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(data);
  }
}

}  // namespace

Tensor allocate(DType dtype, const Shape& shape, bool zeroed, Device device,
                const ExecutionContext& context) {
  constexpr const char* op = "allocate";
  const std::size_t bytes =
      static_cast<std::size_t>(checked_numel(shape, "tensor")) * dtype_size(dtype);
  const cudaStream_t stream = stream_of(context);
  void* data = nullptr;
  check_cuda(cudaMallocAsync(&data, bytes == 0 ? 1 : bytes, stream), op, "cudaMallocAsync");
  {
    Streams& s = streams();
    const std::lock_guard lock(s.mutex);
    s.of[data] = stream;
  }
  Tensor t = Tensor::adopt(data, dtype, shape, device, &release);
  if (zeroed && bytes > 0)
    check_cuda(cudaMemsetAsync(data, 0, bytes, stream), op, "cudaMemsetAsync");
  return t;
}

void copy(void* dst, const void* src, std::size_t bytes, const ExecutionContext& context) {
  constexpr const char* op = "copy_to";
  if (bytes == 0) return;
  const cudaStream_t stream = stream_of(context);
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream), op, "cudaMemcpyAsync");
  // The copy is complete when copy_to returns: host memory may be read (or
  // freed) right after it.
  check_cuda(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
}

}  // namespace spatialsoftmax::cuda
