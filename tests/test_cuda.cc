// The CUDA backend against the CPU on a real GPU (CTest label `cuda`). Where
// no GPU is present every test reports skipped, with the reason.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

using testing::random_uniform;

std::string why_no_gpu() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
  if (count == 0) return "no CUDA device";
  return {};
}

// A device copy of a host tensor, freed with it.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const Tensor& host) : dtype_(host.dtype()), shape_(host.shape()) {
    EXPECT_EQ(cudaMalloc(&data_, std::max<std::size_t>(host.nbytes(), 1)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, host.data(), host.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceBuffer(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
    EXPECT_EQ(cudaMalloc(&data_, std::max<std::size_t>(bytes(), 1)), cudaSuccess);
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

void expect_close(const Tensor& got, const Tensor& want, double tolerance) {
  ASSERT_EQ(got.shape(), want.shape());
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double w = want.at(i);
    ASSERT_LE(std::abs(got.at(i) - w), tolerance * (1 + std::abs(w))) << "element " << i;
  }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

struct Case {
  Shape shape;
  ClassAxis axis;
};

const Case kCases[] = {
    {{2, 1, 5, 3}, ClassAxis::kFirst},     {{3, 7, 33}, ClassAxis::kFirst},
    {{2, 300, 17}, ClassAxis::kFirst},     {{2, 5, 3, 19}, ClassAxis::kLast},
    {{3, 33, 300}, ClassAxis::kLast},      {{64, 32000}, ClassAxis::kLast},
    {{1, 19, 7, 9, 5}, ClassAxis::kFirst},
};

TEST_F(Cuda, SoftmaxLogSoftmaxAndEntropyMatchTheCpu) {
  for (const DType dtype : {DType::kFloat32, DType::kFloat64}) {
    const double tolerance = dtype == DType::kFloat32 ? 2e-5 : 1e-12;
    for (const Case& c : kCases) {
      SCOPED_TRACE(shape_string(c.shape));
      const Tensor x = random_uniform(dtype, c.shape, -8, 8, 3);
      const DeviceBuffer dx(x), prob(dtype, c.shape), log_prob(dtype, c.shape);
      softmax_into(dx.view(), prob.out(), c.axis);
      log_softmax_into(dx.view(), log_prob.out(), c.axis);
      expect_close(prob.to_host(), softmax(x, c.axis), tolerance);
      expect_close(log_prob.to_host(), log_softmax(x, c.axis), tolerance);
      const Tensor h = entropy(x, c.axis);
      const DeviceBuffer dh(dtype, h.shape());
      entropy_into(dx.view(), dh.out(), c.axis);
      expect_close(dh.to_host(), h, tolerance);
      // Run to run, bitwise.
      const DeviceBuffer again(dtype, c.shape);
      softmax_into(dx.view(), again.out(), c.axis);
      EXPECT_TRUE(bitwise_equal(again.to_host(), prob.to_host()));
    }
  }
}

TEST_F(Cuda, SoftmaxBackwardMatchesTheCpu) {
  for (const DType dtype : {DType::kFloat32, DType::kFloat64}) {
    const double tolerance = dtype == DType::kFloat32 ? 2e-5 : 1e-12;
    for (const Case& c : kCases) {
      SCOPED_TRACE(shape_string(c.shape));
      const Tensor p = softmax(random_uniform(dtype, c.shape, -4, 4, 5), c.axis);
      const Tensor lp = log_softmax(random_uniform(dtype, c.shape, -4, 4, 5), c.axis);
      const Tensor g = random_uniform(dtype, c.shape, -1, 1, 6);
      const DeviceBuffer dp(p), dlp(lp), dg(g), out(dtype, c.shape), out_log(dtype, c.shape);
      softmax_backward_into(dp.view(), dg.view(), out.out(), c.axis);
      log_softmax_backward_into(dlp.view(), dg.view(), out_log.out(), c.axis);
      expect_close(out.to_host(), softmax_backward(p, g, c.axis), tolerance);
      expect_close(out_log.to_host(), log_softmax_backward(lp, g, c.axis), tolerance);
    }
  }
}

TEST_F(Cuda, OperationsWithoutKernelsSaySo) {
  const Tensor x = random_uniform(DType::kFloat32, {2, 3, 4}, -1, 1, 1);
  const Tensor labels(DType::kInt64, {2, 4});
  const DeviceBuffer dx(x), dy(labels), loss(DType::kFloat32, {});
  CrossEntropyOutputs out;
  out.loss = loss.out();
  EXPECT_ERROR_MENTIONS(cross_entropy_into(dx.view(), dy.view(), out),
                        {"cuda", "no CUDA kernel yet"});
}

}  // namespace
}  // namespace spatialsoftmax
