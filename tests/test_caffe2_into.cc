// The Caffe2 functions' `_into` forms. Oracle: the allocating forms, whose
// outputs the `_into` forms must reproduce bitwise into buffers that start
// as NaN; a refused call must leave those buffers as they were.
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

// A float64 buffer filled with NaN, seen as a writable view of `shape`.
struct Buffer {
  explicit Buffer(Shape s)
      : shape(std::move(s)),
        data(static_cast<std::size_t>(std::max<std::int64_t>(1, checked_numel(shape, "buffer"))),
             std::numeric_limits<double>::quiet_NaN()) {}
  MutableTensorView view() { return MutableTensorView(data.data(), DType::kFloat64, shape); }
  TensorView input() const { return TensorView(data.data(), DType::kFloat64, shape); }
  bool all_nan() const {
    for (double v : data) {
      if (!std::isnan(v)) return false;
    }
    return true;
  }
  Shape shape;
  std::vector<double> data;
};

void expect_same_bits(const Tensor& want, const Buffer& got, const char* what) {
  ASSERT_EQ(want.shape(), got.shape) << what;
  EXPECT_EQ(std::memcmp(want.data(), got.data.data(), want.nbytes()), 0)
      << what << ": differs from the allocating form";
}

class Caffe2Into : public ::testing::Test {
 protected:
  const Shape shape_{2, 5, 3, 4};  // (N, D, H, W)
  const Shape map_{2, 3, 4};
  Tensor x_ = random_uniform(DType::kFloat64, shape_, -3, 3, 11);
  Tensor t_ = labels_with_ignored();
  Tensor w_ = random_uniform(DType::kFloat64, map_, 0, 2, 13);
  Tensor d_loss_ = Tensor::scalar(DType::kFloat64, 0.75);

  Tensor labels_with_ignored() {
    Tensor t = random_labels(DType::kInt32, map_, 5, 12);
    set_element(t, 3, -1);
    set_element(t, 17, -1);
    return t;
  }
};

TEST_F(Caffe2Into, SpatialFormsMatchTheAllocatingForms) {
  for (caffe2::Variant variant : {caffe2::Variant::kCpu, caffe2::Variant::kCuda}) {
    caffe2::SpatialSoftmaxWithLossArgs args;
    args.scale = 0.5f;
    args.variant = variant;
    const caffe2::LossOutputs want = caffe2::spatial_softmax_with_loss(x_, t_, w_.view(), args);
    Buffer prob(shape_), loss({});
    caffe2::spatial_softmax_with_loss_into(x_, t_, w_.view(), {prob.view(), loss.view()}, args);
    expect_same_bits(want.prob, prob, "P");
    expect_same_bits(want.loss, loss, "avg_loss");

    const Tensor want_dx =
        caffe2::spatial_softmax_with_loss_gradient(x_, t_, w_.view(), want.prob, d_loss_, args);
    Buffer dx(shape_);
    caffe2::spatial_softmax_with_loss_gradient_into(x_, t_, w_.view(), want.prob, d_loss_,
                                                    dx.view(), args);
    expect_same_bits(want_dx, dx, "dX");
    // In place over P, as Caffe2 runs it.
    Tensor p = Tensor::copy_of(want.prob);
    caffe2::spatial_softmax_with_loss_gradient_into(x_, t_, w_.view(), p, d_loss_, p.mutable_view(),
                                                    args);
    EXPECT_TRUE(bitwise_equal(p, want_dx)) << "dX over P";
  }
}

TEST_F(Caffe2Into, SoftmaxFormsMatchTheAllocatingForms) {
  const Shape x2{6, 5};
  const Tensor x = random_uniform(DType::kFloat64, x2, -3, 3, 21);
  const Tensor rows = random_uniform(DType::kFloat64, {6}, 0, 2, 22);
  const Tensor labels = random_labels(DType::kInt32, {6}, 5, 23);
  const Tensor probs = softmax(random_uniform(DType::kFloat64, x2, -1, 1, 24), ClassAxis::kLast);
  for (int label_prob : {0, 1}) {
    caffe2::SoftmaxWithLossArgs args;
    args.label_prob = label_prob;
    args.scale = 2.0f;
    const Tensor& t = label_prob ? probs : labels;
    const caffe2::LossOutputs want = caffe2::softmax_with_loss(x, t, rows.view(), args);
    Buffer prob(x2), loss({});
    caffe2::softmax_with_loss_into(x, t, rows.view(), {prob.view(), loss.view()}, args);
    expect_same_bits(want.prob, prob, "P");
    expect_same_bits(want.loss, loss, "avg_loss");
    const Tensor want_dx =
        caffe2::softmax_with_loss_gradient(x, t, rows.view(), want.prob, d_loss_, args);
    Buffer dx(x2);
    caffe2::softmax_with_loss_gradient_into(x, t, rows.view(), want.prob, d_loss_, dx.view(), args);
    expect_same_bits(want_dx, dx, "dX");
    Tensor p = Tensor::copy_of(want.prob);
    caffe2::softmax_with_loss_gradient_into(x, t, rows.view(), p, d_loss_, p.mutable_view(), args);
    EXPECT_TRUE(bitwise_equal(p, want_dx)) << "dX over P";
  }
}

TEST_F(Caffe2Into, RefusedViewsAndBadLabelsLeaveTheBuffersAlone) {
  Buffer prob(shape_), loss({}), small({2, 5, 3}), map_loss(map_);
  EXPECT_ERROR_MENTIONS(
      caffe2::spatial_softmax_with_loss_into(x_, t_, std::nullopt, {small.view(), loss.view()}),
      {"SpatialSoftmaxWithLoss", "prob", "shape"});
  EXPECT_ERROR_MENTIONS(
      caffe2::spatial_softmax_with_loss_into(x_, t_, std::nullopt, {prob.view(), map_loss.view()}),
      {"SpatialSoftmaxWithLoss", "loss", "a scalar"});
  EXPECT_ERROR_MENTIONS(
      caffe2::spatial_softmax_with_loss_into(
          x_, t_, std::nullopt,
          {prob.view(), MutableTensorView(prob.data.data() + 7, DType::kFloat64, {})}),
      {"loss", "overlap", "prob"});
  Tensor bad = Tensor::copy_of(t_);
  set_element(bad, 9, 5);
  EXPECT_ERROR_MENTIONS(
      caffe2::spatial_softmax_with_loss_into(x_, bad, std::nullopt, {prob.view(), loss.view()}),
      {"T[0, 2, 1]", "= 5"});
  EXPECT_TRUE(prob.all_nan() && loss.all_nan());

  const caffe2::LossOutputs fwd = caffe2::spatial_softmax_with_loss(x_, t_, std::nullopt);
  Tensor x = Tensor::copy_of(x_);
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient_into(
                            x, t_, std::nullopt, fwd.prob, d_loss_, x.mutable_view()),
                        {"SpatialSoftmaxWithLossGradient", "dX", "overlap", "X"});
  EXPECT_TRUE(bitwise_equal(x, x_));
  // Part of P is not P: only the exact same bytes may be written over.
  Tensor wide(DType::kFloat64, {2 * 5 * 3 * 4 + 1});
  std::memcpy(wide.data(), fwd.prob.data(), fwd.prob.nbytes());
  const TensorView p_in_wide(wide.data(), DType::kFloat64, shape_);
  const MutableTensorView dx_shifted(wide.data_as<double>() + 1, DType::kFloat64, shape_);
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient_into(
                            x_, t_, std::nullopt, p_in_wide, d_loss_, dx_shifted),
                        {"dX", "overlap", "P"});
  Buffer dx(shape_);
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient_into(
                            x_, bad, std::nullopt, fwd.prob, d_loss_, dx.view()),
                        {"T[0, 2, 1]", "= 5"});
  EXPECT_TRUE(dx.all_nan());
}

}  // namespace
}  // namespace spatialsoftmax::testing
