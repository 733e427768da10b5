// Properties docs/semantics.md promises (sections 1-5): normalisation,
// invariances, layouts, non-finite rules, edge cases, presets, the Caffe2
// operators' quirks, the spatial soft-argmax's edge cases, and agreement with
// small scalar oracles written here directly from its formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

using testing::all_close;
using testing::bitwise_equal;
using testing::filled;
using testing::max_abs;
using testing::random_labels;
using testing::random_uniform;
using testing::set_element;
using testing::values;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// --- helpers ------------------------------------------------------------------

Tensor scalar(DType dtype, double v) { return Tensor::scalar(dtype, v); }

std::int64_t product(const Shape& s, std::size_t from, std::size_t to) {
  std::int64_t p = 1;
  for (std::size_t i = from; i < to; ++i) p *= s[i];
  return p;
}

// (N, C, d1..dk) -> (N, d1..dk, C) with a plain loop, bytewise (so NaNs and
// signed zeros survive).
Tensor move_class_last(const Tensor& x) {
  const Shape& s = x.shape();
  const std::int64_t n_batch = s[0], classes = s[1], pixels = product(s, 2, s.size());
  Shape out_shape{n_batch};
  for (std::size_t d = 2; d < s.size(); ++d) out_shape.push_back(s[d]);
  out_shape.push_back(classes);
  Tensor out(x.dtype(), out_shape);
  const std::size_t e = dtype_size(x.dtype());
  const auto* src = static_cast<const unsigned char*>(x.data());
  auto* dst = static_cast<unsigned char*>(out.data());
  for (std::int64_t n = 0; n < n_batch; ++n) {
    for (std::int64_t c = 0; c < classes; ++c) {
      for (std::int64_t p = 0; p < pixels; ++p) {
        std::memcpy(dst + ((n * pixels + p) * classes + c) * e,
                    src + ((n * classes + c) * pixels + p) * e, e);
      }
    }
  }
  return out;
}

// out[n] = x[perm[n]] along dim 0, bytewise.
Tensor permute_batch(const Tensor& x, const std::vector<std::int64_t>& perm) {
  Tensor out(x.dtype(), x.shape());
  const std::size_t row = x.nbytes() / static_cast<std::size_t>(x.shape()[0]);
  for (std::size_t n = 0; n < perm.size(); ++n) {
    std::memcpy(
        static_cast<unsigned char*>(out.data()) + n * row,
        static_cast<const unsigned char*>(x.data()) + static_cast<std::size_t>(perm[n]) * row, row);
  }
  return out;
}

// Flat offset of (n, c, p) in a dense class-first tensor.
std::int64_t at_first(const Shape& s, std::int64_t n, std::int64_t c, std::int64_t p) {
  return (n * s[1] + c) * product(s, 2, s.size()) + p;
}

::testing::AssertionResult bitwise(const Tensor& got, const Tensor& want) {
  if (bitwise_equal(got, want)) return ::testing::AssertionSuccess();
  std::string why;
  all_close(got, want, 0, 0, &why);
  return ::testing::AssertionFailure()
         << "not bitwise equal: got " << shape_string(got.shape()) << " " << dtype_name(got.dtype())
         << ", want " << shape_string(want.shape()) << " " << dtype_name(want.dtype()) << "; "
         << why;
}

::testing::AssertionResult close(const TensorView& got, const TensorView& want, double rtol,
                                 double atol) {
  std::string why;
  if (all_close(got, want, rtol, atol, &why)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << why;
}

// A softmax-normalised probability tensor over axis 1 of a class-first shape.
Tensor random_probabilities(DType dtype, const Shape& s, std::uint64_t seed) {
  Tensor t = random_uniform(DType::kFloat64, s, 0.05, 1, seed);
  const std::int64_t pixels = product(s, 2, s.size());
  for (std::int64_t n = 0; n < s[0]; ++n) {
    for (std::int64_t p = 0; p < pixels; ++p) {
      double sum = 0;
      for (std::int64_t c = 0; c < s[1]; ++c) sum += t.at(at_first(s, n, c, p));
      for (std::int64_t c = 0; c < s[1]; ++c) t.data_as<double>()[at_first(s, n, c, p)] /= sum;
    }
  }
  return t.to(dtype);
}

const DType kFloatTypes[] = {DType::kFloat32, DType::kFloat64};

// --- normalisation and positivity ------------------------------------------------

TEST(Softmax, ProbabilitiesSumToOneAndLieInUnitInterval) {
  for (DType dtype : kFloatTypes) {
    const Tensor x = random_uniform(dtype, {2, 5, 3, 4}, -20, 20, 1);
    const Tensor p = softmax(x);
    const Tensor p_last = softmax(move_class_last(x), ClassAxis::kLast);
    const double tol = dtype == DType::kFloat32 ? 1e-6 : 1e-14;
    for (std::int64_t n = 0; n < 2; ++n) {
      for (std::int64_t q = 0; q < 12; ++q) {
        double sum = 0, sum_last = 0;
        for (std::int64_t c = 0; c < 5; ++c) {
          const double v = p.at(at_first(x.shape(), n, c, q));
          EXPECT_GE(v, 0.0);
          EXPECT_LE(v, 1.0);
          sum += v;
          sum_last += p_last.at((n * 12 + q) * 5 + c);
        }
        EXPECT_NEAR(sum, 1.0, tol) << "n " << n << " p " << q;
        EXPECT_NEAR(sum_last, 1.0, tol) << "n " << n << " p " << q;
      }
    }
    // exp(log_softmax) is the softmax.
    const Tensor logp = log_softmax(x);
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      EXPECT_NEAR(std::exp(logp.at(i)), p.at(i), dtype == DType::kFloat32 ? 2e-6 : 1e-14);
      EXPECT_LE(logp.at(i), 0.0);
    }
  }
}

TEST(CrossEntropy, LossesAreNonNegative) {
  const Shape shape{2, 4, 3, 5};
  for (DType dtype : kFloatTypes) {
    const Tensor x = random_uniform(dtype, shape, -6, 6, 2);
    const Tensor labels = random_labels(DType::kInt64, {2, 3, 5}, 4, 3);
    const Tensor probs = random_probabilities(dtype, shape, 4);
    const Tensor w = random_uniform(dtype, {4}, 0, 2, 5);
    const Tensor a = random_uniform(dtype, {2, 3, 5}, 0, 2, 6);
    for (double eps : {0.0, 0.3, 1.0}) {
      CrossEntropyOptions o;
      o.class_weight = w.view();
      o.pixel_weight = a.view();
      o.label_smoothing = eps;
      o.want_entropy = true;
      for (const Tensor* targets : {&labels, &probs}) {
        o.reduction = Reduction::kNone;
        const CrossEntropyResult r = cross_entropy(x, *targets, o);
        for (std::int64_t i = 0; i < r.loss.numel(); ++i) EXPECT_GE(r.loss.at(i), 0.0) << i;
        for (std::int64_t i = 0; i < r.entropy.numel(); ++i) {
          EXPECT_GE(r.entropy.at(i), 0.0) << i;
        }
        o.reduction = Reduction::kSum;
        EXPECT_GT(cross_entropy(x, *targets, o).loss.at(0), 0.0);
        o.reduction = Reduction::kMean;
        EXPECT_GT(cross_entropy(x, *targets, o).loss.at(0), 0.0);
      }
    }
    // KL(T || q) >= 0 per position for normalised T (the elementwise map may
    // be negative, its sum over classes may not).
    KlDivOptions ko;
    ko.reduction = Reduction::kNone;
    const Tensor map = kl_div(x, probs, ko);
    for (std::int64_t n = 0; n < 2; ++n) {
      for (std::int64_t p = 0; p < 15; ++p) {
        double kl = 0;
        for (std::int64_t c = 0; c < 4; ++c) kl += map.at(at_first(shape, n, c, p));
        EXPECT_GE(kl, -1e-6);
      }
    }
    ko.reduction = Reduction::kBatchMean;
    EXPECT_GT(kl_div(x, probs, ko).at(0), 0.0);
  }
}

// --- invariances ------------------------------------------------------------------

TEST(Invariance, AddingAConstantPerPositionChangesNothing) {
  const Shape shape{2, 4, 3, 5};
  const Tensor x = random_uniform(DType::kFloat64, shape, -4, 4, 7);
  const Tensor shifts = random_uniform(DType::kFloat64, {2, 15}, -50, 50, 8);
  Tensor y = Tensor::copy_of(x);
  for (std::int64_t n = 0; n < 2; ++n) {
    for (std::int64_t c = 0; c < 4; ++c) {
      for (std::int64_t p = 0; p < 15; ++p) {
        y.data_as<double>()[at_first(shape, n, c, p)] += shifts.at(n * 15 + p);
      }
    }
  }
  // The shift itself is rounded (|x + c| <= 54), hence the 1e-12 tolerances.
  EXPECT_TRUE(close(softmax(y), softmax(x), 1e-12, 1e-13));
  EXPECT_TRUE(close(log_softmax(y), log_softmax(x), 1e-12, 1e-12));
  EXPECT_TRUE(close(entropy(y), entropy(x), 1e-12, 1e-12));

  const Tensor labels = random_labels(DType::kInt64, {2, 3, 5}, 4, 9);
  const Tensor probs = random_probabilities(DType::kFloat64, shape, 10);
  const Tensor w = random_uniform(DType::kFloat64, {4}, 0.5, 2, 11);
  const Tensor g = random_uniform(DType::kFloat64, {2, 3, 5}, -1, 1, 12);
  for (const Tensor* targets : {&labels, &probs}) {
    CrossEntropyOptions o;
    o.class_weight = w.view();
    o.label_smoothing = 0.2;
    o.reduction = Reduction::kNone;
    EXPECT_TRUE(close(cross_entropy(y, *targets, o).loss, cross_entropy(x, *targets, o).loss, 1e-12,
                      1e-12));
    CrossEntropyGrads grads;
    grads.loss = g.view();
    EXPECT_TRUE(close(cross_entropy_backward(y, *targets, grads, o),
                      cross_entropy_backward(x, *targets, grads, o), 1e-12, 1e-13));
    o.reduction = Reduction::kMean;
    EXPECT_TRUE(close(cross_entropy(y, *targets, o).loss, cross_entropy(x, *targets, o).loss, 1e-12,
                      1e-12));
  }
  for (bool log_target : {false, true}) {
    KlDivOptions ko;
    ko.log_target = log_target;
    ko.reduction = Reduction::kNone;
    const Tensor t =
        log_target ? random_uniform(DType::kFloat64, shape, -3, 0, 13) : Tensor::copy_of(probs);
    EXPECT_TRUE(close(kl_div(y, t, ko), kl_div(x, t, ko), 1e-12, 1e-12));
    const Tensor gk = random_uniform(DType::kFloat64, shape, -1, 1, 14);
    EXPECT_TRUE(close(kl_div_backward(y, t, gk, ko), kl_div_backward(x, t, gk, ko), 1e-12, 1e-13));
  }
}

// --- layouts ----------------------------------------------------------------------

class LayoutTest : public ::testing::TestWithParam<DType> {};

TEST_P(LayoutTest, ClassLastGivesTheSameNumbersAsClassFirst) {
  // semantics 1: class-first and class-last are bitwise identical within one
  // backend. The inputs are transposed here with a plain loop.
  const DType dtype = GetParam();
  const Shape shape{2, 5, 3, 4};
  const Tensor x = random_uniform(dtype, shape, -5, 5, 20);
  const Tensor xl = move_class_last(x);
  constexpr ClassAxis kLast = ClassAxis::kLast;

  EXPECT_TRUE(bitwise(softmax(xl, kLast), move_class_last(softmax(x))));
  EXPECT_TRUE(bitwise(log_softmax(xl, kLast), move_class_last(log_softmax(x))));
  EXPECT_TRUE(bitwise(entropy(xl, kLast), entropy(x)));
  const Tensor gy = random_uniform(dtype, shape, -1, 1, 21);
  const Tensor p = softmax(x), logp = log_softmax(x);
  EXPECT_TRUE(bitwise(softmax_backward(move_class_last(p), move_class_last(gy), kLast),
                      move_class_last(softmax_backward(p, gy))));
  EXPECT_TRUE(bitwise(log_softmax_backward(move_class_last(logp), move_class_last(gy), kLast),
                      move_class_last(log_softmax_backward(logp, gy))));

  // cross_entropy with every option, index and probability targets.
  Tensor labels = random_labels(DType::kInt32, {2, 3, 4}, 5, 22);
  set_element(labels, 3, -1);
  set_element(labels, 17, -1);
  const Tensor probs = random_probabilities(dtype, shape, 23);
  const Tensor w = random_uniform(dtype, {5}, 0.1, 2, 24);
  const Tensor a = random_uniform(dtype, {2, 3, 4}, 0, 2, 25);
  const Tensor g_map = random_uniform(dtype, {2, 3, 4}, -1, 1, 26);
  const Tensor g_ent = random_uniform(dtype, {2, 3, 4}, -1, 1, 27);
  const Tensor g_scalar = scalar(dtype, 0.8);
  for (bool soft : {false, true}) {
    for (Reduction red : {Reduction::kNone, Reduction::kSum, Reduction::kMean}) {
      SCOPED_TRACE(std::string(soft ? "prob " : "index ") + std::string(to_string(red)));
      CrossEntropyOptions o;
      o.class_weight = w.view();
      o.pixel_weight = a.view();
      if (!soft) o.ignore_index = -1;
      o.label_smoothing = 0.1;
      o.reduction = red;
      o.want_prob = o.want_log_prob = o.want_entropy = true;
      CrossEntropyOptions ol = o;
      ol.class_axis = kLast;
      const Tensor targets_last = soft ? move_class_last(probs) : Tensor::copy_of(labels);
      const TensorView targets = soft ? probs.view() : labels.view();
      const CrossEntropyResult first = cross_entropy(x, targets, o);
      const CrossEntropyResult last = cross_entropy(xl, targets_last, ol);
      EXPECT_TRUE(bitwise(last.loss, first.loss));
      EXPECT_TRUE(bitwise(last.prob, move_class_last(first.prob)));
      EXPECT_TRUE(bitwise(last.log_prob, move_class_last(first.log_prob)));
      EXPECT_TRUE(bitwise(last.entropy, first.entropy));

      CrossEntropyGrads grads, grads_last;
      grads.loss = red == Reduction::kNone ? g_map.view() : g_scalar.view();
      grads.prob = gy.view();
      grads.entropy = g_ent.view();
      const Tensor gy_last = move_class_last(gy);
      grads_last = grads;
      grads_last.prob = gy_last.view();
      EXPECT_TRUE(bitwise(cross_entropy_backward(xl, targets_last, grads_last, ol),
                          move_class_last(cross_entropy_backward(x, targets, grads, o))));
      const CrossEntropyResult fb = cross_entropy_forward_backward(x, targets, o, grads);
      const CrossEntropyResult fbl =
          cross_entropy_forward_backward(xl, targets_last, ol, grads_last);
      EXPECT_TRUE(bitwise(fbl.loss, fb.loss));
      EXPECT_TRUE(bitwise(fbl.grad_logits, move_class_last(fb.grad_logits)));

      if (!soft) {
        CrossEntropyOptions no;
        no.class_weight = w.view();
        no.ignore_index = -1;
        no.reduction = red;
        CrossEntropyOptions nol = no;
        nol.class_axis = kLast;
        const Tensor logp_last = move_class_last(logp);
        EXPECT_TRUE(bitwise(nll_loss(logp_last, labels, nol), nll_loss(logp, labels, no)));
        const TensorView gl = red == Reduction::kNone ? g_map.view() : g_scalar.view();
        EXPECT_TRUE(bitwise(nll_loss_backward(logp_last, labels, gl, nol),
                            move_class_last(nll_loss_backward(logp, labels, gl, no))));
      }
    }
  }

  // kl_div, every reduction and target kind.
  for (bool log_target : {false, true}) {
    for (Reduction red :
         {Reduction::kNone, Reduction::kSum, Reduction::kMean, Reduction::kBatchMean}) {
      SCOPED_TRACE(std::string("kl_div ") + std::string(to_string(red)));
      KlDivOptions ko;
      ko.log_target = log_target;
      ko.reduction = red;
      KlDivOptions kol = ko;
      kol.class_axis = kLast;
      const Tensor t =
          log_target ? random_uniform(dtype, shape, -3, 0, 28) : Tensor::copy_of(probs);
      const Tensor tl = move_class_last(t);
      const Tensor out = kl_div(x, t, ko);
      const Tensor out_last = kl_div(xl, tl, kol);
      EXPECT_TRUE(
          bitwise(out_last, red == Reduction::kNone ? move_class_last(out) : Tensor::copy_of(out)));
      const Tensor g = red == Reduction::kNone ? Tensor::copy_of(gy) : scalar(dtype, 1.7);
      const Tensor gl = red == Reduction::kNone ? move_class_last(gy) : scalar(dtype, 1.7);
      EXPECT_TRUE(
          bitwise(kl_div_backward(xl, tl, gl, kol), move_class_last(kl_div_backward(x, t, g, ko))));
    }
  }

  // Spatial soft-argmax with the channel axis last: same keypoints and
  // covariance, the softmax in the input's layout.
  for (TemperatureMode mode : {TemperatureMode::kDivide, TemperatureMode::kMultiply}) {
    SpatialSoftArgmaxOptions so;
    so.temperature = 0.8;
    so.temperature_mode = mode;
    so.want_softmax = so.want_covariance = true;
    SpatialSoftArgmaxOptions sol = so;
    sol.channel_axis = kLast;
    const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, so);
    const SpatialSoftArgmaxResult rl = spatial_soft_argmax(xl, sol);
    EXPECT_TRUE(bitwise(rl.keypoints, r.keypoints));
    EXPECT_TRUE(bitwise(rl.softmax, move_class_last(r.softmax)));
    EXPECT_TRUE(bitwise(rl.covariance, r.covariance));
    EXPECT_TRUE(bitwise(spatial_softmax(xl, sol), move_class_last(spatial_softmax(x, so))));
    const Tensor gk = random_uniform(dtype, {2, 5, 2}, -1, 1, 29);
    const Tensor gc = random_uniform(dtype, {2, 5, 2, 2}, -1, 1, 30);
    const Tensor gs_last = move_class_last(gy);
    SpatialSoftArgmaxGrads sg{gk.view(), gy.view(), gc.view()};
    SpatialSoftArgmaxGrads sgl{gk.view(), gs_last.view(), gc.view()};
    const SpatialSoftArgmaxBackward b = spatial_soft_argmax_backward(x, sg, so);
    const SpatialSoftArgmaxBackward bl = spatial_soft_argmax_backward(xl, sgl, sol);
    EXPECT_TRUE(bitwise(bl.grad_input, move_class_last(b.grad_input)));
    EXPECT_DOUBLE_EQ(bl.grad_temperature, b.grad_temperature);
  }
}

INSTANTIATE_TEST_SUITE_P(BothDtypes, LayoutTest,
                         ::testing::Values(DType::kFloat32, DType::kFloat64),
                         [](const auto& param_info) {
                           return std::string(dtype_name(param_info.param));
                         });

TEST(Invariance, PermutingTheBatchPermutesTheOutputs) {
  const std::vector<std::int64_t> perm{2, 0, 1};
  const Shape shape{3, 4, 2, 3};
  const Tensor x = random_uniform(DType::kFloat32, shape, -5, 5, 40);
  const Tensor px = permute_batch(x, perm);
  EXPECT_TRUE(bitwise(softmax(px), permute_batch(softmax(x), perm)));
  EXPECT_TRUE(bitwise(log_softmax(px), permute_batch(log_softmax(x), perm)));

  Tensor labels = random_labels(DType::kInt64, {3, 2, 3}, 4, 41);
  set_element(labels, 4, -1);
  const Tensor a = random_uniform(DType::kFloat32, {3, 2, 3}, 0, 2, 42);
  const Tensor w = random_uniform(DType::kFloat32, {4}, 0.1, 2, 43);
  const Tensor g = random_uniform(DType::kFloat32, {3, 2, 3}, -1, 1, 44);
  const Tensor pl = permute_batch(labels, perm), pa = permute_batch(a, perm),
               pg = permute_batch(g, perm);
  CrossEntropyOptions o;
  o.class_weight = w.view();
  o.pixel_weight = a.view();
  o.ignore_index = -1;
  o.label_smoothing = 0.1;
  o.reduction = Reduction::kNone;
  o.want_prob = o.want_log_prob = o.want_entropy = true;
  CrossEntropyOptions po = o;
  po.pixel_weight = pa.view();
  const CrossEntropyResult r = cross_entropy(x, labels, o);
  const CrossEntropyResult pr = cross_entropy(px, pl, po);
  EXPECT_TRUE(bitwise(pr.loss, permute_batch(r.loss, perm)));
  EXPECT_TRUE(bitwise(pr.prob, permute_batch(r.prob, perm)));
  EXPECT_TRUE(bitwise(pr.log_prob, permute_batch(r.log_prob, perm)));
  EXPECT_TRUE(bitwise(pr.entropy, permute_batch(r.entropy, perm)));
  CrossEntropyGrads grads, pgrads;
  grads.loss = g.view();
  pgrads.loss = pg.view();
  EXPECT_TRUE(bitwise(cross_entropy_backward(px, pl, pgrads, po),
                      permute_batch(cross_entropy_backward(x, labels, grads, o), perm)));
  // Reductions sum in another order: equal within float rounding.
  for (Reduction red : {Reduction::kSum, Reduction::kMean}) {
    o.reduction = po.reduction = red;
    EXPECT_TRUE(close(cross_entropy(px, pl, po).loss, cross_entropy(x, labels, o).loss, 1e-6, 0));
  }
  KlDivOptions ko;
  ko.reduction = Reduction::kNone;
  const Tensor t = random_probabilities(DType::kFloat32, shape, 45);
  EXPECT_TRUE(
      bitwise(kl_div(px, permute_batch(t, perm), ko), permute_batch(kl_div(x, t, ko), perm)));
  SpatialSoftArgmaxOptions so;
  so.want_softmax = so.want_covariance = true;
  const SpatialSoftArgmaxResult s = spatial_soft_argmax(x, so);
  const SpatialSoftArgmaxResult ps = spatial_soft_argmax(px, so);
  EXPECT_TRUE(bitwise(ps.keypoints, permute_batch(s.keypoints, perm)));
  EXPECT_TRUE(bitwise(ps.softmax, permute_batch(s.softmax, perm)));
  EXPECT_TRUE(bitwise(ps.covariance, permute_batch(s.covariance, perm)));
}

// --- numerics ---------------------------------------------------------------------

TEST(Numerics, LargeLogitsDoNotOverflow) {
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    // Two positions of class-last logits: a huge spread and a huge constant.
    const Tensor x = values(dtype, {2, 3}, {1e4, -1e4, 0, -1e4, -1e4, -1e4});
    const Tensor labels = values(DType::kInt64, {2}, {1, 2});
    CrossEntropyOptions o;
    o.reduction = Reduction::kNone;
    o.want_prob = o.want_log_prob = true;
    o.class_axis = ClassAxis::kLast;
    const CrossEntropyResult r = cross_entropy(x, labels, o);
    const double third = 1.0 / 3.0, log3 = std::log(3.0);
    const double tol = dtype == DType::kFloat32 ? 1e-6 : 1e-14;
    EXPECT_TRUE(
        close(r.prob, values(DType::kFloat64, {2, 3}, {1, 0, 0, third, third, third}), tol, tol));
    EXPECT_TRUE(close(r.log_prob,
                      values(DType::kFloat64, {2, 3}, {0, -2e4, -1e4, -log3, -log3, -log3}), tol,
                      tol));
    EXPECT_TRUE(close(r.loss, values(DType::kFloat64, {2}, {2e4, log3}), tol, tol));
    const Tensor dx = cross_entropy_forward_backward(x, labels, o).grad_logits;
    EXPECT_TRUE(
        close(dx, values(DType::kFloat64, {2, 3}, {1, -1, 0, third, third, -2 * third}), tol, tol));
    EXPECT_TRUE(
        close(entropy(x, ClassAxis::kLast), values(DType::kFloat64, {2}, {0, log3}), tol, tol));
    // KL to a uniform target stays finite.
    KlDivOptions ko;
    ko.class_axis = ClassAxis::kLast;
    ko.reduction = Reduction::kSum;
    const double kl = kl_div(x, filled(dtype, {2, 3}, third), ko).at(0);
    EXPECT_TRUE(std::isfinite(kl));
    EXPECT_NEAR(kl, 3 * third * (std::log(third) + 1e4), 1e4 * tol);
    // Spatial soft-argmax puts all mass on the 1e4 pixel.
    const Tensor s = values(dtype, {1, 1, 3}, {-1e4, 1e4, 0});
    EXPECT_TRUE(
        close(spatial_soft_argmax(s).keypoints, values(DType::kFloat64, {1, 1, 1}, {0}), 0, tol));
  }
}

// Values of position (n, p) of a class-first tensor.
std::vector<double> column(const Tensor& t, std::int64_t n, std::int64_t p) {
  std::vector<double> out;
  for (std::int64_t c = 0; c < t.shape()[1]; ++c) out.push_back(t.at(at_first(t.shape(), n, c, p)));
  return out;
}

TEST(Numerics, NaNOrInfInAPositionMakesThatPositionNaN) {
  for (DType dtype : kFloatTypes) {
    for (double bad : {kNaN, kInf}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (std::isnan(bad) ? " NaN" : " +inf"));
      const Shape shape{1, 3, 2, 2};
      Tensor x = random_uniform(dtype, shape, -2, 2, 50);
      set_element(x, at_first(shape, 0, 1, 1), bad);  // position p = 1
      const Tensor labels = values(DType::kInt64, {1, 2, 2}, {0, 2, 1, 0});
      CrossEntropyOptions o;
      o.reduction = Reduction::kNone;
      o.want_prob = o.want_log_prob = o.want_entropy = true;
      const CrossEntropyResult r = cross_entropy_forward_backward(x, labels, o);
      for (std::int64_t p = 0; p < 4; ++p) {
        const bool poisoned = p == 1;
        for (const Tensor* t : {&r.prob, &r.log_prob, &r.grad_logits}) {
          for (double v : column(*t, 0, p)) {
            EXPECT_EQ(std::isnan(v), poisoned) << "p " << p << " v " << v;
            if (!poisoned) {
              EXPECT_TRUE(std::isfinite(v));
            }
          }
        }
        EXPECT_EQ(std::isnan(r.loss.at(p)), poisoned) << p;
        EXPECT_EQ(std::isnan(r.entropy.at(p)), poisoned) << p;
      }
      for (Reduction red : {Reduction::kSum, Reduction::kMean}) {
        o.reduction = red;
        EXPECT_TRUE(std::isnan(cross_entropy(x, labels, o).loss.at(0)));
      }
      const Tensor p = softmax(x);
      for (double v : column(p, 0, 1)) EXPECT_TRUE(std::isnan(v));
      for (double v : column(p, 0, 2)) EXPECT_FALSE(std::isnan(v));
    }
    // All -inf: NaN too.
    Tensor x = random_uniform(dtype, {1, 3, 2}, -2, 2, 51);
    for (std::int64_t c = 0; c < 3; ++c) set_element(x, c * 2, -kInf);
    const Tensor p = softmax(x);
    for (std::int64_t c = 0; c < 3; ++c) {
      EXPECT_TRUE(std::isnan(p.at(c * 2))) << c;
      EXPECT_TRUE(std::isfinite(p.at(c * 2 + 1))) << c;
    }
    CrossEntropyOptions o;
    o.reduction = Reduction::kNone;
    const Tensor loss = cross_entropy(x, values(DType::kInt64, {1, 2}, {0, 0}), o).loss;
    EXPECT_TRUE(std::isnan(loss.at(0)));
    EXPECT_TRUE(std::isfinite(loss.at(1)));
  }
}

TEST(Numerics, MinusInfWithAFiniteMaxGivesZeroProbability) {
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    // Class-last, two positions: (-inf, 0, 1) labelled 0 and labelled 1.
    const Tensor x = values(dtype, {2, 3}, {-kInf, 0, 1, -kInf, 0, 1});
    const Tensor labels = values(DType::kInt32, {2}, {0, 1});
    CrossEntropyOptions o;
    o.class_axis = ClassAxis::kLast;
    o.reduction = Reduction::kNone;
    o.want_prob = o.want_log_prob = true;
    const CrossEntropyResult r = cross_entropy_forward_backward(x, labels, o);
    EXPECT_EQ(r.prob.at(0), 0.0);
    EXPECT_EQ(r.log_prob.at(0), -kInf);
    EXPECT_TRUE(std::isfinite(r.log_prob.at(1)));
    EXPECT_EQ(r.loss.at(0), kInf);  // label on the -inf class
    EXPECT_TRUE(std::isfinite(r.loss.at(1)));
    const double p1 = 1 / (1 + std::exp(1.0)), p2 = 1 - p1;
    const double tol = dtype == DType::kFloat32 ? 1e-6 : 1e-14;
    // dX = p - onehot(y): finite, -1 on the -inf class for label 0.
    EXPECT_TRUE(close(r.grad_logits, values(DType::kFloat64, {2, 3}, {-1, p1, p2, 0, p1 - 1, p2}),
                      tol, tol));
    o.reduction = Reduction::kSum;
    EXPECT_EQ(cross_entropy(x, labels, o).loss.at(0), kInf);
  }
}

TEST(SpatialSoftArgmax, NonFiniteChannelIsNaN) {
  for (double bad : {kNaN, kInf, -kInf}) {
    Tensor x = random_uniform(DType::kFloat64, {1, 2, 2, 3}, -1, 1, 52);
    if (std::isinf(bad) && bad < 0) {
      for (std::int64_t p = 0; p < 6; ++p) set_element(x, 6 + p, -kInf);  // channel 1 all -inf
    } else {
      set_element(x, 6 + 4, bad);  // one pixel of channel 1
    }
    SpatialSoftArgmaxOptions so;
    so.want_softmax = true;
    const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, so);
    for (std::int64_t p = 0; p < 6; ++p) {
      EXPECT_TRUE(std::isfinite(r.softmax.at(p))) << p;
      EXPECT_TRUE(std::isnan(r.softmax.at(6 + p))) << p;
    }
    EXPECT_TRUE(std::isfinite(r.keypoints.at(0)));
    EXPECT_TRUE(std::isfinite(r.keypoints.at(1)));
    EXPECT_TRUE(std::isnan(r.keypoints.at(2)));
    EXPECT_TRUE(std::isnan(r.keypoints.at(3)));
  }
}

// --- degenerate sizes -----------------------------------------------------------

TEST(EdgeCases, SingleClassGivesZeroLossAndZeroGradient) {
  for (DType dtype : kFloatTypes) {
    const Shape shape{2, 1, 3, 2};
    const Tensor x = random_uniform(dtype, shape, -5, 5, 60);
    Tensor labels = filled(DType::kInt64, {2, 3, 2}, 0);
    set_element(labels, 3, -1);
    const Tensor probs = filled(dtype, shape, 1);
    const Tensor w = filled(dtype, {1}, 0.7);
    const Tensor a = random_uniform(dtype, {2, 3, 2}, 0, 2, 61);
    for (bool soft : {false, true}) {
      for (Reduction red : {Reduction::kNone, Reduction::kSum, Reduction::kMean}) {
        for (double eps : {0.0, 0.5, 1.0}) {
          SCOPED_TRACE(std::string(dtype_name(dtype)) + (soft ? " prob " : " index ") +
                       std::string(to_string(red)) + " eps " + std::to_string(eps));
          CrossEntropyOptions o;
          o.reduction = red;
          o.label_smoothing = eps;
          o.class_weight = w.view();
          o.pixel_weight = a.view();
          if (!soft) o.ignore_index = -1;
          const CrossEntropyResult r =
              cross_entropy_forward_backward(x, soft ? probs.view() : labels.view(), o);
          EXPECT_EQ(max_abs(r.loss), 0.0);
          EXPECT_EQ(max_abs(r.grad_logits), 0.0);
          EXPECT_EQ(r.grad_logits.shape(), shape);
        }
      }
    }
    EXPECT_EQ(max_abs(entropy(x)), 0.0);
    EXPECT_TRUE(close(softmax(x), filled(DType::kFloat64, shape, 1), 0, 0));
  }
}

TEST(EdgeCases, EverythingIgnoredGivesNaNOrZeroMeanAndZeroGradient) {
  const Shape shape{2, 3, 2, 2};
  const Tensor x = random_uniform(DType::kFloat64, shape, -2, 2, 62);
  const Tensor ignored = filled(DType::kInt64, {2, 2, 2}, -1);
  const Tensor labels = random_labels(DType::kInt64, {2, 2, 2}, 3, 63);
  const Tensor zero_class_weight = filled(DType::kFloat64, {3}, 0);
  const Tensor zero_pixel_weight = filled(DType::kFloat64, {2, 2, 2}, 0);
  const Tensor one = scalar(DType::kFloat64, 1);
  struct Case {
    const char* what;
    const Tensor* labels;
    const Tensor* class_weight;
    const Tensor* pixel_weight;
  };
  const Case cases[] = {{"all ignored", &ignored, nullptr, nullptr},
                        {"class weights 0", &labels, &zero_class_weight, nullptr},
                        {"pixel weights 0", &labels, nullptr, &zero_pixel_weight}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    CrossEntropyOptions o;
    o.ignore_index = -1;
    if (c.class_weight) o.class_weight = c.class_weight->view();
    if (c.pixel_weight) o.pixel_weight = c.pixel_weight->view();
    CrossEntropyGrads grads;
    grads.loss = one.view();
    o.zero_weight_mean = ZeroWeightMean::kNaN;
    EXPECT_TRUE(std::isnan(cross_entropy(x, *c.labels, o).loss.at(0)));
    EXPECT_EQ(max_abs(cross_entropy_backward(x, *c.labels, grads, o)), 0.0);
    EXPECT_EQ(max_abs(cross_entropy_forward_backward(x, *c.labels, o).grad_logits), 0.0);
    o.zero_weight_mean = ZeroWeightMean::kZero;
    EXPECT_EQ(cross_entropy(x, *c.labels, o).loss.at(0), 0.0);
    EXPECT_EQ(max_abs(cross_entropy_backward(x, *c.labels, grads, o)), 0.0);
    o.reduction = Reduction::kSum;
    EXPECT_EQ(cross_entropy(x, *c.labels, o).loss.at(0), 0.0);
    EXPECT_EQ(max_abs(cross_entropy_backward(x, *c.labels, grads, o)), 0.0);
  }
}

TEST(EdgeCases, EmptyBatchWorks) {
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    const Shape shape{0, 3, 2, 2};
    const Tensor x(dtype, shape);
    const Tensor labels(DType::kInt64, {0, 2, 2});
    const Tensor probs(dtype, shape);
    EXPECT_EQ(softmax(x).shape(), shape);
    EXPECT_EQ(log_softmax(x).shape(), shape);
    EXPECT_EQ(entropy(x).shape(), (Shape{0, 2, 2}));
    for (const Tensor* targets : {&labels, &probs}) {
      CrossEntropyOptions o;
      o.reduction = Reduction::kNone;
      o.want_prob = true;
      const CrossEntropyResult none = cross_entropy_forward_backward(x, *targets, o);
      EXPECT_EQ(none.loss.shape(), (Shape{0, 2, 2}));
      EXPECT_EQ(none.prob.shape(), shape);
      EXPECT_EQ(none.grad_logits.shape(), shape);
      o.reduction = Reduction::kMean;
      EXPECT_TRUE(std::isnan(cross_entropy(x, *targets, o).loss.at(0)));
      EXPECT_EQ(cross_entropy_forward_backward(x, *targets, o).grad_logits.shape(), shape);
      o.zero_weight_mean = ZeroWeightMean::kZero;
      EXPECT_EQ(cross_entropy(x, *targets, o).loss.at(0), 0.0);
      o.reduction = Reduction::kSum;
      const Tensor sum = cross_entropy(x, *targets, o).loss;
      EXPECT_EQ(sum.rank(), 0);
      EXPECT_EQ(sum.at(0), 0.0);
    }
    CrossEntropyOptions o;
    o.reduction = Reduction::kSum;
    EXPECT_EQ(nll_loss(x, labels, o).at(0), 0.0);
    KlDivOptions ko;
    ko.reduction = Reduction::kMean;
    EXPECT_TRUE(std::isnan(kl_div(x, probs, ko).at(0)));
    ko.reduction = Reduction::kBatchMean;
    EXPECT_TRUE(std::isnan(kl_div(x, probs, ko).at(0)));
    ko.reduction = Reduction::kSum;
    EXPECT_EQ(kl_div(x, probs, ko).at(0), 0.0);
    ko.reduction = Reduction::kNone;
    EXPECT_EQ(kl_div(x, probs, ko).shape(), shape);
    SpatialSoftArgmaxOptions so;
    so.want_softmax = so.want_covariance = true;
    const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, so);
    EXPECT_EQ(r.keypoints.shape(), (Shape{0, 3, 2}));
    EXPECT_EQ(r.softmax.shape(), shape);
    EXPECT_EQ(r.covariance.shape(), (Shape{0, 3, 2, 2}));
    // C = 0 channels: empty outputs too (semantics 4).
    const SpatialSoftArgmaxResult r0 = spatial_soft_argmax(Tensor(dtype, {2, 0, 3}), so);
    EXPECT_EQ(r0.keypoints.shape(), (Shape{2, 0, 1}));
    EXPECT_EQ(r0.softmax.shape(), (Shape{2, 0, 3}));
  }
}

TEST(EdgeCases, SpatialRanksZeroToEightAreAcceptedAndOnlyPMatters) {
  // The loss depends on the pixels only through P = d1*...*dk: every rank
  // gives exactly the numbers of the same buffer viewed as (N, C, P).
  CrossEntropyOptions o;
  o.reduction = Reduction::kNone;
  o.label_smoothing = 0.1;
  for (int k = 0; k <= 8; ++k) {
    SCOPED_TRACE("k = " + std::to_string(k));
    Shape spatial;
    // k dims: three of length 2 (P = 8 for k >= 3), the rest of length 1.
    for (int d = 0; d < k; ++d) spatial.push_back(d < 3 ? 2 : 1);
    const std::int64_t pixels = product(spatial, 0, spatial.size());
    Shape xs{2, 3}, ls{2};
    xs.insert(xs.end(), spatial.begin(), spatial.end());
    ls.insert(ls.end(), spatial.begin(), spatial.end());
    const Tensor xk = random_uniform(DType::kFloat64, xs, -3, 3, 70);
    const Tensor lk = random_labels(DType::kInt32, ls, 3, 71);
    const TensorView x_flat(xk.data(), DType::kFloat64, {2, 3, pixels});
    const TensorView l_flat(lk.data(), DType::kInt32, {2, pixels});
    const CrossEntropyResult r = cross_entropy_forward_backward(xk, lk, o);
    const CrossEntropyResult flat = cross_entropy_forward_backward(x_flat, l_flat, o);
    ASSERT_EQ(r.loss.shape(), ls);
    ASSERT_EQ(r.grad_logits.shape(), xs);
    EXPECT_EQ(std::memcmp(r.loss.data(), flat.loss.data(), r.loss.nbytes()), 0);
    EXPECT_EQ(std::memcmp(r.grad_logits.data(), flat.grad_logits.data(), r.grad_logits.nbytes()),
              0);
    CrossEntropyOptions sum = o;
    sum.reduction = Reduction::kSum;
    EXPECT_EQ(cross_entropy(xk, lk, sum).loss.at(0), cross_entropy(x_flat, l_flat, sum).loss.at(0));
    EXPECT_GT(cross_entropy(xk, lk, sum).loss.at(0), 0.0);
    if (k >= 1) {
      // The soft-argmax accepts k = 1..8: one component per spatial axis,
      // 0 for the axes of length 1 (centre coordinate).
      const Tensor kp = spatial_soft_argmax(xk).keypoints;
      ASSERT_EQ(kp.shape(), (Shape{2, 3, k}));
      for (std::int64_t i = 0; i < kp.numel(); ++i) {
        const std::int64_t component = i % k;  // fastest axis first
        const std::int64_t axis = k - 1 - component;
        if (spatial[static_cast<std::size_t>(axis)] == 1) {
          EXPECT_EQ(kp.at(i), 0.0);
        }
        EXPECT_LE(std::abs(kp.at(i)), 1.0);
      }
    }
  }
}

// --- strided inputs ---------------------------------------------------------------

// A view of `dense` whose elements sit at every `step`-th slot of `storage`,
// in reverse order along the last dim if `reverse`.
TensorView spread(const Tensor& dense, std::vector<unsigned char>& storage, int step,
                  bool reverse) {
  const std::size_t e = dtype_size(dense.dtype());
  const Shape& s = dense.shape();
  storage.assign(static_cast<std::size_t>(dense.numel()) * e * static_cast<std::size_t>(step) + e,
                 0xAB);
  Shape strides = contiguous_strides(s);
  for (auto& st : strides) st *= step;
  std::int64_t origin = 0;
  if (reverse && !s.empty()) {
    origin = (s.back() - 1) * strides.back();
    strides.back() = -strides.back();
  }
  for (std::int64_t i = 0; i < dense.numel(); ++i) {
    // Logical element i lives at origin + sum(idx * stride).
    std::int64_t rest = i, off = origin;
    for (std::size_t d = s.size(); d-- > 0;) {
      off += (rest % s[d]) * strides[d];
      rest /= s[d];
    }
    std::memcpy(storage.data() + static_cast<std::size_t>(off) * e,
                static_cast<const unsigned char*>(dense.data()) + static_cast<std::size_t>(i) * e,
                e);
  }
  return TensorView(storage.data() + static_cast<std::size_t>(origin) * e, dense.dtype(), s,
                    strides);
}

TEST(StridedViews, GiveTheSameResultsAsDenseCopies) {
  for (DType dtype : kFloatTypes) {
    for (bool reverse : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (reverse ? " reversed" : " step 2"));
      const Shape shape{2, 4, 3, 5};
      const Tensor x = random_uniform(dtype, shape, -4, 4, 80);
      Tensor labels = random_labels(DType::kInt64, {2, 3, 5}, 4, 81);
      set_element(labels, 7, -1);
      const Tensor probs = random_probabilities(dtype, shape, 82);
      const Tensor w = random_uniform(dtype, {4}, 0.1, 2, 83);
      const Tensor a = random_uniform(dtype, {2, 3, 5}, 0, 2, 84);
      const Tensor g = random_uniform(dtype, {2, 3, 5}, -1, 1, 85);
      std::vector<unsigned char> bx, bl, bp, bw, ba, bg;
      const TensorView sx = spread(x, bx, 2, reverse), sl = spread(labels, bl, 3, reverse),
                       sp = spread(probs, bp, 2, reverse), sw = spread(w, bw, 2, reverse),
                       sa = spread(a, ba, 3, reverse), sg = spread(g, bg, 2, reverse);
      ASSERT_FALSE(sx.is_contiguous());
      EXPECT_TRUE(bitwise(Tensor::copy_of(sx), x));  // the view is right

      EXPECT_TRUE(bitwise(softmax(sx), softmax(x)));
      EXPECT_TRUE(bitwise(log_softmax(sx), log_softmax(x)));
      EXPECT_TRUE(bitwise(entropy(sx), entropy(x)));
      for (bool soft : {false, true}) {
        CrossEntropyOptions o, so;
        o.reduction = so.reduction = Reduction::kNone;
        o.want_prob = so.want_prob = true;
        o.class_weight = w.view();
        so.class_weight = sw;
        o.pixel_weight = a.view();
        so.pixel_weight = sa;
        if (!soft) o.ignore_index = so.ignore_index = -1;
        const TensorView t = soft ? probs.view() : labels.view();
        const TensorView st = soft ? sp : sl;
        const CrossEntropyResult dense = cross_entropy(x, t, o);
        const CrossEntropyResult strided = cross_entropy(sx, st, so);
        EXPECT_TRUE(bitwise(strided.loss, dense.loss));
        EXPECT_TRUE(bitwise(strided.prob, dense.prob));
        CrossEntropyGrads grads, sgrads;
        grads.loss = g.view();
        sgrads.loss = sg;
        EXPECT_TRUE(bitwise(cross_entropy_backward(sx, st, sgrads, so),
                            cross_entropy_backward(x, t, grads, o)));
        o.reduction = so.reduction = Reduction::kMean;
        EXPECT_TRUE(bitwise(cross_entropy(sx, st, so).loss, cross_entropy(x, t, o).loss));
      }
      KlDivOptions ko;
      ko.reduction = Reduction::kNone;
      EXPECT_TRUE(bitwise(kl_div(sx, sp, ko), kl_div(x, probs, ko)));
      SpatialSoftArgmaxOptions sao;
      sao.want_softmax = true;
      const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, sao);
      const SpatialSoftArgmaxResult sr = spatial_soft_argmax(sx, sao);
      EXPECT_TRUE(bitwise(sr.keypoints, r.keypoints));
      EXPECT_TRUE(bitwise(sr.softmax, r.softmax));

      // Caffe2 spatial op: int32 labels and pixel weights, strided.
      const Tensor t32 = labels.to(DType::kInt32);
      std::vector<unsigned char> bt;
      const TensorView st32 = spread(t32, bt, 2, reverse);
      const caffe2::LossOutputs c = caffe2::spatial_softmax_with_loss(x, t32, a);
      const caffe2::LossOutputs sc = caffe2::spatial_softmax_with_loss(sx, st32, sa);
      EXPECT_TRUE(bitwise(sc.prob, c.prob));
      EXPECT_TRUE(bitwise(sc.loss, c.loss));
      std::vector<unsigned char> bpp;
      const TensorView sprob = spread(c.prob, bpp, 2, reverse);
      const Tensor d_loss = scalar(dtype, 1.5);
      EXPECT_TRUE(bitwise(caffe2::spatial_softmax_with_loss_gradient(sx, st32, sa, sprob, d_loss),
                          caffe2::spatial_softmax_with_loss_gradient(x, t32, a, c.prob, d_loss)));
    }
  }
}

TEST(StridedViews, TransposedAndBroadcastViews) {
  // Logical (N, C, H, W) stored physically as (N, H, W, C), and pixel
  // weights broadcast over the batch with stride 0.
  const Tensor phys = random_uniform(DType::kFloat32, {2, 3, 4, 5}, -3, 3, 86);  // N H W C
  const TensorView xv(phys.data(), DType::kFloat32, {2, 5, 3, 4}, {60, 1, 20, 5});
  ASSERT_FALSE(xv.is_contiguous());
  const Tensor x = Tensor::copy_of(xv);
  EXPECT_TRUE(bitwise(move_class_last(x), phys));  // the view is what we think
  const Tensor row = random_uniform(DType::kFloat32, {3, 4}, 0, 2, 87);
  const TensorView a(row.data(), DType::kFloat32, {2, 3, 4}, {0, 4, 1});
  const Tensor a_dense = Tensor::copy_of(a);
  const Tensor labels = random_labels(DType::kInt64, {2, 3, 4}, 5, 88);
  CrossEntropyOptions o, od;
  o.reduction = od.reduction = Reduction::kNone;
  o.pixel_weight = a;
  od.pixel_weight = a_dense.view();
  o.want_log_prob = od.want_log_prob = true;
  const CrossEntropyResult r = cross_entropy_forward_backward(xv, labels, o);
  const CrossEntropyResult rd = cross_entropy_forward_backward(x, labels, od);
  EXPECT_TRUE(bitwise(r.loss, rd.loss));
  EXPECT_TRUE(bitwise(r.log_prob, rd.log_prob));
  EXPECT_TRUE(bitwise(r.grad_logits, rd.grad_logits));
  EXPECT_EQ(r.log_prob.shape(), (Shape{2, 5, 3, 4}));  // dense in the logical shape
  EXPECT_TRUE(bitwise(spatial_soft_argmax(xv).keypoints, spatial_soft_argmax(x).keypoints));
}

// --- float32 against float64 ---------------------------------------------------------

TEST(Precision, Float32AgreesWithFloat64WithinSpecTolerances) {
  const Shape shape{2, 5, 4, 3};
  const Tensor x32 = random_uniform(DType::kFloat32, shape, -8, 8, 90);
  const Tensor x64 = x32.to(DType::kFloat64);
  Tensor labels = random_labels(DType::kInt64, {2, 4, 3}, 5, 91);
  set_element(labels, 5, -1);
  const Tensor w32 = random_uniform(DType::kFloat32, {5}, 0.1, 2, 92);
  const Tensor a32 = random_uniform(DType::kFloat32, {2, 4, 3}, 0, 2, 93);
  const Tensor p32 = random_probabilities(DType::kFloat32, shape, 94);
  const Tensor w64 = w32.to(DType::kFloat64), a64 = a32.to(DType::kFloat64),
               p64 = p32.to(DType::kFloat64);
  auto dx_tol = [](const Tensor& ref) { return 1e-6 * max_abs(ref); };

  EXPECT_TRUE(close(softmax(x32), softmax(x64), 1e-5, 1e-6));
  EXPECT_TRUE(close(log_softmax(x32), log_softmax(x64), 1e-5, 1e-5));
  EXPECT_TRUE(close(entropy(x32), entropy(x64), 1e-5, 1e-5));
  for (bool soft : {false, true}) {
    for (Reduction red : {Reduction::kNone, Reduction::kSum, Reduction::kMean}) {
      SCOPED_TRACE(std::string(soft ? "prob " : "index ") + std::string(to_string(red)));
      CrossEntropyOptions o32, o64;
      o32.reduction = o64.reduction = red;
      o32.label_smoothing = o64.label_smoothing = 0.1;
      o32.class_weight = w32.view();
      o64.class_weight = w64.view();
      o32.pixel_weight = a32.view();
      o64.pixel_weight = a64.view();
      if (!soft) o32.ignore_index = o64.ignore_index = -1;
      o32.want_prob = o64.want_prob = o32.want_log_prob = o64.want_log_prob = true;
      const CrossEntropyResult r32 =
          cross_entropy_forward_backward(x32, soft ? p32.view() : labels.view(), o32);
      const CrossEntropyResult r64 =
          cross_entropy_forward_backward(x64, soft ? p64.view() : labels.view(), o64);
      if (red == Reduction::kNone) {
        EXPECT_TRUE(close(r32.loss, r64.loss, 1e-5, 1e-5));
      } else {
        EXPECT_TRUE(close(r32.loss, r64.loss, 1e-5, 1e-6));
      }
      EXPECT_TRUE(close(r32.prob, r64.prob, 1e-5, 1e-6));
      EXPECT_TRUE(close(r32.log_prob, r64.log_prob, 1e-5, 1e-5));
      EXPECT_TRUE(close(r32.grad_logits, r64.grad_logits, 1e-5, dx_tol(r64.grad_logits)));
    }
  }
  for (bool log_target : {false, true}) {
    KlDivOptions ko;
    ko.log_target = log_target;
    const Tensor t32 =
        log_target ? random_uniform(DType::kFloat32, shape, -4, 0, 95) : Tensor::copy_of(p32);
    const Tensor t64 = t32.to(DType::kFloat64);
    ko.reduction = Reduction::kNone;
    EXPECT_TRUE(close(kl_div(x32, t32, ko), kl_div(x64, t64, ko), 1e-5, 1e-5));
    ko.reduction = Reduction::kBatchMean;
    EXPECT_TRUE(close(kl_div(x32, t32, ko), kl_div(x64, t64, ko), 1e-5, 1e-6));
    const Tensor ref = kl_div_backward(x64, t64, scalar(DType::kFloat64, 1), ko);
    EXPECT_TRUE(
        close(kl_div_backward(x32, t32, scalar(DType::kFloat32, 1), ko), ref, 1e-5, dx_tol(ref)));
  }
  for (Coordinates coords : {Coordinates::kNormalized, Coordinates::kPixel}) {
    SpatialSoftArgmaxOptions so;
    so.coordinates = coords;
    so.want_softmax = true;
    const SpatialSoftArgmaxResult r32 = spatial_soft_argmax(x32, so);
    const SpatialSoftArgmaxResult r64 = spatial_soft_argmax(x64, so);
    const double kp_atol = coords == Coordinates::kNormalized ? 1e-5 : 1e-5 * 4;
    EXPECT_TRUE(close(r32.keypoints, r64.keypoints, 0, kp_atol));
    EXPECT_TRUE(close(r32.softmax, r64.softmax, 1e-5, 1e-6));
    const Tensor gk32 = random_uniform(DType::kFloat32, {2, 5, 2}, -1, 1, 96);
    const Tensor gk64 = gk32.to(DType::kFloat64);
    const Tensor ref = spatial_soft_argmax_backward(x64, {gk64.view(), {}, {}}, so).grad_input;
    EXPECT_TRUE(close(spatial_soft_argmax_backward(x32, {gk32.view(), {}, {}}, so).grad_input, ref,
                      1e-5, dx_tol(ref)));
  }
  // Caffe2 spatial op.
  const Tensor t32 = labels.to(DType::kInt32);
  const caffe2::LossOutputs c32 = caffe2::spatial_softmax_with_loss(x32, t32, a32);
  const caffe2::LossOutputs c64 = caffe2::spatial_softmax_with_loss(x64, t32, a64);
  EXPECT_TRUE(close(c32.prob, c64.prob, 1e-5, 1e-6));
  EXPECT_TRUE(close(c32.loss, c64.loss, 1e-5, 1e-6));
}

// --- presets ----------------------------------------------------------------------

TEST(Presets, HaveTheDocumentedFields) {
  const CrossEntropyOptions pt = CrossEntropyOptions::pytorch();
  EXPECT_EQ(pt.ignore_index, std::optional<std::int64_t>(-100));
  EXPECT_EQ(pt.reduction, Reduction::kMean);
  EXPECT_EQ(pt.label_smoothing, 0.0);
  EXPECT_EQ(pt.zero_weight_mean, ZeroWeightMean::kNaN);
  EXPECT_EQ(pt.prob_floor, 0.0);
  EXPECT_EQ(pt.zero_target_log, ZeroTargetLog::kIeee);
  EXPECT_EQ(pt.class_axis, ClassAxis::kFirst);
  EXPECT_FALSE(pt.class_weight.has_value());
  EXPECT_FALSE(pt.pixel_weight.has_value());

  const CrossEntropyOptions onnx = CrossEntropyOptions::onnx();
  EXPECT_FALSE(onnx.ignore_index.has_value());
  EXPECT_EQ(onnx.reduction, Reduction::kMean);
  EXPECT_EQ(onnx.zero_weight_mean, ZeroWeightMean::kNaN);
  EXPECT_EQ(onnx.prob_floor, 0.0);
  EXPECT_EQ(onnx.label_smoothing, 0.0);
  EXPECT_FALSE(onnx.class_weight.has_value());

  const CrossEntropyOptions c2 = CrossEntropyOptions::caffe2_spatial();
  EXPECT_EQ(c2.ignore_index, std::optional<std::int64_t>(-1));
  EXPECT_EQ(c2.prob_floor, 1e-20);
  EXPECT_EQ(c2.zero_weight_mean, ZeroWeightMean::kZero);
  EXPECT_EQ(c2.reduction, Reduction::kMean);
  EXPECT_EQ(c2.label_smoothing, 0.0);
  EXPECT_FALSE(c2.class_weight.has_value());
  EXPECT_FALSE(c2.pixel_weight.has_value());
}

TEST(Presets, PytorchPresetAcceptsProbabilityTargets) {
  // semantics 3.3: the pytorch preset drops its -100 for probability targets.
  const Tensor x = random_uniform(DType::kFloat64, {2, 3, 4}, -2, 2, 100);
  const Tensor t = random_probabilities(DType::kFloat64, {2, 3, 4}, 101);
  double loss = kNaN;
  EXPECT_NO_THROW(loss = cross_entropy(x, t, CrossEntropyOptions::pytorch()).loss.at(0));
  EXPECT_NEAR(loss, cross_entropy(x, t, CrossEntropyOptions::onnx()).loss.at(0), 1e-14);
}

TEST(Presets, Caffe2SpatialPresetMatchesTheOperator) {
  // semantics 3.2: with the caffe2_spatial preset and pixel weights,
  // cross_entropy is SpatialSoftmaxWithLoss (CPU variant) exactly.
  const Tensor x = random_uniform(DType::kFloat64, {2, 4, 3, 3}, -3, 3, 102);
  Tensor labels = random_labels(DType::kInt32, {2, 3, 3}, 4, 103);
  set_element(labels, 2, -1);
  set_element(labels, 11, -1);
  const Tensor a = random_uniform(DType::kFloat64, {2, 3, 3}, 0, 2, 104);
  CrossEntropyOptions o = CrossEntropyOptions::caffe2_spatial();
  o.pixel_weight = a.view();
  o.want_prob = true;
  const CrossEntropyResult r = cross_entropy(x, labels, o);
  const caffe2::LossOutputs c = caffe2::spatial_softmax_with_loss(x, labels, a);
  EXPECT_NEAR(r.loss.at(0), c.loss.at(0), 1e-13 * std::abs(c.loss.at(0)));
  EXPECT_TRUE(close(r.prob, c.prob, 1e-14, 1e-15));
}

// --- Caffe2 operators ------------------------------------------------------------------

// Independent float64 oracle of SpatialSoftmaxWithLoss (CPU) per semantics 2.1.
double caffe2_spatial_oracle(const Tensor& x, const Tensor& labels, const Tensor* weight) {
  const Shape& s = x.shape();
  const std::int64_t pixels = s[2] * s[3];
  double total = 0, weight_sum = 0;
  for (std::int64_t n = 0; n < s[0]; ++n) {
    for (std::int64_t p = 0; p < pixels; ++p) {
      const auto y = static_cast<std::int64_t>(labels.at(n * pixels + p));
      if (y == -1) continue;
      const std::vector<double> v = column(x, n, p);
      const double m = std::max(-1e20, *std::max_element(v.begin(), v.end()));
      double sum = 0;
      for (double e : v) sum += std::exp(e - m);
      const double prob = std::exp(v[static_cast<std::size_t>(y)] - m) / sum;
      const double w = weight ? weight->at(n * pixels + p) : 1.0;
      total += w * -std::log(std::max(prob, 1e-20));
      weight_sum += w;
    }
  }
  return weight_sum != 0 ? total / weight_sum : 0.0;
}

TEST(Caffe2Spatial, MatchesTheScalarOracle) {
  const Tensor x = random_uniform(DType::kFloat64, {2, 3, 4, 5}, -4, 4, 110);
  Tensor labels = random_labels(DType::kInt32, {2, 4, 5}, 3, 111);
  for (std::int64_t i = 0; i < 40; i += 7) set_element(labels, i, -1);
  // One pixel whose label's probability is below the 1e-20 floor.
  set_element(labels, 1, 0);
  Tensor xf = Tensor::copy_of(x);
  set_element(xf, at_first(x.shape(), 0, 0, 1), -80);
  set_element(xf, at_first(x.shape(), 0, 1, 1), 0);
  const Tensor w = random_uniform(DType::kFloat64, {2, 4, 5}, 0, 2, 112);
  for (const Tensor* weight : {static_cast<const Tensor*>(nullptr), &w}) {
    std::optional<TensorView> wv;
    if (weight) wv = weight->view();
    const double got = caffe2::spatial_softmax_with_loss(xf, labels, wv).loss.at(0);
    const double want = caffe2_spatial_oracle(xf, labels, weight);
    EXPECT_NEAR(got, want, 1e-12 * want);
    // float32 within the reduced-loss tolerance.
    const Tensor x32 = xf.to(DType::kFloat32);
    std::optional<Tensor> w32;
    std::optional<TensorView> w32v;
    if (weight) {
      w32 = weight->to(DType::kFloat32);
      w32v = w32->view();
    }
    const Tensor x32_64 = x32.to(DType::kFloat64);
    const Tensor w32_64 = weight ? w32->to(DType::kFloat64) : Tensor();
    const double want32 = caffe2_spatial_oracle(x32_64, labels, weight ? &w32_64 : nullptr);
    EXPECT_NEAR(caffe2::spatial_softmax_with_loss(x32, labels, w32v).loss.at(0), want32,
                1e-6 + 1e-5 * want32);
  }
}

TEST(Caffe2Spatial, FloorCapsAPixelsLossAt46) {
  // P_y = e^-100 / (1 + e^-100) < 1e-20, so l = -ln(1e-20) = 46.0517.
  for (DType dtype : kFloatTypes) {
    const Tensor x = values(dtype, {1, 2, 1, 1}, {0, -100});
    const Tensor t = values(DType::kInt32, {1, 1, 1}, {1});
    EXPECT_NEAR(caffe2::spatial_softmax_with_loss(x, t, std::nullopt).loss.at(0), -std::log(1e-20),
                1e-5);
  }
}

TEST(Caffe2Spatial, SingleClassAllIgnoredAndZeroWeights) {
  const Tensor d_loss = scalar(DType::kFloat32, 1);
  // D = 1: P = 1, loss 0, dX 0.
  {
    const Tensor x = random_uniform(DType::kFloat32, {2, 1, 2, 3}, -3, 3, 120);
    const Tensor t = filled(DType::kInt32, {2, 2, 3}, 0);
    const caffe2::LossOutputs out = caffe2::spatial_softmax_with_loss(x, t, std::nullopt);
    EXPECT_TRUE(close(out.prob, filled(DType::kFloat64, {2, 1, 2, 3}, 1), 0, 0));
    EXPECT_EQ(out.loss.at(0), 0.0);
    EXPECT_EQ(
        max_abs(caffe2::spatial_softmax_with_loss_gradient(x, t, std::nullopt, out.prob, d_loss)),
        0.0);
  }
  const Tensor x = random_uniform(DType::kFloat32, {2, 3, 2, 2}, -3, 3, 121);
  const Tensor labels = random_labels(DType::kInt32, {2, 2, 2}, 3, 122);
  const Tensor ignored = filled(DType::kInt32, {2, 2, 2}, -1);
  const Tensor zeros = filled(DType::kFloat32, {2, 2, 2}, 0);
  for (caffe2::Variant variant : {caffe2::Variant::kCpu, caffe2::Variant::kCuda}) {
    caffe2::SpatialSoftmaxWithLossArgs args;
    args.variant = variant;
    args.scale = 3;
    // All ignored.
    caffe2::LossOutputs out = caffe2::spatial_softmax_with_loss(x, ignored, std::nullopt, args);
    EXPECT_EQ(out.loss.at(0), 0.0);
    EXPECT_EQ(max_abs(caffe2::spatial_softmax_with_loss_gradient(x, ignored, std::nullopt, out.prob,
                                                                 d_loss, args)),
              0.0);
    // All weights 0.
    out = caffe2::spatial_softmax_with_loss(x, labels, zeros, args);
    EXPECT_EQ(out.loss.at(0), 0.0);
    EXPECT_EQ(max_abs(caffe2::spatial_softmax_with_loss_gradient(x, labels, zeros, out.prob, d_loss,
                                                                 args)),
              0.0);
  }
  // N = 0: P empty, loss 0.
  const caffe2::LossOutputs empty = caffe2::spatial_softmax_with_loss(
      Tensor(DType::kFloat32, {0, 3, 2, 2}), Tensor(DType::kInt32, {0, 2, 2}), std::nullopt);
  EXPECT_EQ(empty.prob.shape(), (Shape{0, 3, 2, 2}));
  EXPECT_EQ(empty.loss.rank(), 0);
  EXPECT_EQ(empty.loss.at(0), 0.0);
}

TEST(Caffe2Spatial, CudaVariantAppliesScaleAndReturnsTheRawSumForZeroWeight) {
  const Tensor x = random_uniform(DType::kFloat64, {2, 3, 2, 2}, -3, 3, 130);
  Tensor labels = random_labels(DType::kInt32, {2, 2, 2}, 3, 131);
  set_element(labels, 0, -1);
  const Tensor w = random_uniform(DType::kFloat64, {2, 2, 2}, 0.1, 2, 132);
  caffe2::SpatialSoftmaxWithLossArgs cpu, cuda;
  cpu.scale = cuda.scale = 2.5f;
  cuda.variant = caffe2::Variant::kCuda;
  const double loss_cpu = caffe2::spatial_softmax_with_loss(x, labels, w, cpu).loss.at(0);
  const double loss_cuda = caffe2::spatial_softmax_with_loss(x, labels, w, cuda).loss.at(0);
  EXPECT_NEAR(loss_cpu, caffe2_spatial_oracle(x, labels, &w), 1e-12 * loss_cpu);  // unscaled
  EXPECT_NEAR(loss_cuda, 2.5 * loss_cpu, 1e-12 * loss_cuda);
  // The gradient is the same for both variants when Wt > 0.
  const Tensor d_loss = scalar(DType::kFloat64, 0.5);
  const Tensor p = caffe2::spatial_softmax_with_loss(x, labels, w, cpu).prob;
  EXPECT_TRUE(bitwise(caffe2::spatial_softmax_with_loss_gradient(x, labels, w, p, d_loss, cuda),
                      caffe2::spatial_softmax_with_loss_gradient(x, labels, w, p, d_loss, cpu)));

  // Wt = 0 with a NaN logit on a zero-weight, non-ignored pixel: the CPU
  // returns 0, CUDA the raw sum 0 * NaN = NaN (the NaN is not floored away:
  // semantics 2.4 item 4 is fixed in both variants).
  Tensor xn = Tensor::copy_of(x);
  set_element(xn, at_first(x.shape(), 0, 1, 2), kNaN);
  const Tensor zeros = filled(DType::kFloat64, {2, 2, 2}, 0);
  EXPECT_EQ(caffe2::spatial_softmax_with_loss(xn, labels, zeros, cpu).loss.at(0), 0.0);
  EXPECT_TRUE(std::isnan(caffe2::spatial_softmax_with_loss(xn, labels, zeros, cuda).loss.at(0)));
}

TEST(Caffe2Spatial, NaNPixelPoisonsTheLossUnlessIgnored) {
  const Tensor x0 = random_uniform(DType::kFloat32, {1, 3, 2, 2}, -3, 3, 135);
  Tensor x = Tensor::copy_of(x0);
  set_element(x, at_first(x.shape(), 0, 2, 3), kNaN);
  Tensor labels = values(DType::kInt32, {1, 2, 2}, {0, 1, 2, 1});
  const caffe2::LossOutputs out = caffe2::spatial_softmax_with_loss(x, labels, std::nullopt);
  EXPECT_TRUE(std::isnan(out.loss.at(0)));
  for (double v : column(out.prob, 0, 3)) EXPECT_TRUE(std::isnan(v));
  for (double v : column(out.prob, 0, 0)) EXPECT_TRUE(std::isfinite(v));
  set_element(labels, 3, -1);
  const double ignored = caffe2::spatial_softmax_with_loss(x, labels, std::nullopt).loss.at(0);
  EXPECT_TRUE(std::isfinite(ignored));
  EXPECT_EQ(ignored, caffe2::spatial_softmax_with_loss(x0, labels, std::nullopt).loss.at(0));
}

TEST(Caffe2Spatial, GradientComesFromTheSuppliedProbabilities) {
  const Shape shape{2, 3, 2, 2};
  const Tensor x1 = random_uniform(DType::kFloat32, shape, -3, 3, 140);
  const Tensor x2 = random_uniform(DType::kFloat32, shape, -3, 3, 141);
  const Tensor p = random_probabilities(DType::kFloat32, shape, 142);
  Tensor labels = random_labels(DType::kInt32, {2, 2, 2}, 3, 143);
  set_element(labels, 5, -1);
  const Tensor w = random_uniform(DType::kFloat32, {2, 2, 2}, 0.1, 2, 144);
  const Tensor d_loss = values(DType::kFloat32, {3}, {0.5, 99, 99});  // first element used
  caffe2::SpatialSoftmaxWithLossArgs args;
  args.scale = 2;
  const Tensor g1 = caffe2::spatial_softmax_with_loss_gradient(x1, labels, w, p, d_loss, args);
  const Tensor g2 = caffe2::spatial_softmax_with_loss_gradient(x2, labels, w, p, d_loss, args);
  EXPECT_TRUE(bitwise(g1, g2));
  // dX = (P - onehot) * w * scale / Wt * d_loss, 0 on ignored pixels.
  double wt = 0;
  for (std::int64_t i = 0; i < 8; ++i) {
    if (labels.at(i) != -1) wt += w.at(i);
  }
  Tensor want(DType::kFloat64, shape);
  for (std::int64_t n = 0; n < 2; ++n) {
    for (std::int64_t q = 0; q < 4; ++q) {
      const double y = labels.at(n * 4 + q);
      for (std::int64_t c = 0; c < 3; ++c) {
        const std::int64_t o = at_first(shape, n, c, q);
        want.data_as<double>()[o] = y == -1 ? 0.0
                                            : (p.at(o) - (static_cast<double>(c) == y ? 1 : 0)) *
                                                  w.at(n * 4 + q) * 2 / wt * 0.5;
      }
    }
  }
  EXPECT_TRUE(close(g1, want, 1e-5, 1e-6 * max_abs(want)));
}

TEST(Caffe2Softmax, SoftmaxRunsOverAllOfCHWAndScaleApplies) {
  const Tensor x = random_uniform(DType::kFloat64, {2, 3, 2, 2}, -3, 3, 150);
  const Tensor t = values(DType::kInt32, {2}, {5, 11});
  caffe2::SoftmaxWithLossArgs args;
  args.scale = 2;
  const caffe2::LossOutputs out = caffe2::softmax_with_loss(x, t, std::nullopt, args);
  EXPECT_EQ(out.prob.shape(), x.shape());
  double want = 0;
  for (std::int64_t n = 0; n < 2; ++n) {
    double sum = 0, m = -kInf;
    for (std::int64_t j = 0; j < 12; ++j) m = std::max(m, x.at(n * 12 + j));
    for (std::int64_t j = 0; j < 12; ++j) sum += std::exp(x.at(n * 12 + j) - m);
    double psum = 0;
    for (std::int64_t j = 0; j < 12; ++j) psum += out.prob.at(n * 12 + j);
    EXPECT_NEAR(psum, 1.0, 1e-14);  // one softmax over C*H*W
    want += -(x.at(n * 12 + static_cast<std::int64_t>(t.at(n))) - m - std::log(sum));
  }
  EXPECT_NEAR(out.loss.at(0), 2 * want / 2, 1e-12 * want);
}

TEST(Caffe2Softmax, AverageByBatchSizeIsCpuOnly) {
  // semantics 2.5: with average_by_batch_size the CPU divides by N instead of the
  // total row weight; CUDA ignores the argument. The gradient follows.
  const Tensor x = random_uniform(DType::kFloat64, {4, 5}, -3, 3, 155);
  const Tensor t = values(DType::kInt32, {4}, {0, 3, 4, 1});
  const Tensor w = values(DType::kFloat64, {4}, {0.5, 1.5, 2.0, 0.25});
  const Tensor d_loss = scalar(DType::kFloat64, 0.7);
  caffe2::SoftmaxWithLossArgs plain, by_batch, cuda;
  by_batch.average_by_batch_size = 1;
  cuda.average_by_batch_size = 1;
  cuda.variant = caffe2::Variant::kCuda;
  const double wt = 4.25, n = 4;
  const caffe2::LossOutputs base = caffe2::softmax_with_loss(x, t, w, plain);
  const double weighted_sum = base.loss.at(0) * wt;
  EXPECT_NEAR(caffe2::softmax_with_loss(x, t, w, by_batch).loss.at(0), weighted_sum / n,
              1e-12 * weighted_sum);
  EXPECT_NEAR(caffe2::softmax_with_loss(x, t, w, cuda).loss.at(0), base.loss.at(0),
              1e-12 * weighted_sum);
  const Tensor g_plain = caffe2::softmax_with_loss_gradient(x, t, w, base.prob, d_loss, plain);
  const Tensor g_batch = caffe2::softmax_with_loss_gradient(x, t, w, base.prob, d_loss, by_batch);
  const Tensor g_cuda = caffe2::softmax_with_loss_gradient(x, t, w, base.prob, d_loss, cuda);
  Tensor want = Tensor::copy_of(g_plain);
  for (std::int64_t i = 0; i < want.numel(); ++i) want.data_as<double>()[i] *= wt / n;
  EXPECT_TRUE(close(g_batch, want, 1e-12, 0));
  EXPECT_TRUE(close(g_cuda, g_plain, 1e-14, 0));
  EXPECT_GT(max_abs(g_plain), 0.0);
}

TEST(CrossEntropy, ProbFloorCapsTheLossButNotTheGradient) {
  // semantics 3.1/3.4: -log(max(p_y, f)) from p; the gradient stays p - onehot.
  const Tensor x = values(DType::kFloat64, {2, 2}, {0, -30, 0, -1});  // class-last
  const Tensor labels = values(DType::kInt64, {2}, {1, 1});
  CrossEntropyOptions o;
  o.class_axis = ClassAxis::kLast;
  o.reduction = Reduction::kNone;
  o.prob_floor = 1e-3;
  const CrossEntropyResult r = cross_entropy_forward_backward(x, labels, o);
  EXPECT_NEAR(r.loss.at(0), -std::log(1e-3), 1e-12);
  EXPECT_NEAR(r.loss.at(1), std::log(1 + std::exp(1.0)), 1e-12);  // above the floor
  o.prob_floor = 0;
  const CrossEntropyResult plain = cross_entropy_forward_backward(x, labels, o);
  EXPECT_NEAR(plain.loss.at(0), 30 + std::log1p(std::exp(-30.0)), 1e-12);
  EXPECT_TRUE(bitwise(r.grad_logits, plain.grad_logits));
}

TEST(CrossEntropy, ZeroTargetLogRule) {
  // A zero target on a class with logp = -inf: NaN in "ieee" mode, 0 in
  // "zero" mode (semantics 3.3).
  const Tensor x = values(DType::kFloat64, {1, 3}, {-kInf, 0, 1});
  const Tensor t = values(DType::kFloat64, {1, 3}, {0, 0.25, 0.75});
  CrossEntropyOptions o;
  o.class_axis = ClassAxis::kLast;
  o.reduction = Reduction::kNone;
  EXPECT_TRUE(std::isnan(cross_entropy(x, t, o).loss.at(0)));
  o.zero_target_log = ZeroTargetLog::kZero;
  const double p1 = 1 / (1 + std::exp(1.0));
  const double want = -(0.25 * std::log(p1) + 0.75 * std::log(1 - p1));
  EXPECT_NEAR(cross_entropy(x, t, o).loss.at(0), want, 1e-12);
  // Entropy: the p = 0 term is 0, not 0 * -inf.
  EXPECT_NEAR(entropy(x, ClassAxis::kLast).at(0),
              -(p1 * std::log(p1) + (1 - p1) * std::log(1 - p1)), 1e-12);
}

TEST(Determinism, RepeatedCallsAreBitwiseIdentical) {
  // semantics 5: results are identical across runs; large enough for blocked
  // reductions to have several blocks.
  const Shape shape{4, 7, 33, 65};
  const Tensor x = random_uniform(DType::kFloat32, shape, -6, 6, 210);
  const Tensor labels = random_labels(DType::kInt32, {4, 33, 65}, 7, 211);
  const Tensor a = random_uniform(DType::kFloat32, {4, 33, 65}, 0, 2, 212);
  CrossEntropyOptions o;
  o.pixel_weight = a.view();
  o.label_smoothing = 0.05;
  const CrossEntropyResult r1 = cross_entropy_forward_backward(x, labels, o);
  const CrossEntropyResult r2 = cross_entropy_forward_backward(x, labels, o);
  EXPECT_TRUE(bitwise(r1.loss, r2.loss));
  EXPECT_TRUE(bitwise(r1.grad_logits, r2.grad_logits));
  const SpatialSoftArgmaxResult s1 = spatial_soft_argmax(x), s2 = spatial_soft_argmax(x);
  EXPECT_TRUE(bitwise(s1.keypoints, s2.keypoints));
}

// --- spatial soft-argmax edge cases -----------------------------------------------------

TEST(SpatialSoftArgmax, SinglePixelGivesUnitSoftmaxAndZeroGradient) {
  const Tensor x = random_uniform(DType::kFloat64, {2, 3, 1, 1}, -5, 5, 160);
  for (SingletonCoordinate sc : {SingletonCoordinate::kCenter, SingletonCoordinate::kMinusOne}) {
    for (Coordinates coords : {Coordinates::kNormalized, Coordinates::kPixel}) {
      SpatialSoftArgmaxOptions so;
      so.singleton_coordinate = sc;
      so.coordinates = coords;
      so.want_softmax = so.want_covariance = true;
      const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, so);
      EXPECT_TRUE(close(r.softmax, filled(DType::kFloat64, x.shape(), 1), 0, 0));
      const double coord =
          coords == Coordinates::kPixel || sc == SingletonCoordinate::kCenter ? 0.0 : -1.0;
      EXPECT_TRUE(close(r.keypoints, filled(DType::kFloat64, {2, 3, 2}, coord), 0, 0));
      EXPECT_EQ(max_abs(r.covariance), 0.0);
      const Tensor gk = random_uniform(DType::kFloat64, {2, 3, 2}, -1, 1, 161);
      const Tensor gs = random_uniform(DType::kFloat64, x.shape(), -1, 1, 162);
      const Tensor gc = random_uniform(DType::kFloat64, {2, 3, 2, 2}, -1, 1, 163);
      const SpatialSoftArgmaxBackward b =
          spatial_soft_argmax_backward(x, {gk.view(), gs.view(), gc.view()}, so);
      EXPECT_EQ(max_abs(b.grad_input), 0.0);
      EXPECT_EQ(b.grad_temperature, 0.0);
    }
  }
}

TEST(SpatialSoftArgmax, SingletonAxisCoordinate) {
  // (1, 1, H=1, W=5), mass on w = 4: x = 1 (normalised), y is the singleton.
  Tensor x = filled(DType::kFloat64, {1, 1, 1, 5}, 0);
  set_element(x, 4, 60);
  SpatialSoftArgmaxOptions so;
  so.singleton_coordinate = SingletonCoordinate::kCenter;
  Tensor kp = spatial_soft_argmax(x, so).keypoints;
  EXPECT_NEAR(kp.at(0), 1.0, 1e-12);
  EXPECT_EQ(kp.at(1), 0.0);
  so.singleton_coordinate = SingletonCoordinate::kMinusOne;
  kp = spatial_soft_argmax(x, so).keypoints;
  EXPECT_NEAR(kp.at(0), 1.0, 1e-12);
  EXPECT_EQ(kp.at(1), -1.0);
  so.coordinates = Coordinates::kPixel;
  kp = spatial_soft_argmax(x, so).keypoints;
  EXPECT_NEAR(kp.at(0), 4.0, 1e-12);
  EXPECT_EQ(kp.at(1), 0.0);
}

TEST(SpatialSoftArgmax, OneHotInputLandsOnThatPixel) {
  // 2-D: channel 0 hot at (h=2, w=3), channel 1 at (h=0, w=4) of a 4x5 map.
  Tensor x = random_uniform(DType::kFloat64, {1, 2, 4, 5}, -1, 1, 170);
  set_element(x, 0 * 20 + 2 * 5 + 3, 40);
  set_element(x, 1 * 20 + 0 * 5 + 4, 40);
  const Tensor kp = spatial_soft_argmax(x).keypoints;
  // Fastest axis first: (x = width coordinate, y = height coordinate).
  EXPECT_TRUE(close(kp, values(DType::kFloat64, {1, 2, 2}, {0.5, 1.0 / 3.0, 1, -1}), 0, 1e-12));
  SpatialSoftArgmaxOptions pixel;
  pixel.coordinates = Coordinates::kPixel;
  EXPECT_TRUE(close(spatial_soft_argmax(x, pixel).keypoints,
                    values(DType::kFloat64, {1, 2, 2}, {3, 2, 4, 0}), 0, 1e-11));
  // A sharper temperature concentrates mass: multiply by 2 equals divide by
  // 0.5.
  SpatialSoftArgmaxOptions mul, div;
  mul.temperature_mode = TemperatureMode::kMultiply;
  mul.temperature = 2;
  div.temperature = 0.5;
  const Tensor soft = random_uniform(DType::kFloat64, {1, 2, 4, 5}, -1, 1, 171);
  EXPECT_TRUE(close(spatial_soft_argmax(soft, mul).keypoints,
                    spatial_soft_argmax(soft, div).keypoints, 1e-14, 1e-15));
  // 3-D (D=2, H=3, W=4), hot at (d=1, h=2, w=0): (x, y, z) = (-1, 1, 1).
  Tensor x3 = filled(DType::kFloat64, {1, 1, 2, 3, 4}, 0);
  set_element(x3, 1 * 12 + 2 * 4 + 0, 50);
  EXPECT_TRUE(close(spatial_soft_argmax(x3).keypoints,
                    values(DType::kFloat64, {1, 1, 3}, {-1, 1, 1}), 0, 1e-12));
  EXPECT_TRUE(close(spatial_soft_argmax(x3, pixel).keypoints,
                    values(DType::kFloat64, {1, 1, 3}, {0, 2, 1}), 0, 1e-11));
}

TEST(SpatialSoftArgmax, MatchesTheScalarOracle) {
  // S_p = softmax_p(x / T), E_a = sum_p S_p u_a(p), cov = E[u u^T] - E E^T.
  const Shape shape{2, 3, 4, 5};
  const Tensor x = random_uniform(DType::kFloat64, shape, -3, 3, 180);
  for (Coordinates coords : {Coordinates::kNormalized, Coordinates::kPixel}) {
    SpatialSoftArgmaxOptions so;
    so.temperature = 0.6;
    so.coordinates = coords;
    so.want_softmax = so.want_covariance = true;
    const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, so);
    Tensor s_want(DType::kFloat64, shape), kp_want(DType::kFloat64, {2, 3, 2}),
        cov_want(DType::kFloat64, {2, 3, 2, 2});
    auto coord = [&](std::int64_t j, std::int64_t len) {
      return coords == Coordinates::kPixel
                 ? static_cast<double>(j)
                 : -1 + 2.0 * static_cast<double>(j) / static_cast<double>(len - 1);
    };
    for (std::int64_t nc = 0; nc < 6; ++nc) {
      double m = -kInf, sum = 0;
      for (std::int64_t p = 0; p < 20; ++p) m = std::max(m, x.at(nc * 20 + p));
      for (std::int64_t p = 0; p < 20; ++p) sum += std::exp((x.at(nc * 20 + p) - m) / 0.6);
      double e[2] = {0, 0}, uu[2][2] = {{0, 0}, {0, 0}};
      for (std::int64_t p = 0; p < 20; ++p) {
        const double s = std::exp((x.at(nc * 20 + p) - m) / 0.6) / sum;
        s_want.data_as<double>()[nc * 20 + p] = s;
        const double u[2] = {coord(p % 5, 5), coord(p / 5, 4)};  // (w, h)
        for (int a = 0; a < 2; ++a) {
          e[a] += s * u[a];
          for (int b = 0; b < 2; ++b) uu[a][b] += s * u[a] * u[b];
        }
      }
      for (int a = 0; a < 2; ++a) {
        kp_want.data_as<double>()[nc * 2 + a] = e[a];
        for (int b = 0; b < 2; ++b) {
          cov_want.data_as<double>()[nc * 4 + a * 2 + b] = uu[a][b] - e[a] * e[b];
        }
      }
    }
    EXPECT_TRUE(close(r.softmax, s_want, 1e-12, 1e-15));
    EXPECT_TRUE(close(r.keypoints, kp_want, 1e-12, 1e-12));
    EXPECT_TRUE(close(r.covariance, cov_want, 1e-10, 1e-12));
  }
}

// --- scalar oracle for the loss family ------------------------------------------------

// Per-position cross-entropy straight from semantics 3.2-3.4, class axis first,
// float64, for index targets (probs == nullptr) or probability targets.
struct CeOracle {
  std::vector<double> loss;  // l_i
  double sum = 0;
  double denominator = 0;
  std::vector<double> grad_mean;  // dX of the mean loss for upstream G
};

CeOracle ce_oracle(const Tensor& x, const Tensor* labels, const Tensor* probs, const Tensor* w,
                   const Tensor* a, std::optional<std::int64_t> ignore, double eps, double g) {
  const Shape& s = x.shape();
  const std::int64_t n_batch = s[0], classes = s[1], pixels = product(s, 2, s.size());
  const auto cd = static_cast<double>(classes);
  CeOracle out;
  out.grad_mean.assign(static_cast<std::size_t>(x.numel()), 0);
  std::vector<std::vector<double>> saved_p(static_cast<std::size_t>(n_batch * pixels));
  auto wc = [&](std::int64_t c) { return w ? w->at(c) : 1.0; };
  std::vector<double> coef(static_cast<std::size_t>(n_batch * pixels), 0);
  for (std::int64_t n = 0; n < n_batch; ++n) {
    for (std::int64_t p = 0; p < pixels; ++p) {
      const std::int64_t i = n * pixels + p;
      const std::vector<double> v = column(x, n, p);
      const double m = *std::max_element(v.begin(), v.end());
      double sum = 0;
      for (double e : v) sum += std::exp(e - m);
      std::vector<double> logp(v.size()), prob(v.size());
      for (std::size_t c = 0; c < v.size(); ++c) {
        logp[c] = v[c] - m - std::log(sum);
        prob[c] = std::exp(logp[c]);
      }
      const double ai = a ? a->at(i) : 1.0;
      double l = 0;
      if (probs) {
        for (std::int64_t c = 0; c < classes; ++c) {
          const double t = (1 - eps) * probs->at(at_first(s, n, c, p)) + eps / cd;
          l += wc(c) * t * -logp[static_cast<std::size_t>(c)];
        }
        l *= ai;
        out.denominator += ai;
      } else {
        const auto y = static_cast<std::int64_t>(labels->at(i));
        if (!(ignore && y == *ignore)) {
          double smooth = 0;
          for (std::int64_t c = 0; c < classes; ++c) {
            smooth += wc(c) * -logp[static_cast<std::size_t>(c)];
          }
          l = ai * ((1 - eps) * wc(y) * -logp[static_cast<std::size_t>(y)] + eps / cd * smooth);
          out.denominator += ai * wc(y);
        }
      }
      out.loss.push_back(l);
      out.sum += l;
      saved_p[static_cast<std::size_t>(i)] = prob;
    }
  }
  const double r = out.denominator > 0 ? g / out.denominator : 0;
  for (std::int64_t n = 0; n < n_batch; ++n) {
    for (std::int64_t p = 0; p < pixels; ++p) {
      const std::int64_t i = n * pixels + p;
      const std::vector<double>& prob = saved_p[static_cast<std::size_t>(i)];
      const double ai = a ? a->at(i) : 1.0;
      double wsum = 0, wt = 0;
      for (std::int64_t c = 0; c < classes; ++c) wsum += wc(c);
      if (probs) {
        for (std::int64_t c = 0; c < classes; ++c) {
          wt += wc(c) * ((1 - eps) * probs->at(at_first(s, n, c, p)) + eps / cd);
        }
      }
      const auto y = probs ? -1 : static_cast<std::int64_t>(labels->at(i));
      if (!probs && ignore && y == *ignore) continue;
      for (std::int64_t c = 0; c < classes; ++c) {
        const double pc = prob[static_cast<std::size_t>(c)];
        double d;
        if (probs) {
          const double t = (1 - eps) * probs->at(at_first(s, n, c, p)) + eps / cd;
          d = pc * wt - wc(c) * t;
        } else {
          d = (1 - eps) * wc(y) * (pc - (c == y ? 1 : 0)) + eps / cd * (pc * wsum - wc(c));
        }
        out.grad_mean[static_cast<std::size_t>(at_first(s, n, c, p))] = r * ai * d;
      }
    }
  }
  return out;
}

TEST(Oracle, CrossEntropyIndexTargetsWithWeightsIgnoreAndSmoothing) {
  const Shape shape{2, 3, 4, 5};
  const Tensor x = random_uniform(DType::kFloat64, shape, -4, 4, 190);
  Tensor labels = random_labels(DType::kInt64, {2, 4, 5}, 3, 191);
  for (std::int64_t i = 3; i < 40; i += 6) set_element(labels, i, -1);
  const Tensor w = values(DType::kFloat64, {3}, {0.5, 1.0, 2.0});
  const Tensor a = random_uniform(DType::kFloat64, {2, 4, 5}, 0, 2, 192);
  for (double eps : {0.0, 0.1, 1.0}) {
    SCOPED_TRACE("eps " + std::to_string(eps));
    const CeOracle want = ce_oracle(x, &labels, nullptr, &w, &a, -1, eps, 0.7);
    CrossEntropyOptions o;
    o.class_weight = w.view();
    o.pixel_weight = a.view();
    o.ignore_index = -1;
    o.label_smoothing = eps;
    o.reduction = Reduction::kNone;
    EXPECT_TRUE(close(cross_entropy(x, labels, o).loss,
                      values(DType::kFloat64, {2, 4, 5}, want.loss), 1e-12, 1e-14));
    o.reduction = Reduction::kSum;
    EXPECT_NEAR(cross_entropy(x, labels, o).loss.at(0), want.sum, 1e-12 * want.sum);
    o.reduction = Reduction::kMean;
    EXPECT_NEAR(cross_entropy(x, labels, o).loss.at(0), want.sum / want.denominator,
                1e-12 * want.sum / want.denominator);
    const Tensor g = scalar(DType::kFloat64, 0.7);
    CrossEntropyGrads grads;
    grads.loss = g.view();
    const Tensor dx = cross_entropy_backward(x, labels, grads, o);
    const Tensor dx_want = values(DType::kFloat64, shape, want.grad_mean);
    EXPECT_TRUE(close(dx, dx_want, 1e-12, 1e-12 * max_abs(dx_want)));
  }
}

TEST(Oracle, CrossEntropyFloat32AgainstTheFloat64Oracle) {
  const Shape shape{2, 3, 4, 5};
  const Tensor x32 = random_uniform(DType::kFloat32, shape, -4, 4, 193);
  const Tensor a32 = random_uniform(DType::kFloat32, {2, 4, 5}, 0, 2, 194);
  const Tensor w32 = values(DType::kFloat32, {3}, {0.5, 1.0, 2.0});
  const Tensor x = x32.to(DType::kFloat64), a = a32.to(DType::kFloat64),
               w = w32.to(DType::kFloat64);
  Tensor labels = random_labels(DType::kInt32, {2, 4, 5}, 3, 195);
  for (std::int64_t i = 1; i < 40; i += 9) set_element(labels, i, 7);  // ignore_index >= C
  const CeOracle want = ce_oracle(x, &labels, nullptr, &w, &a, 7, 0.1, 1.0);
  CrossEntropyOptions o;
  o.class_weight = w32.view();
  o.pixel_weight = a32.view();
  o.ignore_index = 7;
  o.label_smoothing = 0.1;
  o.reduction = Reduction::kNone;
  EXPECT_TRUE(close(cross_entropy(x32, labels, o).loss,
                    values(DType::kFloat64, {2, 4, 5}, want.loss), 1e-5, 1e-5));
  o.reduction = Reduction::kMean;
  const CrossEntropyResult r = cross_entropy_forward_backward(x32, labels, o);
  EXPECT_NEAR(r.loss.at(0), want.sum / want.denominator, 1e-6 + 1e-5 * want.sum / want.denominator);
  const Tensor dx_want = values(DType::kFloat64, shape, want.grad_mean);
  EXPECT_TRUE(close(r.grad_logits, dx_want, 1e-5, 1e-6 * max_abs(dx_want)));
}

TEST(Oracle, CrossEntropyProbabilityTargets) {
  const Shape shape{2, 3, 4, 5};
  const Tensor x = random_uniform(DType::kFloat64, shape, -4, 4, 196);
  const Tensor t = random_probabilities(DType::kFloat64, shape, 197);
  const Tensor w = values(DType::kFloat64, {3}, {0.5, 1.0, 2.0});
  const Tensor a = random_uniform(DType::kFloat64, {2, 4, 5}, 0, 2, 198);
  for (double eps : {0.0, 0.1}) {
    for (bool weighted : {false, true}) {
      SCOPED_TRACE("eps " + std::to_string(eps) + (weighted ? " weighted" : ""));
      const CeOracle want = ce_oracle(x, nullptr, &t, weighted ? &w : nullptr,
                                      weighted ? &a : nullptr, std::nullopt, eps, 1.0);
      CrossEntropyOptions o;
      if (weighted) {
        o.class_weight = w.view();
        o.pixel_weight = a.view();
      }
      o.label_smoothing = eps;
      o.reduction = Reduction::kNone;
      EXPECT_TRUE(close(cross_entropy(x, t, o).loss, values(DType::kFloat64, {2, 4, 5}, want.loss),
                        1e-12, 1e-14));
      o.reduction = Reduction::kMean;
      const CrossEntropyResult r = cross_entropy_forward_backward(x, t, o);
      // The mean divides by sum a_i (40 without pixel weights), never by
      // class weights.
      EXPECT_NEAR(r.loss.at(0), want.sum / want.denominator, 1e-12 * want.sum / want.denominator);
      if (!weighted) {
        EXPECT_EQ(want.denominator, 40.0);
      }
      const Tensor dx_want = values(DType::kFloat64, shape, want.grad_mean);
      EXPECT_TRUE(close(r.grad_logits, dx_want, 1e-12, 1e-12 * max_abs(dx_want)));
    }
  }
}

TEST(Oracle, EntropyNllAndKlDiv) {
  const Shape shape{2, 3, 4, 5};
  const Tensor x = random_uniform(DType::kFloat64, shape, -4, 4, 200);
  Tensor t = random_probabilities(DType::kFloat64, shape, 201);
  set_element(t, 0, 0);  // a zero target contributes 0 (rows need not sum to 1)
  const Tensor lt = random_uniform(DType::kFloat64, shape, -3, 0, 202);
  const Tensor labels = random_labels(DType::kInt64, {2, 4, 5}, 3, 203);
  const Tensor w = values(DType::kFloat64, {3}, {0.5, 1.0, 2.0});
  const Tensor logp = log_softmax(x);
  std::vector<double> h, kl(static_cast<std::size_t>(x.numel())),
      klt(static_cast<std::size_t>(x.numel()));
  double nll_sum = 0, nll_den = 0;
  for (std::int64_t n = 0; n < 2; ++n) {
    for (std::int64_t p = 0; p < 20; ++p) {
      const std::vector<double> v = column(x, n, p);
      const double m = *std::max_element(v.begin(), v.end());
      double sum = 0;
      for (double e : v) sum += std::exp(e - m);
      double hi = 0;
      for (std::int64_t c = 0; c < 3; ++c) {
        const double lq = v[static_cast<std::size_t>(c)] - m - std::log(sum);
        hi -= std::exp(lq) * lq;
        const std::int64_t o = at_first(shape, n, c, p);
        const double tc = t.at(o);
        kl[static_cast<std::size_t>(o)] = tc == 0 ? 0 : tc * (std::log(tc) - lq);
        klt[static_cast<std::size_t>(o)] = std::exp(lt.at(o)) * (lt.at(o) - lq);
      }
      h.push_back(hi);
      const auto y = static_cast<std::int64_t>(labels.at(n * 20 + p));
      nll_sum += -w.at(y) * logp.at(at_first(shape, n, y, p));
      nll_den += w.at(y);
    }
  }
  EXPECT_TRUE(close(entropy(x), values(DType::kFloat64, {2, 4, 5}, h), 1e-12, 1e-14));
  CrossEntropyOptions o;
  o.class_weight = w.view();
  EXPECT_NEAR(nll_loss(logp, labels, o).at(0), nll_sum / nll_den, 1e-12);
  KlDivOptions ko;
  ko.reduction = Reduction::kNone;
  EXPECT_TRUE(close(kl_div(x, t, ko), values(DType::kFloat64, shape, kl), 1e-12, 1e-14));
  double kl_sum = 0;
  for (double v : kl) kl_sum += v;
  ko.reduction = Reduction::kSum;
  EXPECT_NEAR(kl_div(x, t, ko).at(0), kl_sum, 1e-12 * std::abs(kl_sum));
  ko.reduction = Reduction::kMean;  // divides by N*C*P
  EXPECT_NEAR(kl_div(x, t, ko).at(0), kl_sum / 120, 1e-12 * std::abs(kl_sum));
  ko.reduction = Reduction::kBatchMean;  // divides by N
  EXPECT_NEAR(kl_div(x, t, ko).at(0), kl_sum / 2, 1e-12 * std::abs(kl_sum));
  ko.log_target = true;
  ko.reduction = Reduction::kNone;
  EXPECT_TRUE(close(kl_div(x, lt, ko), values(DType::kFloat64, shape, klt), 1e-12, 1e-14));
  // A negative target gives NaN (semantics 3.5).
  Tensor neg = Tensor::copy_of(t);
  set_element(neg, 5, -0.1);
  ko.log_target = false;
  const Tensor out = kl_div(x, neg, ko);
  EXPECT_TRUE(std::isnan(out.at(5)));
  EXPECT_FALSE(std::isnan(out.at(6)));
}

}  // namespace
}  // namespace spatialsoftmax
