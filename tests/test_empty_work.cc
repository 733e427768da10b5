// Problems with nothing to compute return at once, on every backend, with
// the empty reductions' documented values (issue 10, item 5): before, zero
// positions of 2^36 classes ran per-class setup for minutes (the SIMD
// kernels) or allocated C-sized scratch (the reference).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>

#include "spatialsoftmax/caffe2.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

constexpr std::int64_t kHugeC = std::int64_t{1} << 36;

class EmptyWork : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    backend_.emplace(GetParam());
    start_ = std::chrono::steady_clock::now();
  }
  void TearDown() override {
    backend_.reset();
    // A guard against the minutes-long loop, not a timing test.
    EXPECT_LT(std::chrono::steady_clock::now() - start_, std::chrono::seconds(10));
  }
  const float* no_floats_ = nullptr;
  const std::int64_t* no_labels_ = nullptr;
  std::optional<ScopedBackend> backend_;
  std::chrono::steady_clock::time_point start_;
};

TEST_P(EmptyWork, CrossEntropyOverZeroPositionsOfHugeClassCounts) {
  const TensorView logits = TensorView::of(no_floats_, {0, kHugeC});
  const TensorView labels = TensorView::of(no_labels_, {0});
  // PyTorch: the mean over no element is NaN, the sum 0.
  EXPECT_TRUE(std::isnan(cross_entropy(logits, labels).loss.at(0)));
  CrossEntropyOptions sum;
  sum.reduction = Reduction::kSum;
  sum.label_smoothing = 0.1;
  sum.want_prob = sum.want_log_prob = sum.want_entropy = true;
  const CrossEntropyResult r = cross_entropy_forward_backward(logits, labels, sum);
  EXPECT_EQ(r.loss.at(0), 0.0);
  EXPECT_EQ(r.prob.shape(), (Shape{0, kHugeC}));
  EXPECT_EQ(r.grad_logits.shape(), (Shape{0, kHugeC}));
  EXPECT_EQ(r.entropy.shape(), Shape{0});
  CrossEntropyOptions none;
  none.reduction = Reduction::kNone;
  EXPECT_EQ(cross_entropy(TensorView::of(no_floats_, {2, kHugeC, 0, 3}),
                          TensorView::of(no_labels_, {2, 0, 3}), none)
                .loss.shape(),
            (Shape{2, 0, 3}));
  // The Caffe2 preset's mean over zero weight is 0.
  EXPECT_EQ(cross_entropy(logits, labels, CrossEntropyOptions::caffe2_spatial()).loss.at(0), 0.0);
}

TEST_P(EmptyWork, EveryOtherOperation) {
  const TensorView logits = TensorView::of(no_floats_, {0, kHugeC, 1});
  const float one = 1;
  EXPECT_EQ(softmax(logits).shape(), (Shape{0, kHugeC, 1}));
  EXPECT_EQ(entropy(logits).shape(), (Shape{0, 1}));
  EXPECT_EQ(softmax_backward(logits, logits).shape(), (Shape{0, kHugeC, 1}));
  EXPECT_EQ(kl_div_backward(logits, logits, TensorView::of(&one, {})).shape(),
            (Shape{0, kHugeC, 1}));
  KlDivOptions sum;
  sum.reduction = Reduction::kSum;
  EXPECT_EQ(kl_div(logits, logits, sum).at(0), 0.0);
  EXPECT_EQ(spatial_soft_argmax(TensorView::of(no_floats_, {0, kHugeC, 4, 4})).keypoints.shape(),
            (Shape{0, kHugeC, 2}));
  const std::int32_t* no_t = nullptr;
  const caffe2::LossOutputs c2 = caffe2::spatial_softmax_with_loss(
      TensorView::of(no_floats_, {0, kHugeC, 2, 2}), TensorView::of(no_t, {0, 2, 2}), std::nullopt);
  EXPECT_EQ(c2.prob.shape(), (Shape{0, kHugeC, 2, 2}));
  EXPECT_EQ(c2.loss.at(0), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Backends, EmptyWork, ::testing::Values("highway", "reference"));

}  // namespace
}  // namespace spatialsoftmax::testing
