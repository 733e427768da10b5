// Views of device memory never reach a host read: weights and scalar
// gradients go to the device unread, and the API refuses, naming the
// argument, a strided view (it would be copied on the host) or an output to
// allocate; a device that no backend serves is an error of dispatch. The views point at an
// address no process maps, so any host read would crash the test instead of
// failing it.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

// Not a valid host address: reading it faults.
const void* const kDeviceAddress = reinterpret_cast<const void*>(std::uintptr_t{0x10});
void* const kDeviceOutput = reinterpret_cast<void*>(std::uintptr_t{0x1000});

TensorView on_device(DType dtype, Shape shape) {
  return TensorView(kDeviceAddress, dtype, std::move(shape), Device::cuda(0));
}

bool cuda_backend_compiled() {
  for (const std::string& name : backend_names())
    if (name.ends_with("(cuda)")) return true;
  return false;
}

// Device weights and scalar gradients are checked and read by the device's
// kernels: the call reaches dispatch without reading them (a host read of
// the fake address would crash). cuda:999 is no device, so dispatch refuses
// it on every machine, with a GPU or without, before any kernel runs.
TEST(DeviceGuards, DeviceWeightsReachDispatchUnread) {
  const Device nowhere = Device::cuda(999);
  const TensorView x(kDeviceAddress, DType::kFloat32, {2, 3, 4}, nowhere);
  const TensorView labels(kDeviceAddress, DType::kInt64, {2, 4}, nowhere);
  const TensorView weights(kDeviceAddress, DType::kFloat32, {3}, nowhere);
  CrossEntropyOptions o;
  o.class_weight = weights;
  o.pixel_weight = TensorView(kDeviceAddress, DType::kFloat32, {2, 4}, nowhere);
  const MutableTensorView loss(kDeviceOutput, DType::kFloat32, {}, nowhere);
  CrossEntropyOutputs out;
  out.loss = loss;
  EXPECT_ERROR_MENTIONS(cross_entropy_into(x, labels, out, o), {"cross_entropy_into", "cuda:999"});
}

TEST(DeviceGuards, DeviceScalarGradientsReachDispatchUnread) {
  const Device nowhere = Device::cuda(999);
  const TensorView x(kDeviceAddress, DType::kFloat32, {2, 3, 4}, nowhere);
  const TensorView target(kDeviceAddress, DType::kFloat32, {2, 3, 4}, nowhere);
  const TensorView grad(kDeviceAddress, DType::kFloat32, {}, nowhere);
  const MutableTensorView dx(kDeviceOutput, DType::kFloat32, {2, 3, 4}, nowhere);
  EXPECT_ERROR_MENTIONS(kl_div_backward_into(x, target, grad, dx),
                        {"kl_div_backward_into", "cuda:999"});
}

// The layout of device weights is still checked on the host.
TEST(DeviceGuards, DeviceWeightsOfTheWrongShapeAreRefused) {
  const TensorView x = on_device(DType::kFloat32, {2, 3, 4});
  const TensorView labels = on_device(DType::kInt64, {2, 4});
  CrossEntropyOptions o;
  o.class_weight = on_device(DType::kFloat32, {4});
  const MutableTensorView loss(kDeviceOutput, DType::kFloat32, {}, Device::cuda(0));
  CrossEntropyOutputs out;
  out.loss = loss;
  EXPECT_ERROR_MENTIONS(cross_entropy_into(x, labels, out, o), {"class_weight", "shape", "(3,)"});
}

// Nothing was recorded, so there is nothing to wait for: it returns on any
// machine, with or without a GPU or a CUDA backend.
TEST(DeviceGuards, CheckDeviceErrorsReturnsWhenNoDeviceCheckRan) {
  EXPECT_NO_THROW(check_device_errors());
}

TEST(DeviceGuards, StridedDeviceViewsAreRefused) {
  const TensorView strided(kDeviceAddress, DType::kFloat32, {2, 3, 4}, {24, 8, 2}, Device::cuda(0));
  const MutableTensorView prob(kDeviceOutput, DType::kFloat32, {2, 3, 4}, Device::cuda(0));
  EXPECT_ERROR_MENTIONS(softmax_into(strided, prob), {"logits", "strides", "dense", "cuda:0"});
}

// The allocating forms allocate device outputs through the device's backend,
// which refuses a device that is not there before anything is allocated.
TEST(DeviceGuards, AllocatingFormsAllocateOnTheInputsDevice) {
  const TensorView x(kDeviceAddress, DType::kFloat32, {2, 3, 4}, Device::cuda(999));
  EXPECT_ERROR_MENTIONS(softmax(x), {"softmax", "cuda:999"});
}

// Device memory is never read on the host: element reads and host copies of
// a device view refuse it, naming where the data is.
TEST(DeviceGuards, HostReadsOfDeviceViewsAreRefused) {
  const TensorView x = on_device(DType::kFloat32, {2, 3});
  EXPECT_ERROR_MENTIONS((void)x.at(0), {"TensorView::at", "cuda:0", "copy_to"});
  EXPECT_ERROR_MENTIONS((void)Tensor::copy_of(x), {"Tensor::copy_of", "cuda:0"});
  EXPECT_ERROR_MENTIONS((void)copy_to(x, Device::cuda(999)), {"copy_to", "cuda:999"});
}

TEST(DeviceGuards, CopyToTheCpuOfACpuViewIsADenseCopy) {
  const std::vector<float> values{1, 2, 3, 4, 5, 6};
  const TensorView strided(values.data(), DType::kFloat32, {3}, {2});
  const Tensor dense = copy_to(strided, Device::cpu());
  EXPECT_EQ(dense.shape(), Shape{3});
  EXPECT_EQ(dense.at(2), 5.0);
  EXPECT_EQ(dense.device(), Device::cpu());
}

TEST(DeviceGuards, ADeviceNoBackendServesIsAnErrorOfDispatch) {
  if (cuda_backend_compiled()) GTEST_SKIP() << "a CUDA backend is compiled in";
  const TensorView x = on_device(DType::kFloat32, {2, 3, 4});
  const MutableTensorView prob(kDeviceOutput, DType::kFloat32, {2, 3, 4}, Device::cuda(0));
  EXPECT_ERROR_MENTIONS(softmax_into(x, prob), {"softmax_into", "cuda:0"});
}

}  // namespace
}  // namespace spatialsoftmax
