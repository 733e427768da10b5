// The `_into` forms (caller-provided outputs), devices and the execution
// context (issue 11, item 3). Oracle: the allocating forms, whose outputs the
// `_into` forms must reproduce bitwise into buffers that start as NaN; and
// every check on an output view must leave the caller's buffers as they were.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

// A float32 buffer filled with NaN, seen as a writable view.
struct Buffer {
  explicit Buffer(Shape s)
      : shape(std::move(s)),
        data(static_cast<std::size_t>(std::max<std::int64_t>(1, checked_numel(shape, "buffer"))),
             std::numeric_limits<float>::quiet_NaN()) {}
  MutableTensorView view() { return MutableTensorView(data.data(), DType::kFloat32, shape); }
  Shape shape;
  std::vector<float> data;
};

void expect_same_bits(const Tensor& want, const Buffer& got, const char* what) {
  ASSERT_TRUE(want.defined()) << what;
  ASSERT_EQ(want.shape(), got.shape) << what;
  EXPECT_EQ(std::memcmp(want.data(), got.data.data(), want.nbytes()), 0)
      << what << ": differs from the allocating form";
}

bool all_nan(const Buffer& b) {
  for (float v : b.data) {
    if (!std::isnan(v)) return false;
  }
  return true;
}

class IntoForms : public ::testing::Test {
 protected:
  const Shape shape_{2, 5, 3, 4};  // (N, C, H, W)
  const Shape map_{2, 3, 4};
  Tensor x_ = random_uniform(DType::kFloat32, shape_, -3, 3, 1);
  Tensor y_ = random_labels(DType::kInt64, map_, 5, 2);
  Tensor grad_ = random_uniform(DType::kFloat32, shape_, -1, 1, 3);
  Tensor p_target_ = softmax(random_uniform(DType::kFloat32, shape_, -2, 2, 4));
};

TEST_F(IntoForms, SoftmaxFamilyMatchesTheAllocatingForms) {
  Buffer prob(shape_), log_prob(shape_), h(map_), dx(shape_), dlx(shape_);
  softmax_into(x_, prob.view());
  log_softmax_into(x_, log_prob.view());
  entropy_into(x_, h.view());
  const Tensor p = softmax(x_), lp = log_softmax(x_);
  softmax_backward_into(p, grad_, dx.view());
  log_softmax_backward_into(lp, grad_, dlx.view());
  expect_same_bits(p, prob, "softmax");
  expect_same_bits(lp, log_prob, "log_softmax");
  expect_same_bits(entropy(x_), h, "entropy");
  expect_same_bits(softmax_backward(p, grad_), dx, "softmax_backward");
  expect_same_bits(log_softmax_backward(lp, grad_), dlx, "log_softmax_backward");
}

TEST_F(IntoForms, CrossEntropyOutputsMatchTheAllocatingForms) {
  for (const Reduction reduction : {Reduction::kMean, Reduction::kNone}) {
    CrossEntropyOptions o = CrossEntropyOptions::pytorch();
    o.reduction = reduction;
    o.label_smoothing = 0.2;
    o.want_prob = o.want_log_prob = o.want_entropy = true;
    const CrossEntropyResult want = cross_entropy_forward_backward(x_, y_, o);
    Buffer loss(reduction == Reduction::kNone ? map_ : Shape{}), prob(shape_), log_prob(shape_),
        h(map_), dx(shape_);
    CrossEntropyOutputs out;
    out.loss = loss.view();
    out.prob = prob.view();
    out.log_prob = log_prob.view();
    out.entropy = h.view();
    out.grad_logits = dx.view();
    cross_entropy_forward_backward_into(x_, y_, out, o);
    expect_same_bits(want.loss, loss, "loss");
    expect_same_bits(want.prob, prob, "prob");
    expect_same_bits(want.log_prob, log_prob, "log_prob");
    expect_same_bits(want.entropy, h, "entropy");
    expect_same_bits(want.grad_logits, dx, "grad_logits");

    // The forward alone, with only the loss asked for (the want_* flags are
    // not read), and the backward.
    Buffer loss_only(loss.shape), grad_only(shape_);
    CrossEntropyOutputs forward;
    forward.loss = loss_only.view();
    cross_entropy_into(x_, p_target_, forward, o);
    expect_same_bits(cross_entropy(x_, p_target_, o).loss, loss_only, "loss, probability targets");
    CrossEntropyGrads grads;
    grads.prob = grad_.view();
    cross_entropy_backward_into(x_, y_, grads, grad_only.view(), o);
    expect_same_bits(cross_entropy_backward(x_, y_, grads, o), grad_only, "cross_entropy_backward");
  }
}

TEST_F(IntoForms, GradOverTheLogitsIsTheInPlaceCall) {
  const CrossEntropyOptions o = CrossEntropyOptions::caffe2_spatial();
  Tensor copy = Tensor::copy_of(x_);
  const CrossEntropyResult want = cross_entropy_forward_backward_in_place(std::move(copy), y_, o);
  Tensor logits = Tensor::copy_of(x_);
  Buffer loss({});
  CrossEntropyOutputs out;
  out.loss = loss.view();
  out.grad_logits = logits.mutable_view();
  cross_entropy_forward_backward_into(logits, y_, out, o);
  EXPECT_TRUE(bitwise_equal(want.grad_logits, logits));
  expect_same_bits(want.loss, loss, "loss");
  // log_prob needs X, which dX replaces.
  Buffer log_prob(shape_);
  out.log_prob = log_prob.view();
  EXPECT_ERROR_MENTIONS(
      cross_entropy_forward_backward_into(logits, y_, out, o),
      {"cross_entropy_forward_backward_into", "outputs.log_prob", "dX is written over the logits"});
}

TEST_F(IntoForms, NllKlAndSpatialMatchTheAllocatingForms) {
  const CrossEntropyOptions o = CrossEntropyOptions::pytorch();
  const Tensor lp = log_softmax(x_);
  Buffer nll({}), dnll(shape_);
  nll_loss_into(lp, y_, nll.view(), o);
  expect_same_bits(nll_loss(lp, y_, o), nll, "nll_loss");
  const Tensor half = Tensor::scalar(DType::kFloat32, 0.5);
  nll_loss_backward_into(lp, y_, half, dnll.view(), o);
  expect_same_bits(nll_loss_backward(lp, y_, half, o), dnll, "nll_loss_backward");

  for (const Reduction reduction : {Reduction::kBatchMean, Reduction::kNone}) {
    KlDivOptions k;
    k.reduction = reduction;
    Buffer out(reduction == Reduction::kNone ? shape_ : Shape{}), dx(shape_);
    kl_div_into(x_, p_target_, out.view(), k);
    expect_same_bits(kl_div(x_, p_target_, k), out, "kl_div");
    const Tensor g = reduction == Reduction::kNone ? Tensor::copy_of(grad_)
                                                   : Tensor::scalar(DType::kFloat32, 1.5);
    kl_div_backward_into(x_, p_target_, g, dx.view(), k);
    expect_same_bits(kl_div_backward(x_, p_target_, g, k), dx, "kl_div_backward");
  }

  SpatialSoftArgmaxOptions s;
  s.want_softmax = s.want_covariance = true;
  const SpatialSoftArgmaxResult want = spatial_soft_argmax(x_, s);
  Buffer keypoints({2, 5, 2}), sm(shape_), cov({2, 5, 2, 2}), sm_only(shape_), dx(shape_);
  SpatialSoftArgmaxOutputs out;
  out.keypoints = keypoints.view();
  out.softmax = sm.view();
  out.covariance = cov.view();
  spatial_soft_argmax_into(x_, out, s);
  expect_same_bits(want.keypoints, keypoints, "keypoints");
  expect_same_bits(want.softmax, sm, "spatial softmax");
  expect_same_bits(want.covariance, cov, "covariance");
  spatial_softmax_into(x_, sm_only.view(), s);
  expect_same_bits(spatial_softmax(x_, s), sm_only, "spatial_softmax");
  SpatialSoftArgmaxGrads g;
  g.softmax = grad_.view();
  const SpatialSoftArgmaxBackward b = spatial_soft_argmax_backward(x_, g, s);
  EXPECT_EQ(spatial_soft_argmax_backward_into(x_, g, dx.view(), s), b.grad_temperature);
  expect_same_bits(b.grad_input, dx, "spatial grad_input");
}

TEST_F(IntoForms, BadOutputViewsAreRefusedAndNothingIsWritten) {
  Buffer prob(shape_), small({2, 5, 3}), other(shape_);
  std::vector<double> doubles(static_cast<std::size_t>(x_.numel()));
  EXPECT_ERROR_MENTIONS(softmax_into(x_, small.view()),
                        {"softmax_into", "prob", "(the logits' shape)"});
  EXPECT_ERROR_MENTIONS(
      softmax_into(x_, MutableTensorView(doubles.data(), DType::kFloat64, shape_)),
      {"softmax_into", "prob", "float32", "float64"});
  EXPECT_ERROR_MENTIONS(softmax_into(x_, MutableTensorView(prob.data.data(), DType::kFloat32,
                                                           shape_, Device::cuda(0))),
                        {"softmax_into", "prob", "device", "expected cpu", "got cuda:0"});
  EXPECT_ERROR_MENTIONS(softmax_into(x_, MutableTensorView(nullptr, DType::kFloat32, shape_)),
                        {"softmax_into", "prob", "null"});
  // An output over an input, and two outputs over one buffer.
  Tensor logits = Tensor::copy_of(x_);
  EXPECT_ERROR_MENTIONS(softmax_into(logits, logits.mutable_view()),
                        {"softmax_into", "prob", "overlap", "logits"});
  CrossEntropyOutputs out;
  out.loss = MutableTensorView(other.data.data(), DType::kFloat32, {});
  out.prob = other.view();
  EXPECT_ERROR_MENTIONS(cross_entropy_into(x_, y_, out),
                        {"cross_entropy_into", "prob", "overlap", "loss"});
  out.prob = prob.view();
  out.grad_logits = small.view();
  EXPECT_ERROR_MENTIONS(cross_entropy_into(x_, y_, out),
                        {"cross_entropy_into", "outputs.grad_logits", "expected none"});
  out.grad_logits.reset();
  // A bad label after every output is checked: still nothing written.
  Tensor bad = Tensor::copy_of(y_);
  bad.data_as<std::int64_t>()[3] = 99;
  EXPECT_ERROR_MENTIONS(cross_entropy_into(x_, bad, out), {"cross_entropy_into", "targets"});
  EXPECT_TRUE(all_nan(prob));
  EXPECT_TRUE(all_nan(small));
  EXPECT_TRUE(all_nan(other));
  EXPECT_TRUE(bitwise_equal(logits, x_));
}

TEST_F(IntoForms, DevicesMustAgreeAndHaveABackend) {
  const TensorView on_cuda(x_.data(), DType::kFloat32, shape_, Device::cuda(1));
  // The allocating forms allocate on the inputs' device, through its backend:
  // without one (or without the device) that is an error naming the device.
  EXPECT_ERROR_MENTIONS(softmax(on_cuda), {"softmax", "cuda:1"});
  std::vector<float> out_memory(static_cast<std::size_t>(on_cuda.numel()));
  const MutableTensorView out(out_memory.data(), DType::kFloat32, shape_, Device::cuda(1));
  if (backend_names().front() != "cuda (cuda)") {
    EXPECT_ERROR_MENTIONS(softmax_into(on_cuda, out),
                          {"softmax_into", "no backend runs on cuda:1", "highway (cpu)"});
  }
  const TensorView labels_on_cuda(y_.data(), DType::kInt64, map_, Device::cuda(0));
  EXPECT_ERROR_MENTIONS(
      cross_entropy(x_, labels_on_cuda),
      {"cross_entropy", "targets", "device: expected cpu (the device of logits), got cuda:0"});
  EXPECT_EQ(device_name(Device::cuda(3)), "cuda:3");
  EXPECT_EQ(device_name(Device::cpu()), "cpu");
}

TEST_F(IntoForms, ExecutionContextThreadsGiveBitwiseEqualResults) {
  const Tensor big = random_uniform(DType::kFloat32, {4, 19, 64, 64}, -4, 4, 9);
  const Tensor labels = random_labels(DType::kInt64, {4, 64, 64}, 19, 10);
  ExecutionContext one, three;
  one.num_threads = 1;
  three.num_threads = 3;
  const CrossEntropyResult a = cross_entropy_forward_backward(big, labels, {}, {}, one);
  const CrossEntropyResult b = cross_entropy_forward_backward(big, labels, {}, {}, three);
  EXPECT_TRUE(bitwise_equal(a.loss, b.loss));
  EXPECT_TRUE(bitwise_equal(a.grad_logits, b.grad_logits));
  ExecutionContext bad;
  bad.num_threads = kMaxThreads + 1;
  EXPECT_ERROR_MENTIONS(softmax(big, ClassAxis::kFirst, bad),
                        {"num_threads = 257", "expected in [0, 256]"});
}

TEST(BackendNames, BestFirstReferenceLast) {
  const std::vector<std::string> names = backend_names();
  ASSERT_GE(names.size(), 2u);
  // The CPU's backends in order; the CUDA backend, where compiled, comes first.
  const bool cuda = names.front() == "cuda (cuda)";
  EXPECT_EQ(names[cuda ? 1 : 0], "highway (cpu)");
  EXPECT_EQ(names.back(), "reference (cpu)");
}

}  // namespace
}  // namespace spatialsoftmax::testing
