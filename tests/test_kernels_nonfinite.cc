// NaN / inf / -inf / underflow semantics, prob_floor on probability targets
// and C = 1 through the Highway kernels' fast paths, on every SIMD target
// (one test instance per target, named by it), against the reference and
// the exact values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_support.h"
#include "spatialsoftmax/caffe2.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

// --- non-finite logits and underflow ------------------------------------------------

// Builds (N = 1, C, P) class-first or (1, P, C) class-last logits from
// per-position class vectors.
struct Positions {
  std::int64_t classes;
  std::vector<std::vector<double>> rows;  // rows[i][c]

  Tensor logits(DType dtype, ClassAxis axis) const {
    const auto P = static_cast<std::int64_t>(rows.size());
    const Shape shape = axis == ClassAxis::kFirst ? Shape{1, classes, P} : Shape{1, P, classes};
    Tensor x(dtype, shape);
    for (std::int64_t i = 0; i < P; ++i) {
      for (std::int64_t c = 0; c < classes; ++c) {
        const std::int64_t flat = axis == ClassAxis::kFirst ? c * P + i : i * classes + c;
        testing::set_element(x, flat,
                             rows[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)]);
      }
    }
    return x;
  }
};

// Element (position i, class c) of an X-shaped output.
double at(const Tensor& t, ClassAxis axis, std::int64_t positions, std::int64_t classes,
          std::int64_t i, std::int64_t c) {
  return t.at(axis == ClassAxis::kFirst ? c * positions + i : i * classes + c);
}

class NonFinite : public PerTarget {};

TEST_P(NonFinite, NaNInfMinusInfAndUnderflowThroughTheFastPath) {
  const double lowest32 = -std::numeric_limits<float>::max();
  for (std::int64_t C : {3, 5, 9, 17, 70}) {
    for (std::int64_t P : {37, 64}) {
      std::mt19937_64 rng(static_cast<std::uint64_t>(C * 100 + P));
      std::uniform_real_distribution<double> u(-4, 4);
      Positions pos{C, {}};
      for (std::int64_t i = 0; i < P; ++i) {
        std::vector<double> row(static_cast<std::size_t>(C));
        for (auto& v : row) v = u(rng);
        pos.rows.push_back(row);
      }
      // The special positions sit at varying lanes: spread over the tile.
      const std::int64_t kNaNPos = 1, kInfPos = P / 3, kIgnoredNaN = P / 2, kAllMinusInf = 5,
                         kSomeMinusInf = P - 1, kUnderflow = 7, kInfAndMinusInf = 9,
                         kNaNAndInf = P / 2 + 3, kLabelOnMinusInf = 11;
      auto row = [&](std::int64_t i) -> std::vector<double>& {
        return pos.rows[static_cast<std::size_t>(i)];
      };
      row(kNaNPos)[1] = kNaN;
      row(kInfPos)[C - 1] = kInf;
      row(kIgnoredNaN)[0] = kNaN;
      for (auto& v : row(kAllMinusInf)) v = -kInf;
      row(kSomeMinusInf)[0] = -kInf;
      row(kSomeMinusInf)[C - 1] = -kInf;
      const double tiny[] = {0, -80, -87.2, -87.4, -88, -100, -103.5, -200, -745, -1e30, lowest32};
      for (std::int64_t c = 0; c < C; ++c)
        row(kUnderflow)[static_cast<std::size_t>(c)] = tiny[c % 11];
      row(kInfAndMinusInf)[0] = kInf;
      row(kInfAndMinusInf)[1] = -kInf;
      row(kNaNAndInf)[0] = kNaN;
      row(kNaNAndInf)[C - 1] = kInf;
      row(kLabelOnMinusInf)[2] = -kInf;

      Tensor labels = testing::random_labels(DType::kInt64, {1, P}, C, 5);
      testing::set_element(labels, kIgnoredNaN, -100);
      testing::set_element(labels, kSomeMinusInf, 1);     // finite class
      testing::set_element(labels, kLabelOnMinusInf, 2);  // on the -inf class
      testing::set_element(labels, kUnderflow, static_cast<double>(5 % C));
      testing::set_element(labels, 0, -100);  // an ignored finite position

      for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
        for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
          for (int variant = 0; variant < 4; ++variant) {
            const Tensor x = pos.logits(dtype, axis);
            const Tensor cw = testing::random_uniform(dtype, {C}, 0.5, 2, 9);
            CrossEntropyOptions o = CrossEntropyOptions::pytorch();
            o.class_axis = axis;
            o.reduction = Reduction::kNone;
            o.want_prob = o.want_log_prob = o.want_entropy = true;
            if (variant == 1) {
              o.label_smoothing = 0.2;
              o.class_weight = cw.view();
            }
            if (variant == 2) o.prob_floor = 1e-20;
            if (variant == 3) o.want_log_prob = o.want_entropy = false;  // the plain index path
            SCOPED_TRACE("C " + std::to_string(C) + ", P " + std::to_string(P) + ", " +
                         std::string(dtype_name(dtype)) +
                         (axis == ClassAxis::kFirst ? " class-first" : " class-last") +
                         (variant == 1   ? ", smoothing 0.2 + class weights"
                          : variant == 2 ? ", floor 1e-20"
                          : variant == 3 ? ", P only"
                                         : ""));
            CrossEntropyResult want;
            {
              ScopedBackend reference("reference");
              want = cross_entropy_forward_backward(x, labels, o);
            }
            ScopedBackend highway("highway");
            const CrossEntropyResult r = cross_entropy_forward_backward(x, labels, o);
            compare_results(r, want, Reduction::kNone, "non-finite logits:");
            const Tensor sm = softmax(x, axis);
            expect_close(sm, want.prob, Kind::kProb, "softmax");
            const bool all_outputs = variant != 3;
            if (all_outputs) {
              expect_close(log_softmax(x, axis), want.log_prob, Kind::kMap, "log_softmax");
              expect_close(entropy(x, axis), want.entropy, Kind::kMap, "entropy");
            }
            auto P_ = [&](std::int64_t i, std::int64_t c) { return at(r.prob, axis, P, C, i, c); };
            auto L_ = [&](std::int64_t i, std::int64_t c) {
              return at(r.log_prob, axis, P, C, i, c);
            };
            auto G_ = [&](std::int64_t i, std::int64_t c) {
              return at(r.grad_logits, axis, P, C, i, c);
            };
            // NaN, +inf, all -inf, inf with -inf, NaN with inf: the whole position is NaN.
            for (std::int64_t i : {kNaNPos, kInfPos, kAllMinusInf, kInfAndMinusInf, kNaNAndInf}) {
              SCOPED_TRACE("position " + std::to_string(i));
              EXPECT_TRUE(std::isnan(r.loss.at(i))) << r.loss.at(i);
              if (all_outputs) {
                EXPECT_TRUE(std::isnan(r.entropy.at(i))) << r.entropy.at(i);
              }
              for (std::int64_t c = 0; c < C; ++c) {
                EXPECT_TRUE(std::isnan(P_(i, c))) << "P class " << c << " = " << P_(i, c);
                if (all_outputs) {
                  EXPECT_TRUE(std::isnan(L_(i, c))) << "logP class " << c << " = " << L_(i, c);
                }
                EXPECT_TRUE(std::isnan(G_(i, c))) << "dX class " << c << " = " << G_(i, c);
                EXPECT_TRUE(std::isnan(at(sm, axis, P, C, i, c)));
              }
            }
            // An ignored NaN position: P NaN, loss 0, dX 0.
            EXPECT_EQ(r.loss.at(kIgnoredNaN), 0.0);
            for (std::int64_t c = 0; c < C; ++c) {
              EXPECT_TRUE(std::isnan(P_(kIgnoredNaN, c)));
              EXPECT_EQ(G_(kIgnoredNaN, c), 0.0) << "ignored NaN position, class " << c;
            }
            // Some -inf with a finite max: p = 0 exactly, logp = -inf, the rest finite.
            for (std::int64_t c = 0; c < C; ++c) {
              const bool minus_inf = c == 0 || c == C - 1;
              if (minus_inf) {
                EXPECT_EQ(P_(kSomeMinusInf, c), 0.0) << "class " << c;
                if (all_outputs) {
                  EXPECT_EQ(L_(kSomeMinusInf, c), -kInf) << "class " << c;
                }
              } else {
                EXPECT_TRUE(std::isfinite(P_(kSomeMinusInf, c)) && P_(kSomeMinusInf, c) > 0);
                if (all_outputs) {
                  EXPECT_TRUE(std::isfinite(L_(kSomeMinusInf, c)));
                }
              }
              EXPECT_TRUE(std::isfinite(G_(kSomeMinusInf, c))) << "class " << c;
              EXPECT_EQ(P_(kLabelOnMinusInf, 2), 0.0);
              EXPECT_TRUE(std::isfinite(G_(kLabelOnMinusInf, c))) << "class " << c;
            }
            // (With smoothing the -inf classes enter the loss: +inf.)
            if (variant != 1) {
              EXPECT_TRUE(std::isfinite(r.loss.at(kSomeMinusInf)));
            }
            if (all_outputs) {
              EXPECT_TRUE(std::isfinite(r.entropy.at(kSomeMinusInf)));
            }
            if (variant == 2) {
              EXPECT_NEAR(r.loss.at(kLabelOnMinusInf), -std::log(1e-20), 1e-4);  // floored
            } else {
              EXPECT_EQ(r.loss.at(kLabelOnMinusInf), kInf);
            }
            // Underflow: p in [0, exp(x - m) / s], never NaN or garbage; logp exact.
            {
              double s = 0;
              for (std::int64_t c = 0; c < C; ++c)
                s += std::exp(row(kUnderflow)[static_cast<std::size_t>(c)]);
              for (std::int64_t c = 0; c < C; ++c) {
                const double xc = row(kUnderflow)[static_cast<std::size_t>(c)];
                const double x_stored =
                    dtype == DType::kFloat32 ? static_cast<double>(static_cast<float>(xc)) : xc;
                const double exact = std::exp(x_stored) / s;
                const double p = P_(kUnderflow, c);
                const double denorm = dtype == DType::kFloat32 ? 1.5e-45 : 5e-324;
                EXPECT_TRUE(p >= 0 && p <= exact * (1 + 1e-5) + denorm)
                    << "class " << c << ": x " << xc << ", p " << p << ", exact " << exact;
                if (exact >= (dtype == DType::kFloat32 ? 1.2e-38 : 2.3e-308) * 4) {
                  EXPECT_NEAR(p, exact, exact * 1e-5) << "class " << c << ": x " << xc;
                }
                if (all_outputs) {
                  EXPECT_TRUE(std::isfinite(L_(kUnderflow, c)));
                  EXPECT_NEAR(L_(kUnderflow, c), x_stored - std::log(s),
                              1e-5 * std::abs(x_stored) + 1e-5)
                      << "class " << c;
                }
                EXPECT_TRUE(std::isfinite(G_(kUnderflow, c)));
              }
              // (float32 with smoothing: w_c * -logp_c of the -FLT_MAX class overflows to +inf.)
              if (variant != 1 || dtype == DType::kFloat64) {
                EXPECT_TRUE(std::isfinite(r.loss.at(kUnderflow)));
              }
              if (all_outputs) {
                EXPECT_TRUE(std::isfinite(r.entropy.at(kUnderflow)));
              }
            }
            // Finite positions next to the non-finite ones stay finite.
            for (std::int64_t i = 0; i < P; ++i) {
              bool special = false;
              for (std::int64_t k : {kNaNPos, kInfPos, kIgnoredNaN, kAllMinusInf, kSomeMinusInf,
                                     kUnderflow, kInfAndMinusInf, kNaNAndInf, kLabelOnMinusInf}) {
                special |= k == i;
              }
              if (special) continue;
              EXPECT_TRUE(std::isfinite(r.loss.at(i))) << "position " << i;
              for (std::int64_t c = 0; c < C; ++c) {
                EXPECT_TRUE(std::isfinite(G_(i, c))) << "position " << i << " class " << c;
              }
            }
            // Reductions including a NaN position are NaN.
            CrossEntropyOptions sum = o;
            sum.reduction = Reduction::kSum;
            EXPECT_TRUE(std::isnan(cross_entropy(x, labels, sum).loss.at(0)));
          }
        }
      }
    }
  }
}

TEST_P(NonFinite, ProbabilityTargetsAndCaffe2OperatorsPropagateNaN) {
  for (std::int64_t C : {5, 70}) {
    const std::int64_t P = 21;
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      Tensor x = testing::random_uniform(dtype, {1, C, P}, -3, 3, 3);
      testing::set_element(x, 2 * P + 4, kNaN);    // position 4
      testing::set_element(x, 0 * P + 9, kInf);    // position 9
      testing::set_element(x, 1 * P + 13, -kInf);  // position 13: finite max
      Tensor t = testing::random_uniform(dtype, {1, C, P}, 0, 1, 4);
      testing::set_element(t, 1 * P + 13, 0);  // zero target on the -inf class
      Tensor y = testing::random_labels(DType::kInt32, {1, P}, C, 5);
      testing::set_element(y, 9, -1);  // ignored +inf pixel
      for (ZeroTargetLog ztl : {ZeroTargetLog::kIeee, ZeroTargetLog::kZero}) {
        CrossEntropyOptions o;
        o.reduction = Reduction::kNone;
        o.zero_target_log = ztl;
        o.want_prob = true;
        SCOPED_TRACE(
            "C " + std::to_string(C) + " " + std::string(dtype_name(dtype)) +
            (ztl == ZeroTargetLog::kZero ? " zero_target_log zero" : " zero_target_log ieee"));
        CrossEntropyResult want;
        {
          ScopedBackend reference("reference");
          want = cross_entropy_forward_backward(x, t, o);
        }
        ScopedBackend highway("highway");
        const CrossEntropyResult r = cross_entropy_forward_backward(x, t, o);
        compare_results(r, want, Reduction::kNone, "soft targets:");
        EXPECT_TRUE(std::isnan(r.loss.at(4)));
        EXPECT_TRUE(std::isnan(r.loss.at(9)));
        if (ztl == ZeroTargetLog::kIeee) {
          EXPECT_TRUE(std::isnan(r.loss.at(13))) << "0 * log(0) is NaN in ieee mode";
        } else {
          EXPECT_TRUE(std::isfinite(r.loss.at(13))) << "0 * log(0) is 0 in zero mode";
        }
      }
      if (dtype == DType::kFloat32) {
        // Caffe2 spatial: the NaN pixel poisons P and the loss, the ignored
        // +inf pixel only P.
        const Tensor x4 = Tensor::copy_of(TensorView(x.data(), dtype, {1, C, 3, 7}));
        const Tensor y3 = Tensor::copy_of(TensorView(y.data(), DType::kInt32, {1, 3, 7}));
        caffe2::LossOutputs want;
        {
          ScopedBackend reference("reference");
          want = caffe2::spatial_softmax_with_loss(x4, y3, std::nullopt);
        }
        ScopedBackend highway("highway");
        const caffe2::LossOutputs got = caffe2::spatial_softmax_with_loss(x4, y3, std::nullopt);
        expect_close(got.prob, want.prob, Kind::kProb, "SpatialSoftmaxWithLoss P");
        EXPECT_TRUE(std::isnan(got.loss.at(0)));
        EXPECT_TRUE(std::isnan(got.prob.at(0 * P + 9)));
      }
    }
  }
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(NonFinite);

// prob_floor applies to probability targets too (docs/semantics.md 3.1; Caffe2's
// label_prob mode): l = sum_c w_c T_c * -log(max(p_c, floor)).
class ProbFloor : public PerTarget {};

TEST_P(ProbFloor, AppliesToProbabilityTargetsOnTheFastPath) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (std::int64_t C : {2, 70}) {
      // Position 0: p_1 = e^-50 / (1 + ...) < 1e-20, so its term is floored.
      Tensor x(dtype, {1, C});
      testing::set_element(x, 1, -50);
      for (std::int64_t c = 2; c < C; ++c) testing::set_element(x, c, -60);
      Tensor t(dtype, {1, C});
      testing::set_element(t, 0, 0.5);
      testing::set_element(t, 1, 0.5);
      CrossEntropyOptions o;
      o.reduction = Reduction::kSum;
      o.prob_floor = 1e-20;
      SCOPED_TRACE("C " + std::to_string(C) + " " + std::string(dtype_name(dtype)));
      double s = 1 + std::exp(-50.0) + static_cast<double>(C - 2) * std::exp(-60.0);
      const double expected = 0.5 * std::log(s) + 0.5 * -std::log(1e-20);
      ScopedBackend highway("highway");
      const double got = cross_entropy(x, t, o).loss.at(0);
      EXPECT_NEAR(got, expected, 1e-5 * expected)
          << "unfloored would be " << 0.5 * (50 + std::log(s));
      caffe2::SoftmaxWithLossArgs args;
      args.label_prob = 1;
      const double caffe2_loss = caffe2::softmax_with_loss(x, t, std::nullopt, args).loss.at(0);
      EXPECT_NEAR(caffe2_loss, expected, 1e-5 * expected)
          << "Caffe2 SoftmaxWithLoss label_prob 1 (CPU)";
    }
  }
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(ProbFloor);

class SingleClass : public PerTarget {};

TEST_P(SingleClass, LossIsZeroAndGradientExactlyZeroForEveryOption) {
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<double> u(0, 1);
  const Shape spatial_shapes[] = {{}, {37}, {5, 7}, {64}, {3, 3, 3, 3}};
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
      for (const Shape& spatial : spatial_shapes) {
        for (int option_set = 0; option_set < 8; ++option_set) {
          CaseSpec c;
          c.batch = 3;
          c.classes = 1;
          c.spatial = spatial;
          c.axis = axis;
          c.dtype = dtype;
          c.seed = rng();
          c.targets = option_set % 4 == 3 ? CaseSpec::Targets::kSoft
                      : option_set % 2    ? CaseSpec::Targets::kInt32
                                          : CaseSpec::Targets::kInt64;
          c.class_weight = option_set % 2 == 1;
          c.pixel_weight = option_set % 3 != 0;
          c.label_smoothing = option_set >= 4 ? (option_set % 2 ? 1.0 : 0.3) : 0.0;
          c.prob_floor = option_set == 2 || option_set == 5 ? 1e-20 : 0.0;
          c.zero_target_log = option_set == 7 ? ZeroTargetLog::kZero : ZeroTargetLog::kIeee;
          c.reduction = static_cast<Reduction>(option_set % 3);
          c.want_prob = c.want_log_prob = c.want_entropy = true;
          c.logit_range = option_set == 6 ? 1e30 : 20;
          if (c.targets != CaseSpec::Targets::kSoft && option_set % 2 == 0) c.ignore_index = -100;
          c.zero_weight_mean = ZeroWeightMean::kZero;  // a mean over zero weight is 0, not NaN
          c.fused_grad_loss = option_set % 2 == 0;
          SCOPED_TRACE(c.describe());
          CaseInputs in = make_inputs(c);
          // Soft targets for C = 1 need not be 1 (semantics 3.3: not validated).
          if (c.targets == CaseSpec::Targets::kSoft) {
            Tensor t(dtype, c.logits_shape());
            for (std::int64_t i = 0; i < t.numel(); ++i)
              testing::set_element(t, i, i % 5 == 0 ? 1.0 : 0.2 + 1.3 * u(rng));
            in.targets = restride(t, Layout::kDense);
          }
          ScopedBackend highway("highway");
          const CaseOutputs r = run_case(in);
          for (const Tensor* loss : {&r.forward.loss, &r.fused.loss}) {
            for (std::int64_t i = 0; i < loss->numel(); ++i) {
              ASSERT_EQ(loss->at(i), 0.0) << "loss element " << i;
            }
          }
          for (const Tensor* dx : {&r.backward, &r.fused.grad_logits}) {
            for (std::int64_t i = 0; i < dx->numel(); ++i) {
              ASSERT_EQ(dx->at(i), 0.0)
                  << "dX element " << i << (dx == &r.backward ? " (backward)" : " (fused)");
            }
          }
          for (std::int64_t i = 0; i < r.softmax.numel(); ++i) {
            ASSERT_EQ(r.softmax.at(i), 1.0);
            ASSERT_EQ(r.log_softmax.at(i), 0.0);
            ASSERT_EQ(r.forward.prob.at(i), 1.0);
            ASSERT_EQ(r.forward.log_prob.at(i), 0.0);
          }
          for (std::int64_t i = 0; i < r.entropy.numel(); ++i) {
            ASSERT_EQ(r.entropy.at(i), 0.0);
            ASSERT_EQ(r.forward.entropy.at(i), 0.0);
          }
        }
      }
    }
  }
}

TEST_P(SingleClass, Caffe2OperatorsGiveZeroLossAndGradient) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    const Tensor x = testing::random_uniform(dtype, {2, 1, 5, 9}, -50, 50, 1);
    Tensor t(DType::kInt32, {2, 5, 9});
    testing::set_element(t, 3, -1);
    const Tensor w = testing::random_uniform(dtype, {2, 5, 9}, 0.1, 2, 2);
    const Tensor d_loss = Tensor::scalar(dtype, 1.0);
    const Tensor x2 = testing::random_uniform(dtype, {17, 1}, -50, 50, 3);
    const Tensor t2(DType::kInt32, {17});
    const Tensor t2_prob = testing::filled(dtype, {17, 1}, 1.0);
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    ScopedBackend highway("highway");
    const caffe2::LossOutputs out = caffe2::spatial_softmax_with_loss(x, t, w.view());
    EXPECT_EQ(out.loss.at(0), 0.0);
    const Tensor dx = caffe2::spatial_softmax_with_loss_gradient(x, t, w.view(), out.prob, d_loss);
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      ASSERT_EQ(out.prob.at(i), 1.0);
      ASSERT_EQ(dx.at(i), 0.0);
    }
    for (int label_prob : {0, 1}) {
      caffe2::SoftmaxWithLossArgs args;
      args.label_prob = label_prob;
      const TensorView target = label_prob ? t2_prob.view() : t2.view();
      const caffe2::LossOutputs o2 = caffe2::softmax_with_loss(x2, target, std::nullopt, args);
      EXPECT_EQ(o2.loss.at(0), 0.0);
      const Tensor dx2 =
          caffe2::softmax_with_loss_gradient(x2, target, std::nullopt, o2.prob, d_loss, args);
      for (std::int64_t i = 0; i < x2.numel(); ++i) ASSERT_EQ(dx2.at(i), 0.0);
    }
  }
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(SingleClass);

}  // namespace
}  // namespace spatialsoftmax::testing
