// Device memory that tensors own (the allocating forms on a device), the
// copies between host and device memory, and the shared memory that stages
// block rows. Allocation and release are stream
// ordered (cudaMallocAsync / cudaFreeAsync on the stream the memory was
// allocated on), so neither waits for the device.
#include <mutex>
#include <unordered_map>

#include "cuda/group.cuh"
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

std::size_t row_staging_bytes(const core::Geometry& g, std::size_t element_bytes) {
  if (row_mapping(g) != RowMapping::kBlock) return 0;
  // The opt-in maximum of the current device, less room for the kernels'
  // static shared memory (block_reduce's slots).
  constexpr std::size_t kStaticReserve = 16 << 10;
  int device = 0, optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  const std::size_t bytes = static_cast<std::size_t>(g.classes) * element_bytes;
  return bytes + kStaticReserve <= static_cast<std::size_t>(optin) ? bytes : 0;
}

void allow_dynamic_shared_memory(const void* kernel, std::size_t bytes, const char* op) {
  if (bytes <= (48 << 10)) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)),
             op, "cudaFuncSetAttribute (dynamic shared memory)");
}

}  // namespace spatialsoftmax::cuda
