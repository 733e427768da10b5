// cross_entropy_forward_backward_in_place: dX written over X gives the same
// bits as the out-of-place call, in every kernel path (pixel-lane tiles with
// the label picked or gathered, transposed class-last tiles, class-lane
// rows), and refuses what it cannot do.
#include <gtest/gtest.h>

#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

struct InPlaceCase {
  const char* name;
  Shape shape;  // logits
  ClassAxis axis;
  bool soft;
  double smoothing;
  bool pixel_weights;
};

class InPlace : public ::testing::TestWithParam<InPlaceCase> {};

TEST_P(InPlace, MatchesOutOfPlaceBitwise) {
  const InPlaceCase& k = GetParam();
  const Tensor x = random_uniform(DType::kFloat32, k.shape, -4, 4, 1);
  Shape positions = k.shape;
  const std::size_t class_dim = k.axis == ClassAxis::kFirst ? 1 : k.shape.size() - 1;
  const std::int64_t classes = k.shape[class_dim];
  positions.erase(positions.begin() + static_cast<std::ptrdiff_t>(class_dim));
  Tensor targets = k.soft ? random_uniform(DType::kFloat32, k.shape, 0, 1, 2)
                          : random_labels(DType::kInt64, positions, classes, 2);
  if (!k.soft) set_element(targets, 1, -100);  // an ignored position
  const Tensor a = random_uniform(DType::kFloat32, positions, 0, 2, 3);
  CrossEntropyOptions o = CrossEntropyOptions::pytorch();
  o.class_axis = k.axis;
  o.label_smoothing = k.smoothing;
  o.want_prob = true;
  o.want_entropy = true;
  if (k.pixel_weights) o.pixel_weight = a.view();

  // Without upstream gradients, then with those of P and H: H's gradient
  // reads x after the e = exp(x - max) pass, which in place must not have
  // overwritten it.
  const Tensor g_prob = random_uniform(DType::kFloat32, k.shape, -1, 1, 4);
  const Tensor g_entropy = random_uniform(DType::kFloat32, positions, -1, 1, 5);
  for (const bool upstream : {false, true}) {
    SCOPED_TRACE(upstream ? "upstream gradients of P and H" : "loss gradient only");
    CrossEntropyGrads grads;
    if (upstream) {
      grads.prob = g_prob.view();
      grads.entropy = g_entropy.view();
    }
    const CrossEntropyResult out = cross_entropy_forward_backward(x, targets, o, grads);
    Tensor consumed = Tensor::copy_of(x);
    const void* storage = consumed.data();
    const CrossEntropyResult in =
        cross_entropy_forward_backward_in_place(std::move(consumed), targets, o, grads);
    EXPECT_EQ(in.grad_logits.data(), storage) << "dX must reuse the logits' storage";
    EXPECT_TRUE(bitwise_equal(in.grad_logits, out.grad_logits));
    EXPECT_TRUE(bitwise_equal(in.loss, out.loss));
    EXPECT_TRUE(bitwise_equal(in.prob, out.prob));
    EXPECT_TRUE(bitwise_equal(in.entropy, out.entropy));
  }
}

const InPlaceCase kCases[] = {
    {"nchw_c19_picked", {2, 19, 13, 37}, ClassAxis::kFirst, false, 0.0, false},
    {"nchw_c40_gathered", {2, 40, 9, 21}, ClassAxis::kFirst, false, 0.1, true},
    {"nhwc_c5_transposed", {3, 7, 11, 5}, ClassAxis::kLast, false, 0.0, true},
    {"nhwc_c100_transposed", {2, 5, 9, 100}, ClassAxis::kLast, false, 0.2, false},
    {"nhwc_c260_rows", {2, 5, 9, 260}, ClassAxis::kLast, false, 0.2, false},
    {"rows_c300", {33, 300}, ClassAxis::kLast, false, 0.0, false},
    {"soft_nchw", {2, 6, 5, 17}, ClassAxis::kFirst, true, 0.1, true},
    {"soft_rows", {9, 270}, ClassAxis::kLast, true, 0.0, false},
    // dX of 16 MiB and more is streamed: straight from the tile or row, or staged.
    {"nchw_c19_streamed", {2, 19, 256, 512}, ClassAxis::kFirst, false, 0.0, false},
    {"rows_c512_streamed", {8192, 512}, ClassAxis::kLast, false, 0.0, false},
    {"rows_c521_staged", {8000, 521}, ClassAxis::kLast, false, 0.0, false},
};

INSTANTIATE_TEST_SUITE_P(KernelPaths, InPlace, ::testing::ValuesIn(kCases),
                         [](const auto& test_info) { return std::string(test_info.param.name); });

TEST(InPlaceErrors, RefusesLogProbAndAliasedInputsLeavingLogitsIntact) {
  const Tensor x = random_uniform(DType::kFloat32, {2, 3, 4}, -1, 1, 5);
  const Tensor labels = random_labels(DType::kInt64, {2, 4}, 3, 6);
  CrossEntropyOptions o;
  o.want_log_prob = true;
  Tensor logits = Tensor::copy_of(x);
  EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward_in_place(std::move(logits), labels, o),
                        {"want_log_prob"});
  ASSERT_TRUE(logits.defined()) << "an error must leave the caller's tensor";
  EXPECT_TRUE(bitwise_equal(logits, x));
  // Probability targets that are the logits themselves.
  EXPECT_ERROR_MENTIONS(
      cross_entropy_forward_backward_in_place(std::move(logits), logits.view(), {}), {"targets"});
  EXPECT_TRUE(bitwise_equal(logits, x));
  // A label out of range is found before anything is written.
  Tensor bad = Tensor::copy_of(labels);
  set_element(bad, 3, 7);
  EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward_in_place(std::move(logits), bad, {}),
                        {"targets", "7"});
  EXPECT_TRUE(bitwise_equal(logits, x));
}

}  // namespace
}  // namespace spatialsoftmax::testing
