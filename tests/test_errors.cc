// Every error condition of docs/semantics.md section 6: the exception is
// spatialsoftmax::Error and its message names the argument (and, where it
// makes sense, the expected and the actual value).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

using testing::filled;
using testing::random_labels;
using testing::random_uniform;
using testing::set_element;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor f32(Shape shape, std::uint64_t seed = 1) {
  return random_uniform(DType::kFloat32, std::move(shape), -2, 2, seed);
}
Tensor f64(Shape shape, std::uint64_t seed = 1) {
  return random_uniform(DType::kFloat64, std::move(shape), -2, 2, seed);
}
Tensor probs(DType dtype, Shape shape) {
  // Uniform probabilities over axis 1.
  return filled(dtype, shape, 1.0 / static_cast<double>(shape[1]));
}

std::string shape_of(const Shape& s) { return shape_string(s); }

// A valid spatial problem: X (2, 5, 3, 4), labels (2, 3, 4).
struct Problem {
  Tensor x = f64({2, 5, 3, 4});
  Tensor labels = random_labels(DType::kInt64, {2, 3, 4}, 5, 2);
  Tensor map = f64({2, 3, 4}, 3);  // pixel weights / upstream maps
  Tensor w = filled(DType::kFloat64, {5}, 1);
};

// --- shape and layout mismatches -----------------------------------------------

TEST(ShapeErrors, LabelsShapeMismatch) {
  Problem pb;
  const Tensor labels = random_labels(DType::kInt64, {2, 3, 5}, 5, 4);
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, labels),
                        {"targets", shape_of({2, 3, 4}), shape_of({2, 3, 5})});
  const Tensor flat = random_labels(DType::kInt64, {2, 12}, 5, 4);
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, flat), {"targets", shape_of({2, 12})});
  // Class-last: labels must match (N, H, W) of (N, H, W, C).
  CrossEntropyOptions last;
  last.class_axis = ClassAxis::kLast;
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, last),
                        {"targets", shape_of({2, 5, 3}), shape_of({2, 3, 4})});
  CrossEntropyGrads grads;
  EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, labels, grads), {"targets"});
  EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward(pb.x, labels), {"targets"});
}

TEST(ShapeErrors, NllLabelsShapeMismatch) {
  Problem pb;
  const Tensor labels = random_labels(DType::kInt32, {2, 4, 3}, 5, 4);
  const Tensor g = filled(DType::kFloat64, {}, 1);
  EXPECT_ERROR_MENTIONS(nll_loss(pb.x, labels), {"labels", shape_of({2, 4, 3})});
  EXPECT_ERROR_MENTIONS(nll_loss_backward(pb.x, labels, g), {"labels", shape_of({2, 4, 3})});
}

TEST(ShapeErrors, ProbabilityTargetsShapeMismatch) {
  Problem pb;
  const Tensor t = probs(DType::kFloat64, {2, 4, 3, 4});
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, t),
                        {"targets", shape_of({2, 5, 3, 4}), shape_of({2, 4, 3, 4})});
  KlDivOptions ko;
  EXPECT_ERROR_MENTIONS(kl_div(pb.x, t, ko), {"target", shape_of({2, 4, 3, 4})});
  const Tensor g = filled(DType::kFloat64, {}, 1);
  EXPECT_ERROR_MENTIONS(kl_div_backward(pb.x, t, g, ko), {"target", shape_of({2, 4, 3, 4})});
}

TEST(ShapeErrors, PixelWeightShapeMismatch) {
  Problem pb;
  const Tensor a = f64({2, 4, 3});
  CrossEntropyOptions o;
  o.pixel_weight = a.view();
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o),
                        {"pixel_weight", shape_of({2, 3, 4}), shape_of({2, 4, 3})});
}

TEST(ShapeErrors, UpstreamGradientShapeMismatch) {
  Problem pb;
  const Tensor wrong_map = f64({2, 4, 3});
  const Tensor wrong_x = f64({2, 5, 4, 3});
  CrossEntropyOptions none;
  none.reduction = Reduction::kNone;
  {
    CrossEntropyGrads g;
    g.loss = wrong_map.view();
    EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, pb.labels, g, none),
                          {"grad_loss", shape_of({2, 3, 4}), shape_of({2, 4, 3})});
    EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward(pb.x, pb.labels, none, g),
                          {"grad_loss", shape_of({2, 4, 3})});
    // A map where a scalar is expected.
    CrossEntropyGrads gm;
    gm.loss = pb.map.view();
    EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, pb.labels, gm), {"grad_loss"});
  }
  {
    CrossEntropyGrads g;
    g.prob = wrong_x.view();
    EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, pb.labels, g),
                          {"grad_prob", shape_of({2, 5, 3, 4}), shape_of({2, 5, 4, 3})});
  }
  {
    CrossEntropyGrads g;
    g.log_prob = wrong_x.view();
    EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, pb.labels, g),
                          {"grad_log_prob", shape_of({2, 5, 4, 3})});
  }
  {
    CrossEntropyGrads g;
    g.entropy = wrong_map.view();
    EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, pb.labels, g),
                          {"grad_entropy", shape_of({2, 4, 3})});
  }
  const Tensor g_nll = f64({2, 4, 3});
  EXPECT_ERROR_MENTIONS(nll_loss_backward(pb.x, pb.labels, g_nll, none),
                        {"grad_loss", shape_of({2, 4, 3})});
  KlDivOptions ko;
  ko.reduction = Reduction::kNone;
  EXPECT_ERROR_MENTIONS(kl_div_backward(pb.x, probs(DType::kFloat64, {2, 5, 3, 4}), wrong_x, ko),
                        {"grad_output", shape_of({2, 5, 4, 3})});
}

TEST(ShapeErrors, SoftmaxBackwardGradientShapeMismatch) {
  const Tensor p = probs(DType::kFloat64, {2, 5, 3, 4});
  const Tensor g = f64({2, 5, 4, 3});
  EXPECT_ERROR_MENTIONS(softmax_backward(p, g), {"grad_prob", shape_of({2, 5, 4, 3})});
  EXPECT_ERROR_MENTIONS(log_softmax_backward(p, g), {"grad_log_prob", shape_of({2, 5, 4, 3})});
}

TEST(ShapeErrors, SpatialSoftArgmaxGradientShapeMismatch) {
  const Tensor x = f64({2, 3, 4, 5});
  const Tensor gk = f64({2, 3, 3});
  const Tensor gs = f64({2, 3, 5, 4});
  const Tensor gc = f64({2, 3, 2});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax_backward(x, {gk.view(), {}, {}}),
                        {"grad_keypoints", shape_of({2, 3, 2}), shape_of({2, 3, 3})});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax_backward(x, {{}, gs.view(), {}}),
                        {"grad_softmax", shape_of({2, 3, 5, 4})});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax_backward(x, {{}, {}, gc.view()}),
                        {"grad_covariance", shape_of({2, 3, 2, 2}), shape_of({2, 3, 2})});
}

TEST(ShapeErrors, Caffe2SpatialShapeMismatches) {
  const Tensor x = f32({2, 4, 3, 5});
  const Tensor t = random_labels(DType::kInt32, {2, 3, 5}, 4, 5);
  const Tensor t_bad = random_labels(DType::kInt32, {2, 5, 3}, 4, 5);
  const Tensor t_batch = random_labels(DType::kInt32, {3, 3, 5}, 4, 5);
  const Tensor w_bad = filled(DType::kFloat32, {2, 3, 4}, 1);
  const Tensor p = probs(DType::kFloat32, {2, 4, 3, 5});
  const Tensor p_bad = probs(DType::kFloat32, {2, 4, 5, 3});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t_bad, std::nullopt),
                        {"T", shape_of({2, 3, 5}), shape_of({2, 5, 3})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t_batch, std::nullopt),
                        {"T", shape_of({3, 3, 5})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t, w_bad),
                        {"weight_tensor", shape_of({2, 3, 5}), shape_of({2, 3, 4})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, p_bad, d),
                        {"P", shape_of({2, 4, 3, 5}), shape_of({2, 4, 5, 3})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t_bad, std::nullopt, p, d),
                        {"T", shape_of({2, 5, 3})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, w_bad, p, d),
                        {"weight_tensor", shape_of({2, 3, 4})});
  // d_loss needs a first element.
  const Tensor empty(DType::kFloat32, {0});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, p, empty),
                        {"d_loss"});
}

TEST(ShapeErrors, Caffe2SoftmaxShapeMismatches) {
  const Tensor x = f32({4, 6});
  const Tensor t_bad = random_labels(DType::kInt32, {5}, 6, 6);
  const Tensor t = random_labels(DType::kInt32, {4}, 6, 6);
  const Tensor w_bad = filled(DType::kFloat32, {3}, 1);
  const Tensor p_bad = probs(DType::kFloat32, {4, 5});
  const Tensor tp_bad = probs(DType::kFloat32, {4, 5});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, t_bad, std::nullopt), {"T", "5"});
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, t, w_bad), {"weight_tensor", "3"});
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss_gradient(x, t, std::nullopt, p_bad, d),
                        {"P", shape_of({4, 5})});
  caffe2::SoftmaxWithLossArgs prob_args;
  prob_args.label_prob = 1;
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, tp_bad, std::nullopt, prob_args),
                        {"T", shape_of({4, 5})});
}

// --- rank and size -----------------------------------------------------------------

TEST(RankErrors, SpatialRankAboveEight) {
  const Shape s9{1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2};  // k = 9
  const Tensor x = f64(s9);
  Shape map{1, 1, 1, 1, 1, 1, 1, 1, 1, 2};
  const Tensor labels(DType::kInt64, map);
  EXPECT_ERROR_MENTIONS(softmax(x), {"logits", "rank", "11"});
  EXPECT_ERROR_MENTIONS(log_softmax(x), {"logits", "rank", "11"});
  EXPECT_ERROR_MENTIONS(entropy(x), {"logits", "rank", "11"});
  EXPECT_ERROR_MENTIONS(cross_entropy(x, labels), {"logits", "rank", "11"});
  EXPECT_ERROR_MENTIONS(kl_div(x, x), {"logits", "rank", "11"});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax(x), {"input", "rank", "11"});
  EXPECT_ERROR_MENTIONS(nll_loss(x, labels), {"log_prob", "rank", "11"});
}

TEST(RankErrors, LogitsRankBelowTwo) {
  const Tensor x1 = f64({5});
  const Tensor x0 = f64({});
  const Tensor labels(DType::kInt64, {});
  EXPECT_ERROR_MENTIONS(softmax(x1), {"logits", "rank", "1"});
  EXPECT_ERROR_MENTIONS(softmax(x0), {"logits", "rank", "0"});
  EXPECT_ERROR_MENTIONS(cross_entropy(x1, labels), {"logits", "rank", "1"});
  // The soft-argmax needs at least one spatial axis.
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax(f64({2, 3})), {"input", "rank", "2"});
}

TEST(RankErrors, Caffe2XNot4DAndTNot3D) {
  const Tensor x3 = f32({2, 4, 6});
  const Tensor x5 = f32({2, 4, 3, 2, 1});
  const Tensor x = f32({2, 4, 3, 2});
  const Tensor t = random_labels(DType::kInt32, {2, 3, 2}, 4, 7);
  const Tensor t2 = random_labels(DType::kInt32, {2, 6}, 4, 7);
  const Tensor p = probs(DType::kFloat32, {2, 4, 3, 2});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x3, t2, std::nullopt),
                        {"X", "rank", "4", shape_of({2, 4, 6})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x5, t, std::nullopt),
                        {"X", "rank", "4", shape_of({2, 4, 3, 2, 1})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t2, std::nullopt),
                        {"T", "rank", "3", shape_of({2, 6})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x3, t2, std::nullopt, p, d),
                        {"X", "rank", shape_of({2, 4, 6})});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t2, std::nullopt, p, d),
                        {"T", "rank", shape_of({2, 6})});
}

TEST(RankErrors, ZeroClasses) {
  const Tensor x = f64({2, 0, 3});
  const Tensor labels(DType::kInt64, {2, 3});
  const std::string shape = shape_of({2, 0, 3});
  EXPECT_ERROR_MENTIONS(softmax(x), {"logits", shape});
  EXPECT_ERROR_MENTIONS(cross_entropy(x, labels), {"logits", shape});
  EXPECT_ERROR_MENTIONS(kl_div(x, x), {"logits", shape});
  EXPECT_ERROR_MENTIONS(nll_loss(x, labels), {"log_prob", shape});
  CrossEntropyOptions last;
  last.class_axis = ClassAxis::kLast;
  const Tensor xl = f64({2, 3, 0});
  EXPECT_ERROR_MENTIONS(cross_entropy(xl, labels, last), {"logits", shape_of({2, 3, 0})});
  EXPECT_ERROR_MENTIONS(
      caffe2::spatial_softmax_with_loss(Tensor(DType::kFloat32, {2, 0, 3, 3}),
                                        Tensor(DType::kInt32, {2, 3, 3}), std::nullopt),
      {"X", shape_of({2, 0, 3, 3})});
}

// --- labels out of range -------------------------------------------------------------

TEST(LabelErrors, LabelOutOfRangeGivesIndexAndValue) {
  Problem pb;
  Tensor labels = random_labels(DType::kInt64, {2, 3, 4}, 5, 8);
  set_element(labels, 23, 7);  // [1, 2, 3]
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, labels), {"targets[1, 2, 3]", "23", "= 7", "[0, 5)"});
  // The first offending label is reported.
  set_element(labels, 30 - 17, 9);  // flat 13 = [1, 0, 1]
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, labels), {"targets[1, 0, 1]", "13", "= 9"});
  const Tensor g = filled(DType::kFloat64, {}, 1);
  CrossEntropyGrads grads;
  grads.loss = g.view();
  EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, labels, grads), {"targets[1, 0, 1]", "9"});
  EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward(pb.x, labels), {"targets[1, 0, 1]", "9"});
}

TEST(LabelErrors, NegativeLabelThatIsNotIgnored) {
  Problem pb;
  Tensor labels = random_labels(DType::kInt32, {2, 3, 4}, 5, 9);
  set_element(labels, 1, -1);
  set_element(labels, 5, -3);  // [0, 1, 1]
  CrossEntropyOptions o;
  o.ignore_index = -1;
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, labels, o), {"targets[0, 1, 1]", "-3", "-1"});
  // Without ignore_index, -1 is an error like any other.
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, labels), {"targets[0, 0, 1]", "-1"});
  // A label equal to C, with an ignore_index elsewhere.
  Tensor at_c = random_labels(DType::kInt64, {2, 3, 4}, 5, 10);
  set_element(at_c, 0, 5);
  o.ignore_index = 6;
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, at_c, o), {"targets[0, 0, 0]", "5"});
}

TEST(LabelErrors, NllLabelOutOfRange) {
  Problem pb;
  Tensor labels = random_labels(DType::kInt64, {2, 3, 4}, 5, 11);
  set_element(labels, 6, 5);  // [0, 1, 2]
  const Tensor g = filled(DType::kFloat64, {}, 1);
  EXPECT_ERROR_MENTIONS(nll_loss(pb.x, labels), {"labels[0, 1, 2]", "5"});
  EXPECT_ERROR_MENTIONS(nll_loss_backward(pb.x, labels, g), {"labels[0, 1, 2]", "5"});
}

TEST(LabelErrors, Caffe2SpatialLabelOutOfRange) {
  const Tensor x = f32({2, 3, 2, 3});
  const Tensor p = probs(DType::kFloat32, {2, 3, 2, 3});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  Tensor t = random_labels(DType::kInt32, {2, 2, 3}, 3, 12);
  set_element(t, 0, -1);
  set_element(t, 5, 3);  // [0, 1, 2]
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t, std::nullopt),
                        {"T[0, 1, 2]", "5", "3"});
  // Caffe2 did not check labels in the gradient op; the library does.
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, p, d),
                        {"T[0, 1, 2]", "3"});
  // Negative labels other than -1 are errors.
  Tensor neg = random_labels(DType::kInt32, {2, 2, 3}, 3, 13);
  set_element(neg, 7, -2);  // [1, 0, 1]
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, neg, std::nullopt),
                        {"T[1, 0, 1]", "-2"});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, neg, std::nullopt, p, d),
                        {"T[1, 0, 1]", "-2"});
}

TEST(LabelErrors, Caffe2SoftmaxHasNoIgnoreLabel) {
  const Tensor x = f32({3, 4});
  const Tensor p = probs(DType::kFloat32, {3, 4});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  Tensor t = random_labels(DType::kInt32, {3}, 4, 14);
  set_element(t, 1, -1);
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, t, std::nullopt), {"T[1]", "-1"});
  set_element(t, 1, 4);
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, t, std::nullopt), {"T[1]", "4"});
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss_gradient(x, t, std::nullopt, p, d),
                        {"T[1]", "4"});
}

// With a bad label and a badly typed upstream gradient, the gradient's error
// comes first whatever decides where the labels are checked (before the
// kernel for a mean over ignore_index, inside it otherwise).
TEST(LabelErrors, ArgumentShapesAndDtypesAreCheckedBeforeLabelValues) {
  const Problem pb;
  Tensor bad = Tensor::copy_of(pb.labels);
  set_element(bad, 5, 99);
  CrossEntropyGrads g;
  const Tensor g32 = filled(DType::kFloat32, {}, 1);
  g.loss = g32.view();
  for (const Reduction reduction : {Reduction::kMean, Reduction::kSum}) {
    for (const bool ignore : {false, true}) {
      CrossEntropyOptions o;
      o.reduction = reduction;
      if (ignore) o.ignore_index = -1;
      SCOPED_TRACE(std::string(reduction == Reduction::kMean ? "mean" : "sum") +
                   (ignore ? ", ignore_index -1" : ""));
      EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, bad, g, o), {"grad_loss", "float32"});
      EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, bad, {}, o), {"targets", "99"});
      EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, bad, o), {"targets", "99"});
    }
  }
}

// --- dtypes ---------------------------------------------------------------------------

TEST(DtypeErrors, IntegerLogits) {
  const Tensor xi = filled(DType::kInt32, {2, 3, 4}, 1);
  const Tensor xl = filled(DType::kInt64, {2, 3, 4}, 1);
  const Tensor labels(DType::kInt64, {2, 4});
  EXPECT_ERROR_MENTIONS(softmax(xi), {"logits", "int32"});
  EXPECT_ERROR_MENTIONS(log_softmax(xl), {"logits", "int64"});
  EXPECT_ERROR_MENTIONS(entropy(xi), {"logits", "int32"});
  EXPECT_ERROR_MENTIONS(cross_entropy(xi, labels), {"logits", "int32"});
  EXPECT_ERROR_MENTIONS(kl_div(xi, xi), {"logits", "int32"});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax(xl), {"input", "int64"});
  EXPECT_ERROR_MENTIONS(nll_loss(xi, labels), {"log_prob", "int32"});
  EXPECT_ERROR_MENTIONS(
      caffe2::spatial_softmax_with_loss(filled(DType::kInt32, {1, 2, 2, 2}, 0),
                                        Tensor(DType::kInt32, {1, 2, 2}), std::nullopt),
      {"X", "int32"});
}

// A wrong dtype is the DTypeError kind of Error (the Python package raises
// TypeError for it), everywhere the API checks one; other errors are not.
TEST(DtypeErrors, AreDTypeErrors) {
  const Tensor x = f32({2, 3, 4});
  const Tensor labels(DType::kInt64, {2, 4});
  const Tensor wrong_weight = filled(DType::kFloat64, {3}, 1);
  CrossEntropyOptions weighted;
  weighted.class_weight = wrong_weight.view();
  EXPECT_THROW(softmax(filled(DType::kInt32, {2, 3}, 1)), DTypeError);
  EXPECT_THROW(cross_entropy(x, filled(DType::kFloat32, {2, 3, 4}, 1).to(DType::kFloat64)),
               DTypeError);
  EXPECT_THROW(cross_entropy(x, labels, weighted), DTypeError);
  EXPECT_THROW(nll_loss(x, filled(DType::kFloat32, {2, 4}, 0)), DTypeError);
  EXPECT_THROW(caffe2::spatial_softmax_with_loss(f32({2, 3, 2, 2}),
                                                 filled(DType::kInt64, {2, 2, 2}, 0), std::nullopt),
               DTypeError);
  Tensor out(DType::kFloat64, {2, 3, 4});
  EXPECT_THROW(softmax_into(x, out.mutable_view()), DTypeError);
  // A value error is not one.
  const Tensor bad_labels = filled(DType::kInt64, {2, 4}, 7);
  try {
    (void)cross_entropy(x, bad_labels);
    ADD_FAILURE() << "no error for label 7 of 3 classes";
  } catch (const DTypeError&) {
    ADD_FAILURE() << "a label value error is a DTypeError";
  } catch (const Error&) {
  }
}

TEST(DtypeErrors, FloatLabels) {
  // nll_loss takes class indices only.
  const Tensor x = f64({2, 3, 4});
  const Tensor labels = filled(DType::kFloat64, {2, 4}, 1);
  EXPECT_ERROR_MENTIONS(nll_loss(x, labels), {"labels", "float64"});
  // cross_entropy reads floating targets as probabilities: then they need
  // the logits' shape.
  EXPECT_ERROR_MENTIONS(cross_entropy(x, labels), {"targets", shape_of({2, 4})});
  // Caffe2: labels must be int32.
  const Tensor xc = f32({2, 3, 2, 2});
  EXPECT_ERROR_MENTIONS(
      caffe2::spatial_softmax_with_loss(xc, filled(DType::kFloat32, {2, 2, 2}, 0), std::nullopt),
      {"T", "float32", "int32"});
}

TEST(DtypeErrors, Caffe2LabelsInt64) {
  const Tensor x = f32({2, 3, 2, 2});
  const Tensor t = filled(DType::kInt64, {2, 2, 2}, 0);
  const Tensor p = probs(DType::kFloat32, {2, 3, 2, 2});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t, std::nullopt),
                        {"T", "int64", "int32"});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, p, d),
                        {"T", "int64", "int32"});
  const Tensor x2 = f32({3, 4});
  const Tensor t2 = filled(DType::kInt64, {3}, 0);
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x2, t2, std::nullopt), {"T", "int64", "int32"});
}

TEST(DtypeErrors, MixedFloatTypes) {
  Problem pb;  // float64 logits
  const Tensor w32 = filled(DType::kFloat32, {5}, 1);
  const Tensor a32 = filled(DType::kFloat32, {2, 3, 4}, 1);
  const Tensor t32 = probs(DType::kFloat32, {2, 5, 3, 4});
  {
    CrossEntropyOptions o;
    o.class_weight = w32.view();
    EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o),
                          {"class_weight", "float32", "float64"});
  }
  {
    CrossEntropyOptions o;
    o.pixel_weight = a32.view();
    EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o),
                          {"pixel_weight", "float32", "float64"});
  }
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, t32), {"targets", "float32", "float64"});
  EXPECT_ERROR_MENTIONS(kl_div(pb.x, t32), {"target", "float32", "float64"});
  {
    CrossEntropyGrads g;
    const Tensor g32 = filled(DType::kFloat32, {}, 1);
    g.loss = g32.view();
    EXPECT_ERROR_MENTIONS(cross_entropy_backward(pb.x, pb.labels, g),
                          {"grad_loss", "float32", "float64"});
  }
  const Tensor p = probs(DType::kFloat64, {2, 5, 3, 4});
  EXPECT_ERROR_MENTIONS(softmax_backward(p, t32), {"grad_prob", "float32", "float64"});
  const Tensor gk32 = filled(DType::kFloat32, {2, 5, 2}, 1);
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax_backward(pb.x, {gk32.view(), {}, {}}),
                        {"grad_keypoints", "float32", "float64"});
  // Caffe2: X float32 with float64 weights or P.
  const Tensor x = f32({2, 3, 2, 2});
  const Tensor t = filled(DType::kInt32, {2, 2, 2}, 0);
  const Tensor w64 = filled(DType::kFloat64, {2, 2, 2}, 1);
  const Tensor p64 = probs(DType::kFloat64, {2, 3, 2, 2});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t, w64),
                        {"weight_tensor", "float64", "float32"});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, p64, d),
                        {"P", "float64", "float32"});
}

// --- weights ------------------------------------------------------------------------

TEST(WeightErrors, ClassWeightsOfTheWrongLength) {
  Problem pb;
  const Tensor w = filled(DType::kFloat64, {4}, 1);
  CrossEntropyOptions o;
  o.class_weight = w.view();
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o),
                        {"class_weight", shape_of({5}), shape_of({4})});
  EXPECT_ERROR_MENTIONS(nll_loss(pb.x, pb.labels, o), {"class_weight", shape_of({4})});
  const Tensor w2 = filled(DType::kFloat64, {5, 1}, 1);
  o.class_weight = w2.view();
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o), {"class_weight", shape_of({5, 1})});
}

TEST(WeightErrors, NegativeOrNonFiniteClassWeights) {
  Problem pb;
  for (double bad : {-0.5, kNaN, kInf}) {
    Tensor w = filled(DType::kFloat64, {5}, 1);
    set_element(w, 3, bad);
    CrossEntropyOptions o;
    o.class_weight = w.view();
    const std::string value = std::isnan(bad) ? "nan" : std::isinf(bad) ? "inf" : "-0.5";
    EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o), {"class_weight", value});
    EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, probs(DType::kFloat64, {2, 5, 3, 4}), o),
                          {"class_weight", value});
  }
}

TEST(WeightErrors, NegativeOrNonFinitePixelWeights) {
  Problem pb;
  for (double bad : {-2.0, kNaN, kInf}) {
    Tensor a = filled(DType::kFloat64, {2, 3, 4}, 1);
    set_element(a, 17, bad);
    CrossEntropyOptions o;
    o.pixel_weight = a.view();
    const std::string value = std::isnan(bad) ? "nan" : std::isinf(bad) ? "inf" : "-2";
    EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o), {"pixel_weight", value});
    // Caffe2 did not check; the library does (semantics 6).
    const Tensor x = f32({2, 5, 3, 4});
    const Tensor t = filled(DType::kInt32, {2, 3, 4}, 1);
    const Tensor a32 = a.to(DType::kFloat32);
    EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t, a32), {"weight_tensor", value});
    const Tensor p = probs(DType::kFloat32, {2, 5, 3, 4});
    const Tensor d = filled(DType::kFloat32, {}, 1);
    EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, a32, p, d),
                          {"weight_tensor", value});
  }
  // SoftmaxWithLoss row weights.
  Tensor rw = filled(DType::kFloat32, {3}, 1);
  set_element(rw, 2, -1);
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(f32({3, 4}), filled(DType::kInt32, {3}, 0), rw),
                        {"weight_tensor", "-1"});
}

// --- options ----------------------------------------------------------------------------

TEST(OptionErrors, LabelSmoothingOutsideUnitInterval) {
  Problem pb;
  for (double eps : {-0.1, 1.5, kNaN}) {
    CrossEntropyOptions o;
    o.label_smoothing = eps;
    const std::string value = std::isnan(eps) ? "nan" : eps < 0 ? "-0.1" : "1.5";
    EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o), {"label_smoothing", value, "[0, 1]"});
    EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward(pb.x, pb.labels, o),
                          {"label_smoothing", value});
  }
}

TEST(OptionErrors, TemperatureNotPositiveAndFinite) {
  const Tensor x = f64({2, 3, 4, 5});
  const Tensor gk = f64({2, 3, 2});
  for (double t : {0.0, -1.0, kNaN, kInf}) {
    for (TemperatureMode mode : {TemperatureMode::kDivide, TemperatureMode::kMultiply}) {
      SpatialSoftArgmaxOptions so;
      so.temperature = t;
      so.temperature_mode = mode;
      EXPECT_ERROR_MENTIONS(spatial_soft_argmax(x, so), {"temperature"});
      EXPECT_ERROR_MENTIONS(spatial_softmax(x, so), {"temperature"});
      EXPECT_ERROR_MENTIONS(spatial_soft_argmax_backward(x, {gk.view(), {}, {}}, so),
                            {"temperature"});
    }
  }
  SpatialSoftArgmaxOptions so;
  so.temperature = -1;
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax(x, so), {"temperature", "-1"});
}

TEST(OptionErrors, IgnoreIndexWithProbabilityTargets) {
  Problem pb;
  CrossEntropyOptions o;
  o.ignore_index = 2;
  const Tensor t = probs(DType::kFloat64, {2, 5, 3, 4});
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, t, o), {"ignore_index", "2"});
  EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward(pb.x, t, o), {"ignore_index", "2"});
}

TEST(OptionErrors, BatchMeanIsForKlDivOnly) {
  Problem pb;
  CrossEntropyOptions o;
  o.reduction = Reduction::kBatchMean;
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o), {"reduction", "batchmean"});
  EXPECT_ERROR_MENTIONS(nll_loss(pb.x, pb.labels, o), {"reduction", "batchmean"});
}

TEST(OptionErrors, UnknownOptionValues) {
  EXPECT_ERROR_MENTIONS(parse_reduction("avg", "reduction"), {"reduction", "avg"});
  EXPECT_ERROR_MENTIONS(parse_layout("NWHC", "layout"), {"layout", "NWHC"});
  EXPECT_ERROR_MENTIONS(caffe2::parse_variant("gpu", "variant"),
                        {"variant", "'gpu'", "cpu or cuda"});
  EXPECT_EQ(caffe2::parse_variant("cuda", "variant"), caffe2::Variant::kCuda);
  EXPECT_EQ(caffe2::parse_variant("cpu", "variant"), caffe2::Variant::kCpu);
  // An enum value that names no reduction.
  Problem pb;
  CrossEntropyOptions o;
  o.reduction = static_cast<Reduction>(42);
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o), {"reduction"});
  KlDivOptions ko;
  ko.reduction = static_cast<Reduction>(42);
  EXPECT_ERROR_MENTIONS(kl_div(pb.x, pb.x, ko), {"reduction"});
}

TEST(OptionErrors, NegativeProbFloor) {
  Problem pb;
  CrossEntropyOptions o;
  o.prob_floor = -1e-20;
  EXPECT_ERROR_MENTIONS(cross_entropy(pb.x, pb.labels, o), {"prob_floor"});
}

// --- Caffe2 arguments ---------------------------------------------------------------------

TEST(Caffe2Errors, NegativeScale) {
  const Tensor x = f32({2, 3, 2, 2});
  const Tensor t = filled(DType::kInt32, {2, 2, 2}, 0);
  const Tensor p = probs(DType::kFloat32, {2, 3, 2, 2});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  caffe2::SpatialSoftmaxWithLossArgs args;
  args.scale = -1;
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t, std::nullopt, args),
                        {"scale", "-1"});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, p, d, args),
                        {"scale", "-1"});
  caffe2::SoftmaxWithLossArgs sargs;
  sargs.scale = -0.5f;
  const Tensor x2 = f32({3, 4});
  const Tensor t2 = filled(DType::kInt32, {3}, 0);
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x2, t2, std::nullopt, sargs), {"scale", "-0.5"});
}

TEST(Caffe2Errors, OrderOtherThanNCHW) {
  const Tensor x = f32({2, 3, 2, 2});
  const Tensor t = filled(DType::kInt32, {2, 2, 2}, 0);
  const Tensor p = probs(DType::kFloat32, {2, 3, 2, 2});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  caffe2::SpatialSoftmaxWithLossArgs args;
  args.order = "NDHW";  // the spatial operators take NCHW or NHWC
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x, t, std::nullopt, args),
                        {"SpatialSoftmaxWithLoss: order = 'NDHW'", "expected NCHW or NHWC"});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, p, d, args),
                        {"order = 'NDHW'", "expected NCHW or NHWC"});
  // NHWC: X (N, H, W, D), so T must be X's first three dims.
  args.order = "NHWC";
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(f32({2, 2, 3, 5}), t, std::nullopt, args),
                        {"T", "shape", "(2, 2, 3)"});
  caffe2::SoftmaxWithLossArgs sargs;
  sargs.order = "NHWC";
  EXPECT_ERROR_MENTIONS(
      caffe2::softmax_with_loss(f32({3, 4}), filled(DType::kInt32, {3}, 0), std::nullopt, sargs),
      {"order", "Only NCHW order is supported right now."});
}

TEST(Caffe2Errors, LabelProbRowsMustBeNonNegativeAndSumToOne) {
  const Tensor x = f32({3, 4});
  const Tensor p = probs(DType::kFloat32, {3, 4});
  const Tensor d = filled(DType::kFloat32, {}, 1);
  caffe2::SoftmaxWithLossArgs args;
  args.label_prob = 1;
  Tensor t = probs(DType::kFloat32, {3, 4});
  set_element(t, 5, 0.3);  // row 1 sums to 1.05
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, t, std::nullopt, args), {"T", "1", "1.05"});
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss_gradient(x, t, std::nullopt, p, d, args),
                        {"T", "1.05"});
  Tensor neg = probs(DType::kFloat32, {3, 4});
  set_element(neg, 8, -0.2);  // row 2, column 0
  set_element(neg, 9, 0.45);  // the row still sums to 1
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, neg, std::nullopt, args),
                        {"T", "-0.2", "nonnegative"});
  // Within 1e-5 is accepted.
  Tensor close = probs(DType::kFloat32, {3, 4});
  set_element(close, 0, 0.25 + 5e-6);
  EXPECT_NO_THROW(caffe2::softmax_with_loss(x, close, std::nullopt, args));
}

TEST(Caffe2Errors, AxisOutOfRange) {
  caffe2::SoftmaxWithLossArgs args;
  args.axis = 2;
  EXPECT_ERROR_MENTIONS(
      caffe2::softmax_with_loss(f32({3, 4}), filled(DType::kInt32, {3}, 0), std::nullopt, args),
      {"axis", "2"});
}

// --- overflow ------------------------------------------------------------------------------

TEST(OverflowErrors, ElementCountOverflowIsCaughtBeforeReading) {
  // Views with a huge shape over a 16-element buffer: any read past the
  // buffer is caught by the sanitizers, so the error must come first.
  alignas(64) static const double tiny[16] = {};
  alignas(64) static const std::int64_t tiny_labels[16] = {};
  const std::int64_t big = std::int64_t{1} << 40, huge = std::int64_t{1} << 30;
  // Explicit strides: the dense constructor would compute the C-order
  // strides, whose product overflows (see DenseViewOfAnOverflowingShape).
  const TensorView x(tiny, DType::kFloat64, {big, huge, 16}, {huge * 16, 16, 1});
  const TensorView labels(tiny_labels, DType::kInt64, {big, 16});
  const TensorView g(tiny, DType::kFloat64, {});
  EXPECT_ERROR_MENTIONS(softmax(x), {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(log_softmax(x), {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(entropy(x), {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(softmax_backward(x, x), {"overflow"});
  EXPECT_ERROR_MENTIONS(log_softmax_backward(x, x), {"overflow"});
  EXPECT_ERROR_MENTIONS(cross_entropy(x, labels), {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward(x, labels), {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(cross_entropy_backward(x, labels, CrossEntropyGrads{g, {}, {}, {}}),
                        {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(nll_loss(x, labels), {"log_prob", "overflow"});
  EXPECT_ERROR_MENTIONS(kl_div(x, x), {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(kl_div_backward(x, x, g), {"logits", "overflow"});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax(x), {"input", "overflow"});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax_backward(x, {}), {"input", "overflow"});
  const TensorView x4(tiny, DType::kFloat64, {big, huge, 4, 4}, {huge * 16, 16, 4, 1});
  const TensorView t3(tiny_labels, DType::kInt32, {big, 4, 4});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss(x4, t3, std::nullopt), {"X", "overflow"});
  EXPECT_ERROR_MENTIONS(caffe2::spatial_softmax_with_loss_gradient(x4, t3, std::nullopt, x4, g),
                        {"X", "overflow"});
  const TensorView t1(tiny_labels, DType::kInt32, {big});
  static_assert(sizeof(tiny_labels) >= 16 * sizeof(std::int32_t));
  EXPECT_ERROR_MENTIONS(caffe2::softmax_with_loss(x, t1, std::nullopt), {"X", "overflow"});
}

TEST(OverflowErrors, ByteSizeOverflowIsAnError) {
  // 2^61 float64 elements fit int64 but their 2^64 bytes do not fit size_t.
  alignas(64) static const double tiny[16] = {};
  const std::int64_t half = std::int64_t{1} << 30;
  const TensorView x(tiny, DType::kFloat64, {half, half, 2});
  EXPECT_ERROR_MENTIONS(softmax(x), {"logits", "overflow"});
}

TEST(OverflowErrors, NegativeDimIsAnError) {
  alignas(64) static const double tiny[16] = {};
  const TensorView x(tiny, DType::kFloat64, {2, 3, -1});
  EXPECT_ERROR_MENTIONS(softmax(x), {"logits", "-1"});
}

// Kept last in the file: if the library's dense TensorView constructor
// overflows while computing C-order strides, the sanitizers abort the program
// here, after every other test has run.
TEST(OverflowErrors, ZDenseViewOfAnOverflowingShape) {
  alignas(64) static const double tiny[16] = {};
  const std::int64_t big = std::int64_t{1} << 40, huge = std::int64_t{1} << 30;
  EXPECT_ERROR_MENTIONS(softmax(TensorView(tiny, DType::kFloat64, {big, huge, 16})),
                        {"logits", "overflow"});
}

}  // namespace
}  // namespace spatialsoftmax
