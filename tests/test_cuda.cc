// softmax, log_softmax, entropy and their backward on a GPU against the CPU
// (CTest label `cuda`); where no GPU is present every test reports skipped,
// with the reason.
#include <gtest/gtest.h>

#include "cuda_test_support.h"
#include "spatialsoftmax/spatialsoftmax.h"

namespace spatialsoftmax {
namespace {

using testing::bitwise_equal;
using testing::Cuda;
using testing::DeviceBuffer;
using testing::expect_close;
using testing::random_uniform;

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

// The allocating forms return tensors that own device memory; copy_to
// moves them to the host and back, bit for bit.
TEST_F(Cuda, AllocatingFormsReturnDeviceTensorsThatCopyToMoves) {
  const Tensor x = random_uniform(DType::kFloat32, {3, 33, 65}, -4, 4, 9);
  const Tensor on_device = copy_to(x, Device::cuda(0));
  EXPECT_EQ(on_device.device(), Device::cuda(0));
  EXPECT_TRUE(bitwise_equal(copy_to(on_device, Device::cpu()), x));
  const Tensor prob = softmax(on_device, ClassAxis::kLast);
  EXPECT_EQ(prob.device(), Device::cuda(0));
  expect_close(copy_to(prob, Device::cpu()), softmax(x, ClassAxis::kLast), 2e-5);
  const CrossEntropyResult r = cross_entropy_forward_backward(
      on_device, copy_to(testing::random_labels(DType::kInt64, {3, 33}, 65, 10), Device::cuda(0)),
      [] {
        CrossEntropyOptions o;
        o.class_axis = ClassAxis::kLast;
        return o;
      }());
  EXPECT_EQ(r.loss.device(), Device::cuda(0));
  EXPECT_EQ(r.grad_logits.device(), Device::cuda(0));
}

}  // namespace
}  // namespace spatialsoftmax
