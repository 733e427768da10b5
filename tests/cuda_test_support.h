// Shared by the GPU tests (test_cuda*.cc, CTest label `cuda`): device
// copies of host tensors, and a fixture that skips, with the reason, where
// no GPU is present.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {

inline std::string why_no_gpu() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
  if (count == 0) return "no CUDA device";
  return {};
}

// A device copy of a host tensor (or uninitialized device memory), freed
// with it.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const Tensor& host) : dtype_(host.dtype()), shape_(host.shape()) {
    EXPECT_EQ(cudaMalloc(&data_, std::max<std::size_t>(host.nbytes(), 1)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, host.data(), host.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceBuffer(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
    EXPECT_EQ(cudaMalloc(&data_, std::max<std::size_t>(bytes(), 1)), cudaSuccess);
    EXPECT_EQ(cudaMemset(data_, 0xff, bytes()), cudaSuccess);  // NaN where not written
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(data_); }

  TensorView view() const { return TensorView(data_, dtype_, shape_, Device::cuda(0)); }
  MutableTensorView out() const {
    return MutableTensorView(data_, dtype_, shape_, Device::cuda(0));
  }
  Tensor to_host() const {
    Tensor host = Tensor::uninitialized(dtype_, shape_);
    EXPECT_EQ(cudaMemcpy(host.data(), data_, host.nbytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

 private:
  std::size_t bytes() const {
    return static_cast<std::size_t>(checked_numel(shape_, "buffer")) * dtype_size(dtype_);
  }
  void* data_ = nullptr;
  DType dtype_;
  Shape shape_;
};

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = why_no_gpu();
    if (!why.empty()) GTEST_SKIP() << "no GPU to run the CUDA backend on: " << why;
  }
};

// Elementwise |got - want| <= tolerance * (1 + |want|), NaN where want is NaN.
inline void expect_close(const Tensor& got, const Tensor& want, double tolerance,
                         const std::string& what = "") {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double w = want.at(i), g = got.at(i);
    if (std::isnan(w)) {
      ASSERT_TRUE(std::isnan(g)) << what << " element " << i << ": " << g << ", expected NaN";
      continue;
    }
    ASSERT_LE(std::abs(g - w), tolerance * (1 + std::abs(w)))
        << what << " element " << i << ": " << g << " vs the CPU's " << w;
  }
}

inline double tolerance_of(DType dtype) { return dtype == DType::kFloat32 ? 2e-5 : 1e-11; }

}  // namespace spatialsoftmax::testing
