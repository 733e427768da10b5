// Finite-difference checks of every analytic gradient, in float64.
//
// Each check builds a scalar objective L = sum(upstream * outputs) over every
// output a function produces, so that every output's gradient path is
// exercised, and compares the library's backward against central differences
// of the library's own forward. Tensors are kept small (tens to a few hundred
// elements) so that the whole program runs in seconds under the sanitizers.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

using testing::all_close;
using testing::random_labels;
using testing::random_uniform;

constexpr double kStep = 1e-6;
constexpr double kRtol = 1e-6;
constexpr double kAtol = 1e-8;

// Value of an objective, and the sum of the magnitudes of its terms: the
// rounding error of a central difference grows with the latter (about
// eps * magnitude / h), so the absolute tolerance is scaled by it.
struct Objective {
  double value = 0;
  double magnitude = 0;
};

// Adds sum(weight * out) to `obj`; shapes must agree.
void add_dot(const Tensor& out, const Tensor& weight, Objective& obj) {
  ASSERT_TRUE(out.defined());
  ASSERT_EQ(out.shape(), weight.shape());
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    const double term = out.at(i) * weight.at(i);
    obj.value += term;
    obj.magnitude += std::abs(term);
  }
}

// Adds scale * out for a scalar output.
void add_scaled(const Tensor& out, double scale, Objective& obj) {
  ASSERT_TRUE(out.defined());
  ASSERT_EQ(out.numel(), 1);
  obj.value += scale * out.at(0);
  obj.magnitude += std::abs(scale * out.at(0));
}

using ObjectiveFn = std::function<Objective(const Tensor&)>;

// Compares `analytic` (x's shape) with central differences of `objective` at
// x. Returns a failure naming the first few bad elements.
::testing::AssertionResult gradient_matches(const Tensor& x, const ObjectiveFn& objective,
                                            const Tensor& analytic, double step = kStep) {
  if (analytic.shape() != x.shape() || analytic.dtype() != DType::kFloat64) {
    return ::testing::AssertionFailure()
           << "analytic gradient has shape " << shape_string(analytic.shape()) << ", expected "
           << shape_string(x.shape()) << " in float64";
  }
  const double magnitude = objective(x).magnitude;
  const double atol = kAtol + 16 * DBL_EPSILON * magnitude / step;
  Tensor probe = Tensor::copy_of(x);
  double* v = probe.data_as<double>();
  std::ostringstream bad;
  int failures = 0;
  double max_analytic = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    max_analytic = std::max(max_analytic, std::abs(analytic.at(i)));
  }
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double saved = v[i];
    v[i] = saved + step;
    const double plus = objective(probe).value;
    v[i] = saved - step;
    const double minus = objective(probe).value;
    v[i] = saved;
    const double numeric = (plus - minus) / (2 * step);
    const double got = analytic.at(i);
    if (!(std::abs(got - numeric) <= atol + kRtol * std::abs(numeric))) {
      if (++failures <= 5) {
        bad.precision(12);
        bad << "\n  element " << i << ": analytic " << got << ", numeric " << numeric;
      }
    }
  }
  // A gradient that is zero everywhere would pass trivially for a constant
  // objective; callers make sure the objective depends on x, and this guard
  // catches a backward that silently returns zeros.
  if (failures == 0 && max_analytic == 0) {
    return ::testing::AssertionFailure() << "analytic gradient is identically zero";
  }
  if (failures) {
    return ::testing::AssertionFailure()
           << failures << " of " << x.numel() << " elements differ (atol " << atol << ", rtol "
           << kRtol << "):" << bad.str();
  }
  return ::testing::AssertionSuccess();
}

// --- layout helpers -----------------------------------------------------------

std::int64_t class_dim_index(const Shape& shape, ClassAxis axis) {
  return axis == ClassAxis::kFirst ? 1 : static_cast<std::int64_t>(shape.size()) - 1;
}

// (N, d1..dk): the logits' shape without its class axis.
Shape map_shape(const Shape& shape, ClassAxis axis) {
  Shape out;
  const std::int64_t class_dim = class_dim_index(shape, axis);
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (static_cast<std::int64_t>(d) != class_dim) out.push_back(shape[d]);
  }
  return out;
}

// Flat offset of (n, c, p) in a dense tensor of `shape` with the class axis
// at `axis`.
std::int64_t offset(const Shape& shape, ClassAxis axis, std::int64_t n, std::int64_t c,
                    std::int64_t p) {
  const std::int64_t classes = shape[class_dim_index(shape, axis)];
  std::int64_t pixels = 1;
  for (std::int64_t d : map_shape(shape, axis)) pixels *= d;
  pixels /= shape[0];
  return axis == ClassAxis::kFirst ? (n * classes + c) * pixels + p
                                   : (n * pixels + p) * classes + c;
}

// Random positive probability rows over the class axis (each position's
// targets sum to 1); every `zero_every`-th entry is exactly 0 if > 0.
Tensor random_probabilities(const Shape& shape, ClassAxis axis, std::uint64_t seed,
                            int zero_every = 0) {
  Tensor t = random_uniform(DType::kFloat64, shape, 0.05, 1.0, seed);
  double* v = t.data_as<double>();
  const std::int64_t classes = shape[class_dim_index(shape, axis)];
  const std::int64_t n_batch = shape[0];
  const std::int64_t pixels = n_batch == 0 ? 0 : t.numel() / (n_batch * classes);
  for (std::int64_t n = 0; n < n_batch; ++n) {
    for (std::int64_t p = 0; p < pixels; ++p) {
      double sum = 0;
      for (std::int64_t c = 0; c < classes; ++c) {
        double& e = v[offset(shape, axis, n, c, p)];
        if (zero_every > 0 && (n + c + p) % zero_every == 0) e = 0;
        sum += e;
      }
      for (std::int64_t c = 0; c < classes; ++c) v[offset(shape, axis, n, c, p)] /= sum;
    }
  }
  return t;
}

Tensor scalar64(double value) { return Tensor::scalar(DType::kFloat64, value); }

// --- cross_entropy ------------------------------------------------------------

enum class TargetKind { kInt32, kInt64, kProb };

struct CeCase {
  std::string name;
  Shape shape;  // logits, class axis where `axis` says
  ClassAxis axis = ClassAxis::kFirst;
  TargetKind targets = TargetKind::kInt64;
  bool class_weight = false;
  bool pixel_weight = false;
  std::optional<std::int64_t> ignore_index = std::nullopt;  // every 4th label gets it
  Reduction reduction = Reduction::kMean;
  double smoothing = 0;
  bool grad_prob = false;
  bool grad_log_prob = false;
  bool grad_entropy = false;
  bool grad_loss = true;
  double prob_floor = 0;
  ZeroTargetLog zero_target_log = ZeroTargetLog::kIeee;
  int zero_targets_every = 0;
};

// Owns every input of one cross-entropy case.
struct CeInputs {
  Tensor x, targets, class_weight, pixel_weight;
  Tensor g_loss, g_prob, g_log_prob, g_entropy;
  CrossEntropyOptions options;
  CrossEntropyGrads grads;
};

CeInputs make_inputs(const CeCase& c) {
  CeInputs in;
  const Shape maps = map_shape(c.shape, c.axis);
  const std::int64_t classes = c.shape[class_dim_index(c.shape, c.axis)];
  in.x = random_uniform(DType::kFloat64, c.shape, -3, 3, 11);
  if (c.targets == TargetKind::kProb) {
    in.targets = random_probabilities(c.shape, c.axis, 12, c.zero_targets_every);
  } else {
    const DType dtype = c.targets == TargetKind::kInt32 ? DType::kInt32 : DType::kInt64;
    in.targets = random_labels(DType::kInt64, maps, classes, 13);
    if (c.ignore_index) {
      for (std::int64_t i = 1; i < in.targets.numel(); i += 4) {
        in.targets.data_as<std::int64_t>()[i] = *c.ignore_index;
      }
    }
    in.targets = in.targets.to(dtype);
  }
  in.options.class_axis = c.axis;
  in.options.reduction = c.reduction;
  in.options.label_smoothing = c.smoothing;
  in.options.ignore_index = c.ignore_index;
  in.options.prob_floor = c.prob_floor;
  in.options.zero_target_log = c.zero_target_log;
  if (c.class_weight) {
    in.class_weight = random_uniform(DType::kFloat64, {classes}, 0.2, 2.0, 14);
    in.options.class_weight = in.class_weight.view();
  }
  if (c.pixel_weight) {
    in.pixel_weight = random_uniform(DType::kFloat64, maps, 0.0, 2.0, 15);
    in.options.pixel_weight = in.pixel_weight.view();
  }
  // The upstream scalar is deliberately not 1, so that a backward that
  // forgets it fails.
  in.g_loss = c.reduction == Reduction::kNone ? random_uniform(DType::kFloat64, maps, -1, 1, 16)
                                              : scalar64(0.73);
  if (c.grad_loss) in.grads.loss = in.g_loss.view();
  if (c.grad_prob) {
    in.g_prob = random_uniform(DType::kFloat64, c.shape, -1, 1, 17);
    in.grads.prob = in.g_prob.view();
    in.options.want_prob = true;
  }
  if (c.grad_log_prob) {
    in.g_log_prob = random_uniform(DType::kFloat64, c.shape, -1, 1, 18);
    in.grads.log_prob = in.g_log_prob.view();
    in.options.want_log_prob = true;
  }
  if (c.grad_entropy) {
    in.g_entropy = random_uniform(DType::kFloat64, maps, -1, 1, 19);
    in.grads.entropy = in.g_entropy.view();
    in.options.want_entropy = true;
  }
  return in;
}

Objective ce_objective(const CeInputs& in, const Tensor& x) {
  const CrossEntropyResult r = cross_entropy(x, in.targets, in.options);
  Objective obj;
  if (in.grads.loss) {
    if (in.options.reduction == Reduction::kNone) {
      add_dot(r.loss, in.g_loss, obj);
    } else {
      add_scaled(r.loss, in.g_loss.at(0), obj);
    }
  }
  if (in.grads.prob) add_dot(r.prob, in.g_prob, obj);
  if (in.grads.log_prob) add_dot(r.log_prob, in.g_log_prob, obj);
  if (in.grads.entropy) add_dot(r.entropy, in.g_entropy, obj);
  return obj;
}

void check_cross_entropy(const CeCase& c) {
  SCOPED_TRACE(c.name);
  const CeInputs in = make_inputs(c);
  const Tensor analytic = cross_entropy_backward(in.x, in.targets, in.grads, in.options);
  EXPECT_TRUE(gradient_matches(
      in.x, [&](const Tensor& x) { return ce_objective(in, x); }, analytic));

  // The fused call must agree with the separate forward and backward. Without
  // grads.loss the fused call uses an upstream of 1 for the loss (the header's
  // contract), so the backward it is compared with gets that explicitly.
  const CrossEntropyResult fused =
      cross_entropy_forward_backward(in.x, in.targets, in.options, in.grads);
  const CrossEntropyResult forward = cross_entropy(in.x, in.targets, in.options);
  Tensor fused_want = Tensor::copy_of(analytic);
  if (!in.grads.loss) {
    Tensor ones = in.options.reduction == Reduction::kNone
                      ? Tensor(DType::kFloat64, in.g_loss.shape())
                      : scalar64(1.0);
    for (std::int64_t i = 0; i < ones.numel(); ++i) ones.data_as<double>()[i] = 1.0;
    CrossEntropyGrads with_unit_loss = in.grads;
    with_unit_loss.loss = ones.view();
    fused_want = cross_entropy_backward(in.x, in.targets, with_unit_loss, in.options);
  }
  std::string why;
  EXPECT_TRUE(all_close(fused.grad_logits, fused_want, 1e-12, 1e-15, &why)) << "fused dX: " << why;
  EXPECT_TRUE(all_close(fused.loss, forward.loss, 1e-12, 1e-15, &why)) << "fused loss: " << why;
  if (in.options.want_prob) {
    EXPECT_TRUE(all_close(fused.prob, forward.prob, 1e-12, 1e-15, &why)) << "prob: " << why;
  }
  if (in.options.want_log_prob) {
    EXPECT_TRUE(all_close(fused.log_prob, forward.log_prob, 1e-12, 1e-15, &why))
        << "log_prob: " << why;
  }
  if (in.options.want_entropy) {
    EXPECT_TRUE(all_close(fused.entropy, forward.entropy, 1e-12, 1e-15, &why))
        << "entropy: " << why;
  }
}

TEST(GradCheckCrossEntropy, IndexTargetsInt64Mean) {
  check_cross_entropy({.name = "int64 mean", .shape = {2, 4, 3, 2}});
}

TEST(GradCheckCrossEntropy, IndexTargetsInt32Sum) {
  check_cross_entropy({.name = "int32 sum",
                       .shape = {2, 4, 3, 2},
                       .targets = TargetKind::kInt32,
                       .reduction = Reduction::kSum});
}

TEST(GradCheckCrossEntropy, NoneWithWeightsAndIgnoredPositions) {
  check_cross_entropy({.name = "none, weights, ignore -1",
                       .shape = {2, 4, 3, 2},
                       .class_weight = true,
                       .pixel_weight = true,
                       .ignore_index = -1,
                       .reduction = Reduction::kNone});
}

TEST(GradCheckCrossEntropy, MeanWithWeightsIgnoreAndSmoothing) {
  // ignore_index >= C is legal and must be honoured.
  check_cross_entropy({.name = "mean, weights, ignore 100, eps 0.1",
                       .shape = {2, 4, 3, 2},
                       .class_weight = true,
                       .pixel_weight = true,
                       .ignore_index = 100,
                       .reduction = Reduction::kMean,
                       .smoothing = 0.1});
  check_cross_entropy({.name = "none, class weights, int32, eps 0.1",
                       .shape = {2, 4, 3, 2},
                       .targets = TargetKind::kInt32,
                       .class_weight = true,
                       .ignore_index = 2,
                       .reduction = Reduction::kNone,
                       .smoothing = 0.1});
}

TEST(GradCheckCrossEntropy, FullSmoothing) {
  check_cross_entropy({.name = "mean, class weights, eps 1",
                       .shape = {2, 4, 3, 2},
                       .class_weight = true,
                       .reduction = Reduction::kMean,
                       .smoothing = 1.0});
  check_cross_entropy({.name = "sum, pixel weights, ignore -100, eps 1",
                       .shape = {2, 4, 3, 2},
                       .pixel_weight = true,
                       .ignore_index = -100,
                       .reduction = Reduction::kSum,
                       .smoothing = 1.0});
}

TEST(GradCheckCrossEntropy, ClassAxisLast) {
  check_cross_entropy({.name = "last, sum, eps 0.1, ignore -100",
                       .shape = {2, 3, 2, 4},
                       .axis = ClassAxis::kLast,
                       .class_weight = true,
                       .pixel_weight = true,
                       .ignore_index = -100,
                       .reduction = Reduction::kSum,
                       .smoothing = 0.1});
  check_cross_entropy({.name = "last, mean",
                       .shape = {2, 3, 2, 4},
                       .axis = ClassAxis::kLast,
                       .targets = TargetKind::kInt32,
                       .class_weight = true,
                       .ignore_index = 0});
}

TEST(GradCheckCrossEntropy, ProbabilityTargets) {
  check_cross_entropy({.name = "prob mean", .shape = {2, 4, 3, 2}, .targets = TargetKind::kProb});
  check_cross_entropy({.name = "prob sum, eps 0.1, weights",
                       .shape = {2, 4, 3, 2},
                       .targets = TargetKind::kProb,
                       .class_weight = true,
                       .pixel_weight = true,
                       .reduction = Reduction::kSum,
                       .smoothing = 0.1});
  check_cross_entropy({.name = "prob mean, eps 0.1, weights",
                       .shape = {2, 4, 3, 2},
                       .targets = TargetKind::kProb,
                       .class_weight = true,
                       .pixel_weight = true,
                       .reduction = Reduction::kMean,
                       .smoothing = 0.1});
  check_cross_entropy({.name = "prob none, eps 1, weights, last",
                       .shape = {2, 3, 2, 4},
                       .axis = ClassAxis::kLast,
                       .targets = TargetKind::kProb,
                       .class_weight = true,
                       .pixel_weight = true,
                       .reduction = Reduction::kNone,
                       .smoothing = 1.0});
  // Zero targets with the "zero" log rule: the loss stays smooth in x.
  check_cross_entropy({.name = "prob none, zero targets, zero_target_log zero",
                       .shape = {2, 4, 3, 2},
                       .targets = TargetKind::kProb,
                       .reduction = Reduction::kNone,
                       .zero_target_log = ZeroTargetLog::kZero,
                       .zero_targets_every = 3});
}

TEST(GradCheckCrossEntropy, ProbFloorDoesNotChangeTheGradient) {
  // With p_y far above the floor the floored loss equals the plain one, so
  // the unchanged gradient (semantics 3.4) is also the derivative.
  check_cross_entropy({.name = "floor 1e-20",
                       .shape = {2, 4, 3, 2},
                       .ignore_index = -1,
                       .reduction = Reduction::kMean,
                       .prob_floor = 1e-20});
}

TEST(GradCheckCrossEntropy, SpatialRanks0To3BothAxes) {
  const std::vector<Shape> first = {{5, 4}, {2, 4, 5}, {2, 4, 3, 2}, {2, 3, 2, 3, 2}};
  const std::vector<Shape> last = {{5, 4}, {2, 5, 4}, {2, 3, 2, 4}, {2, 2, 3, 2, 3}};
  for (std::size_t k = 0; k < first.size(); ++k) {
    for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
      const Shape& shape = axis == ClassAxis::kFirst ? first[k] : last[k];
      const std::string tag =
          "k=" + std::to_string(k) + (axis == ClassAxis::kFirst ? " first" : " last");
      check_cross_entropy({.name = tag + " index",
                           .shape = shape,
                           .axis = axis,
                           .targets = k % 2 ? TargetKind::kInt32 : TargetKind::kInt64,
                           .class_weight = true,
                           .pixel_weight = true,
                           .ignore_index = -1,
                           .reduction = k % 2 ? Reduction::kMean : Reduction::kNone,
                           .smoothing = 0.1});
      check_cross_entropy({.name = tag + " prob",
                           .shape = shape,
                           .axis = axis,
                           .targets = TargetKind::kProb,
                           .class_weight = true,
                           .reduction = k % 2 ? Reduction::kNone : Reduction::kMean,
                           .smoothing = 0.1});
    }
  }
}

TEST(GradCheckCrossEntropy, ProbLogProbAndEntropyUpstreams) {
  // Each map upstream alone, then all of them together with the loss's.
  check_cross_entropy(
      {.name = "prob only", .shape = {2, 4, 3, 2}, .grad_prob = true, .grad_loss = false});
  check_cross_entropy(
      {.name = "log_prob only", .shape = {2, 4, 3, 2}, .grad_log_prob = true, .grad_loss = false});
  check_cross_entropy(
      {.name = "entropy only", .shape = {2, 4, 3, 2}, .grad_entropy = true, .grad_loss = false});
  check_cross_entropy({.name = "all, index, mean, weights",
                       .shape = {2, 4, 3, 2},
                       .class_weight = true,
                       .pixel_weight = true,
                       .ignore_index = -1,
                       .smoothing = 0.1,
                       .grad_prob = true,
                       .grad_log_prob = true,
                       .grad_entropy = true});
  check_cross_entropy({.name = "all, prob, none, last",
                       .shape = {2, 3, 2, 4},
                       .axis = ClassAxis::kLast,
                       .targets = TargetKind::kProb,
                       .class_weight = true,
                       .reduction = Reduction::kNone,
                       .grad_prob = true,
                       .grad_log_prob = true,
                       .grad_entropy = true});
}

TEST(GradCheckCrossEntropy, FusedDefaultsToUnitUpstream) {
  // Without grads.loss the fused call differentiates the loss itself.
  CeInputs in = make_inputs(
      {.name = "fused default", .shape = {2, 4, 3, 2}, .class_weight = true, .ignore_index = -1});
  const CrossEntropyResult fused = cross_entropy_forward_backward(in.x, in.targets, in.options);
  EXPECT_TRUE(gradient_matches(
      in.x,
      [&](const Tensor& x) {
        Objective obj;
        add_scaled(cross_entropy(x, in.targets, in.options).loss, 1.0, obj);
        return obj;
      },
      fused.grad_logits));
}

TEST(GradCheckHarness, DetectsSmallGradientErrors) {
  // The harness itself must be able to fail: a gradient off by 1e-4
  // relative in one element, or a zero gradient, is rejected.
  const CeInputs in = make_inputs({.name = "harness",
                                   .shape = {2, 4, 3, 2},
                                   .class_weight = true,
                                   .reduction = Reduction::kSum});
  const Tensor analytic = cross_entropy_backward(in.x, in.targets, in.grads, in.options);
  const ObjectiveFn objective = [&](const Tensor& x) { return ce_objective(in, x); };
  ASSERT_TRUE(gradient_matches(in.x, objective, analytic));
  Tensor off = Tensor::copy_of(analytic);
  off.data_as<double>()[7] *= 1 + 1e-4;
  EXPECT_FALSE(gradient_matches(in.x, objective, off));
  EXPECT_FALSE(gradient_matches(in.x, objective, Tensor(DType::kFloat64, in.x.shape())));
}

// --- entropy ------------------------------------------------------------------

TEST(GradCheckEntropy, EntropyFunctionAndGradsEntropyAgree) {
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    SCOPED_TRACE(to_string(axis));
    const Shape shape = axis == ClassAxis::kFirst ? Shape{2, 5, 3, 2} : Shape{2, 3, 2, 5};
    const Tensor x = random_uniform(DType::kFloat64, shape, -3, 3, 21);
    const Tensor labels = random_labels(DType::kInt64, map_shape(shape, axis), 5, 22);
    const Tensor g = random_uniform(DType::kFloat64, map_shape(shape, axis), -1, 1, 23);
    CrossEntropyOptions options;
    options.class_axis = axis;
    options.want_entropy = true;
    CrossEntropyGrads grads;
    grads.entropy = g.view();
    const Tensor analytic = cross_entropy_backward(x, labels, grads, options);
    // The objective uses the standalone entropy(), so both entropies and the
    // entropy gradient are tied together.
    EXPECT_TRUE(gradient_matches(
        x,
        [&](const Tensor& xx) {
          Objective obj;
          add_dot(entropy(xx, axis), g, obj);
          return obj;
        },
        analytic));
    std::string why;
    EXPECT_TRUE(
        all_close(entropy(x, axis), cross_entropy(x, labels, options).entropy, 1e-12, 1e-15, &why))
        << why;
  }
}

// --- softmax / log_softmax backward ---------------------------------------------

TEST(GradCheckSoftmax, SoftmaxBackward) {
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    for (const Shape& shape : {Shape{4, 6}, Shape{2, 4, 3, 2}}) {
      SCOPED_TRACE(std::string(to_string(axis)) + " " + shape_string(shape));
      const Tensor x = random_uniform(DType::kFloat64, shape, -3, 3, 31);
      const Tensor g = random_uniform(DType::kFloat64, shape, -1, 1, 32);
      const Tensor analytic = softmax_backward(softmax(x, axis), g, axis);
      EXPECT_TRUE(gradient_matches(
          x,
          [&](const Tensor& xx) {
            Objective obj;
            add_dot(softmax(xx, axis), g, obj);
            return obj;
          },
          analytic));
    }
  }
}

TEST(GradCheckSoftmax, LogSoftmaxBackward) {
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    for (const Shape& shape : {Shape{4, 6}, Shape{2, 4, 3, 2}, Shape{2, 3, 2, 2, 2}}) {
      SCOPED_TRACE(std::string(to_string(axis)) + " " + shape_string(shape));
      const Tensor x = random_uniform(DType::kFloat64, shape, -3, 3, 33);
      const Tensor g = random_uniform(DType::kFloat64, shape, -1, 1, 34);
      const Tensor analytic = log_softmax_backward(log_softmax(x, axis), g, axis);
      EXPECT_TRUE(gradient_matches(
          x,
          [&](const Tensor& xx) {
            Objective obj;
            add_dot(log_softmax(xx, axis), g, obj);
            return obj;
          },
          analytic));
    }
  }
}

// --- nll_loss -------------------------------------------------------------------

TEST(GradCheckNll, AllReductionsWeightsAndIgnore) {
  struct NllCase {
    Shape shape;
    ClassAxis axis;
    DType label_dtype;
    Reduction reduction;
    bool weights;
    std::optional<std::int64_t> ignore;
  };
  const NllCase cases[] = {
      {{6, 4}, ClassAxis::kFirst, DType::kInt64, Reduction::kMean, false, std::nullopt},
      {{2, 4, 3, 2}, ClassAxis::kFirst, DType::kInt32, Reduction::kNone, true, -1},
      {{2, 4, 3, 2}, ClassAxis::kFirst, DType::kInt64, Reduction::kSum, true, 3},
      {{2, 4, 3, 2}, ClassAxis::kFirst, DType::kInt64, Reduction::kMean, true, -100},
      {{2, 3, 2, 4}, ClassAxis::kLast, DType::kInt32, Reduction::kMean, true, -1},
      {{2, 3, 2, 4}, ClassAxis::kLast, DType::kInt64, Reduction::kNone, false, std::nullopt},
  };
  for (const NllCase& c : cases) {
    SCOPED_TRACE(shape_string(c.shape) + " " + std::string(to_string(c.reduction)));
    const Shape maps = map_shape(c.shape, c.axis);
    const std::int64_t classes = c.shape[class_dim_index(c.shape, c.axis)];
    // NLL is linear in its input, so any real tensor serves as log_prob.
    const Tensor log_prob = random_uniform(DType::kFloat64, c.shape, -4, 0.5, 41);
    Tensor labels = random_labels(DType::kInt64, maps, classes, 42);
    if (c.ignore) {
      for (std::int64_t i = 2; i < labels.numel(); i += 5) {
        labels.data_as<std::int64_t>()[i] = *c.ignore;
      }
    }
    labels = labels.to(c.label_dtype);
    const Tensor weights = random_uniform(DType::kFloat64, {classes}, 0.2, 2, 43);
    CrossEntropyOptions options;
    options.class_axis = c.axis;
    options.reduction = c.reduction;
    options.ignore_index = c.ignore;
    if (c.weights) options.class_weight = weights.view();
    const Tensor g = c.reduction == Reduction::kNone
                         ? random_uniform(DType::kFloat64, maps, -1, 1, 44)
                         : scalar64(-1.7);
    const Tensor analytic = nll_loss_backward(log_prob, labels, g, options);
    EXPECT_TRUE(gradient_matches(
        log_prob,
        [&](const Tensor& lp) {
          Objective obj;
          add_dot(nll_loss(lp, labels, options), g, obj);
          return obj;
        },
        analytic));
  }
}

// --- kl_div ---------------------------------------------------------------------

TEST(GradCheckKlDiv, AllReductionsBothTargetKinds) {
  for (bool log_target : {false, true}) {
    for (Reduction reduction :
         {Reduction::kNone, Reduction::kSum, Reduction::kMean, Reduction::kBatchMean}) {
      for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
        SCOPED_TRACE(std::string(log_target ? "log_target " : "prob target ") +
                     std::string(to_string(reduction)) + " " + std::string(to_string(axis)));
        const Shape shape = axis == ClassAxis::kFirst ? Shape{3, 4, 2, 3} : Shape{3, 2, 3, 4};
        const Tensor x = random_uniform(DType::kFloat64, shape, -3, 3, 51);
        // Probability targets include exact zeros (whose terms are 0).
        const Tensor target = log_target ? random_uniform(DType::kFloat64, shape, -3, 0.5, 52)
                                         : random_probabilities(shape, axis, 52, 5);
        KlDivOptions options;
        options.class_axis = axis;
        options.log_target = log_target;
        options.reduction = reduction;
        const Tensor g = reduction == Reduction::kNone
                             ? random_uniform(DType::kFloat64, shape, -1, 1, 53)
                             : scalar64(1.3);
        const Tensor analytic = kl_div_backward(x, target, g, options);
        EXPECT_TRUE(gradient_matches(
            x,
            [&](const Tensor& xx) {
              Objective obj;
              add_dot(kl_div(xx, target, options), g, obj);
              return obj;
            },
            analytic));
      }
    }
  }
}

// --- spatial soft-argmax ----------------------------------------------------------

struct SaCase {
  Shape shape;
  SpatialSoftArgmaxOptions options = {};
  bool g_keypoints = true;
  bool g_softmax = false;
  bool g_covariance = false;
};

std::string describe(const SaCase& c) {
  std::ostringstream s;
  s << shape_string(c.shape) << (c.options.channel_axis == ClassAxis::kFirst ? " first" : " last")
    << (c.options.temperature_mode == TemperatureMode::kDivide ? " divide " : " multiply ")
    << c.options.temperature
    << (c.options.coordinates == Coordinates::kNormalized ? " normalized" : " pixel")
    << (c.g_keypoints ? " +kp" : "") << (c.g_softmax ? " +S" : "")
    << (c.g_covariance ? " +cov" : "");
  return s.str();
}

void check_soft_argmax(const SaCase& c) {
  SCOPED_TRACE(describe(c));
  const Tensor x = random_uniform(DType::kFloat64, c.shape, -2, 2, 61);
  const std::int64_t n = c.shape[0];
  const std::int64_t channels = c.shape[class_dim_index(c.shape, c.options.channel_axis)];
  const auto k = static_cast<std::int64_t>(c.shape.size()) - 2;
  const Tensor gk = random_uniform(DType::kFloat64, {n, channels, k}, -1, 1, 62);
  const Tensor gs = random_uniform(DType::kFloat64, c.shape, -1, 1, 63);
  const Tensor gc = random_uniform(DType::kFloat64, {n, channels, k, k}, -1, 1, 64);
  SpatialSoftArgmaxGrads grads;
  if (c.g_keypoints) grads.keypoints = gk.view();
  if (c.g_softmax) grads.softmax = gs.view();
  if (c.g_covariance) grads.covariance = gc.view();
  SpatialSoftArgmaxOptions forward_options = c.options;
  forward_options.want_softmax = c.g_softmax;
  forward_options.want_covariance = c.g_covariance;
  auto objective_at = [&](const Tensor& xx, double temperature) {
    SpatialSoftArgmaxOptions o = forward_options;
    o.temperature = temperature;
    const SpatialSoftArgmaxResult r = spatial_soft_argmax(xx, o);
    Objective obj;
    if (c.g_keypoints) add_dot(r.keypoints, gk, obj);
    if (c.g_softmax) add_dot(r.softmax, gs, obj);
    if (c.g_covariance) add_dot(r.covariance, gc, obj);
    return obj;
  };
  const SpatialSoftArgmaxBackward back = spatial_soft_argmax_backward(x, grads, c.options);
  EXPECT_TRUE(gradient_matches(
      x, [&](const Tensor& xx) { return objective_at(xx, c.options.temperature); },
      back.grad_input));

  // dL/dT by a central difference in the temperature itself.
  const double t = c.options.temperature;
  const double h = 1e-6 * t;
  const double numeric = (objective_at(x, t + h).value - objective_at(x, t - h).value) / (2 * h);
  const double magnitude = objective_at(x, t).magnitude;
  EXPECT_NEAR(back.grad_temperature, numeric,
              kAtol + 16 * DBL_EPSILON * magnitude / h + kRtol * std::abs(numeric));
  EXPECT_NE(back.grad_temperature, 0.0);
}

TEST(GradCheckSpatialSoftArgmax, KeypointsEveryModeRankAndAxis) {
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3, 5}, {2, 5, 3}}, {{2, 2, 3, 4}, {2, 3, 4, 2}}, {{1, 2, 2, 3, 2}, {1, 2, 3, 2, 2}}};
  for (const auto& [first, last] : shapes) {
    for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
      for (TemperatureMode mode : {TemperatureMode::kDivide, TemperatureMode::kMultiply}) {
        for (Coordinates coords : {Coordinates::kNormalized, Coordinates::kPixel}) {
          SaCase c{.shape = axis == ClassAxis::kFirst ? first : last};
          c.options.channel_axis = axis;
          c.options.temperature_mode = mode;
          c.options.temperature = mode == TemperatureMode::kDivide ? 0.7 : 1.6;
          c.options.coordinates = coords;
          check_soft_argmax(c);
        }
      }
    }
  }
}

TEST(GradCheckSpatialSoftArgmax, SoftmaxAndCovarianceUpstreams) {
  const std::vector<std::pair<Shape, ClassAxis>> shapes = {{{2, 3, 5}, ClassAxis::kFirst},
                                                           {{2, 2, 3, 4}, ClassAxis::kFirst},
                                                           {{2, 3, 4, 2}, ClassAxis::kLast},
                                                           {{1, 2, 3, 2, 2}, ClassAxis::kLast}};
  for (const auto& [shape, axis] : shapes) {
    for (TemperatureMode mode : {TemperatureMode::kDivide, TemperatureMode::kMultiply}) {
      SaCase base{.shape = shape};
      base.options.channel_axis = axis;
      base.options.temperature_mode = mode;
      base.options.temperature = mode == TemperatureMode::kDivide ? 1.3 : 0.8;
      SaCase softmax_only = base;
      softmax_only.g_keypoints = false;
      softmax_only.g_softmax = true;
      check_soft_argmax(softmax_only);
      SaCase covariance_only = base;
      covariance_only.g_keypoints = false;
      covariance_only.g_covariance = true;
      check_soft_argmax(covariance_only);
      SaCase all = base;
      all.g_softmax = all.g_covariance = true;
      all.options.coordinates = Coordinates::kPixel;
      check_soft_argmax(all);
    }
  }
}

TEST(GradCheckSpatialSoftArgmax, SingletonAxisCoordinates) {
  // An axis of length 1 has a constant coordinate (0 or -1): its keypoint
  // component has no gradient, the other axis still does.
  for (SingletonCoordinate s : {SingletonCoordinate::kCenter, SingletonCoordinate::kMinusOne}) {
    SaCase c{.shape = {2, 2, 1, 5}, .g_covariance = true};
    c.options.singleton_coordinate = s;
    check_soft_argmax(c);
  }
}

// --- Caffe2 operators -------------------------------------------------------------

struct SpatialC2Inputs {
  Tensor x, labels, weight;
};

SpatialC2Inputs make_spatial_c2(bool ignore) {
  SpatialC2Inputs in;
  in.x = random_uniform(DType::kFloat64, {2, 3, 2, 3}, -3, 3, 71);
  in.labels = random_labels(DType::kInt32, {2, 2, 3}, 3, 72);
  if (ignore) {
    in.labels.data_as<std::int32_t>()[1] = -1;
    in.labels.data_as<std::int32_t>()[8] = -1;
  }
  in.weight = random_uniform(DType::kFloat64, {2, 2, 3}, 0.1, 2, 73);
  return in;
}

TEST(GradCheckCaffe2, SpatialSoftmaxWithLossGradient) {
  for (bool weighted : {false, true}) {
    for (bool ignore : {false, true}) {
      SCOPED_TRACE(std::string(weighted ? "weighted" : "unweighted") +
                   (ignore ? ", -1 labels" : ""));
      const SpatialC2Inputs in = make_spatial_c2(ignore);
      std::optional<TensorView> weight;
      if (weighted) weight = in.weight.view();
      const Tensor d_loss = scalar64(0.6);
      const caffe2::LossOutputs out = caffe2::spatial_softmax_with_loss(in.x, in.labels, weight);
      const Tensor analytic =
          caffe2::spatial_softmax_with_loss_gradient(in.x, in.labels, weight, out.prob, d_loss);
      EXPECT_TRUE(gradient_matches(
          in.x,
          [&](const Tensor& x) {
            Objective obj;
            add_scaled(caffe2::spatial_softmax_with_loss(x, in.labels, weight).loss, 0.6, obj);
            return obj;
          },
          analytic));
    }
  }
}

TEST(GradCheckCaffe2, SpatialScaleMultipliesOnlyTheGradient) {
  // Caffe2's CPU forward ignores scale while its gradient applies it (semantics
  // 2.1, 2.2): the FD check above uses scale 1; here scale's effect alone.
  const SpatialC2Inputs in = make_spatial_c2(true);
  const Tensor d_loss = scalar64(0.6);
  caffe2::SpatialSoftmaxWithLossArgs unit, scaled;
  scaled.scale = 2.5f;
  const caffe2::LossOutputs out1 =
      caffe2::spatial_softmax_with_loss(in.x, in.labels, in.weight, unit);
  const caffe2::LossOutputs out2 =
      caffe2::spatial_softmax_with_loss(in.x, in.labels, in.weight, scaled);
  EXPECT_EQ(out1.loss.at(0), out2.loss.at(0));
  const Tensor dx1 = caffe2::spatial_softmax_with_loss_gradient(in.x, in.labels, in.weight,
                                                                out1.prob, d_loss, unit);
  const Tensor dx2 = caffe2::spatial_softmax_with_loss_gradient(in.x, in.labels, in.weight,
                                                                out1.prob, d_loss, scaled);
  Tensor want = Tensor::copy_of(dx1);
  for (std::int64_t i = 0; i < want.numel(); ++i) want.data_as<double>()[i] *= 2.5;
  std::string why;
  EXPECT_TRUE(all_close(dx2, want, 1e-14, 0, &why)) << why;
  EXPECT_GT(testing::max_abs(dx1), 0.0);
}

TEST(GradCheckCaffe2, SoftmaxWithLossGradient) {
  struct C2Case {
    Shape x_shape;
    int label_prob;
    bool weighted;
    Shape prob_target_shape;  // label_prob 1 only
  };
  const C2Case cases[] = {
      {{4, 5}, 0, false, {}},        {{4, 5}, 0, true, {}},     {{3, 4, 2}, 0, true, {}},
      {{4, 5}, 1, false, {4, 5}},    {{4, 5}, 1, true, {4, 5}}, {{3, 4, 2}, 1, true, {3, 4, 2}},
      {{3, 4, 2}, 1, false, {3, 8}},
  };
  for (const C2Case& c : cases) {
    SCOPED_TRACE(shape_string(c.x_shape) + " label_prob " + std::to_string(c.label_prob) +
                 (c.weighted ? " weighted" : ""));
    const Tensor x = random_uniform(DType::kFloat64, c.x_shape, -3, 3, 81);
    const std::int64_t rows = c.x_shape[0];
    const std::int64_t d = x.numel() / rows;
    Tensor targets;
    if (c.label_prob == 0) {
      targets = random_labels(DType::kInt32, {rows}, d, 82);
    } else {
      // Rows of a (rows, d) view sum to 1.
      targets = random_probabilities({rows, d}, ClassAxis::kLast, 83);
      targets = Tensor::copy_of(TensorView(targets.data(), DType::kFloat64, c.prob_target_shape));
    }
    const Tensor weight = random_uniform(DType::kFloat64, {rows}, 0.1, 2, 84);
    std::optional<TensorView> w;
    if (c.weighted) w = weight.view();
    caffe2::SoftmaxWithLossArgs args;
    args.label_prob = c.label_prob;
    args.axis = 1;
    const Tensor d_loss = scalar64(1.4);
    const caffe2::LossOutputs out = caffe2::softmax_with_loss(x, targets, w, args);
    const Tensor analytic =
        caffe2::softmax_with_loss_gradient(x, targets, w, out.prob, d_loss, args);
    EXPECT_TRUE(gradient_matches(
        x,
        [&](const Tensor& xx) {
          Objective obj;
          add_scaled(caffe2::softmax_with_loss(xx, targets, w, args).loss, 1.4, obj);
          return obj;
        },
        analytic));
  }
}

}  // namespace
}  // namespace spatialsoftmax
