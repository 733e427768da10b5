// The Highway spatial soft-argmax kernels (src/cpu/spatial_soft_argmax.cc)
// against the float64 scalar reference (core::reference), once per SIMD target
// this CPU supports (the test names carry the target), docs/semantics.md 4 and 5:
//  1. randomized shapes: channels 1..40, spatial rank 0..8 (mostly 0..4), sizes
//     around every target's lane counts, rows short enough to be merged and long
//     enough to be cut into pieces, both layouts, float32 and float64, beta != 1,
//     both coordinate modes, every output subset and every upstream subset;
//  2. the public API on non-contiguous and negatively strided inputs;
//  3. bitwise identity across 1, 2, 3 and 7 threads and across the two layouts;
//  4. NaN / +inf / -inf channels, logits that overflow a naive exp, P = 1, P = 0,
//     and temperatures outside the float32 kernel's range.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cpu/kernels.h"
#include "dispatch/backend.h"
#include "kernel_test_support.h"
#include "reference/problems.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing::spatial {
namespace {

// --- cases ------------------------------------------------------------------------------

// Sizes around the lane counts of every target (4, 8, 16 float32 lanes; 2, 4, 8
// float64), around the row length the kernel merges axes up to (64) and odd.
constexpr std::int64_t kSizes[] = {1,  2,  3,  4,  5,  7,  8,  9,   15,
                                   16, 17, 31, 33, 37, 63, 65, 127, 129};

Case random_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto pick = [&](auto const& list) {
    return list[rng() % (sizeof(list) / sizeof(list[0]))];
  };
  Case c;
  c.seed = seed;
  c.dtype = seed % 2 ? DType::kFloat64 : DType::kFloat32;
  c.channel_last = (seed / 2) % 2 == 1;
  c.batch = 1 + static_cast<std::int64_t>(rng() % 3);
  c.channels = 1 + static_cast<std::int64_t>(rng() % 40);
  const bool high_rank = seed % 13 == 0;
  const int k = high_rank ? 5 + static_cast<int>(rng() % 4) : static_cast<int>(rng() % 5);
  constexpr std::int64_t kTiny[] = {1, 2, 3};
  for (int a = 0; a < k; ++a) c.dims.push_back(high_rank ? pick(kTiny) : pick(kSizes));
  // At most about 3000 pixels and 40000 elements: the reference is slow.
  while (c.pixels() > 3000 || c.elements() > 40000) {
    auto largest = std::max_element(c.dims.begin(), c.dims.end());
    if (*largest > 1) {
      *largest = (*largest + 1) / 2;
    } else {
      c.channels = (c.channels + 1) / 2;
    }
  }
  constexpr double kBetas[] = {1, 0.37, 2.5, 13};
  constexpr double kRanges[] = {1, 8, 30};
  c.beta = pick(kBetas);
  c.pixel = rng() % 3 == 0;
  c.minus_one = rng() % 2 == 0;
  const double r = pick(kRanges);
  c.lo = -r;
  c.hi = r;
  return c;
}

// Shapes that the random draw seldom reaches: long rows cut into pieces
// (2048 pixels), rows merged from short axes, big images, rank 8.
std::vector<Case> fixed_cases() {
  std::vector<Case> cases;
  const std::vector<std::vector<std::int64_t>> dims = {
      {127, 129}, {5000}, {2049}, {37, 5}, {3, 3, 7}, {2, 1, 2, 1, 3, 1, 2, 1}, {1}, {}, {65, 1}};
  std::uint64_t seed = 1000;
  for (const auto& d : dims) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (bool last : {false, true}) {
        Case c;
        c.dims = d;
        c.dtype = dtype;
        c.channel_last = last;
        c.channels = d.size() == 2 && d[0] == 127 ? 3 : 37;
        c.batch = d.size() == 2 && d[0] == 127 ? 1 : 2;
        c.beta = 0.7;
        c.pixel = seed % 3 == 0;
        c.seed = seed++;
        cases.push_back(c);
      }
    }
  }
  return cases;
}

class SpatialKernelTest : public PerTarget {};

TEST_P(SpatialKernelTest, RandomShapesMatchTheFloat64Reference) {
  Report f32, f64;
  for (std::uint64_t seed = 1; seed <= 112; ++seed) {
    const Case c = random_case(seed);
    // Cycle through every output subset (1..7) and upstream subset (0..7, with
    // and without grad_beta).
    const int mask = 1 + static_cast<int>(seed % 7);
    const int grads = static_cast<int>(seed % 8) | (seed / 8 % 2 ? 0 : kBeta);
    check_case(make_inputs(c), mask, grads, c.dtype == DType::kFloat32 ? &f32 : &f64);
  }
  // Measured errors, as a multiple of the tolerance and as max |got - ref|.
  for (const auto& [name, r] : {std::pair{"float32", &f32}, std::pair{"float64", &f64}}) {
    std::cout << cpu::target_name(GetParam()) << " " << name << " worst error / tolerance"
              << " (max abs error): softmax " << r->softmax.ratio << " (" << r->softmax.abs_error
              << "), keypoints " << r->keypoints.ratio << " (" << r->keypoints.abs_error
              << "), covariance " << r->covariance.ratio << " (" << r->covariance.abs_error
              << "), grad_input " << r->grad.ratio << " (" << r->grad.abs_error << "), grad_beta "
              << r->grad_beta.ratio << " (" << r->grad_beta.abs_error << ")\n";
  }
}

TEST_P(SpatialKernelTest, FixedShapesMatchTheFloat64Reference) {
  for (const Case& c : fixed_cases()) {
    check_case(make_inputs(c), kAllOutputs, kAllOutputs | kBeta);
  }
}

TEST_P(SpatialKernelTest, EveryOutputAndUpstreamSubset) {
  const std::vector<std::vector<std::int64_t>> dims = {{9, 17}, {37, 5}, {3, 4, 5}, {70}};
  std::uint64_t seed = 2000;
  for (const auto& d : dims) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (bool last : {false, true}) {
        Case c;
        c.dims = d;
        c.dtype = dtype;
        c.channel_last = last;
        c.batch = 2;
        c.channels = 19;
        c.beta = 2.5;
        c.seed = seed++;
        const Inputs in = make_inputs(c);
        const Outputs ref = run_reference(in, false, kAllOutputs);
        for (int mask = 1; mask < 8; ++mask) check_forward(in, mask, ref);
        for (int grads = 0; grads < 16; ++grads) check_backward(in, grads);
      }
    }
  }
}

// With the layout the only difference, every output is bitwise equal (docs/semantics.md 1):
// the kernel keeps one order of operations per channel.
TEST_P(SpatialKernelTest, LayoutsAreBitwiseEqual) {
  const std::vector<std::vector<std::int64_t>> dims = {{33, 31},  {5000}, {37, 5},
                                                       {3, 3, 7}, {1},    {}};
  for (const auto& d : dims) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (std::int64_t channels : {1, 3, 37, 70}) {  // 70: two channel-last groups
        Case first;
        first.dims = d;
        first.dtype = dtype;
        first.batch = 2;
        first.channels = channels;
        first.beta = 0.6;
        first.seed = 77;
        Case last = first;
        last.channel_last = true;
        SCOPED_TRACE(first.str());
        const Inputs a = make_inputs(first);
        Inputs b = make_inputs(last);
        const core::Geometry& ga = a.geom;
        const auto to_last = [&](const std::vector<double>& v) {
          std::vector<double> out(v.size());
          for (std::int64_t n = 0; n < ga.batch; ++n) {
            for (std::int64_t c = 0; c < ga.classes; ++c) {
              for (std::int64_t p = 0; p < ga.pixels; ++p) {
                out[b.geom.offset(n, c, p)] = v[ga.offset(n, c, p)];
              }
            }
          }
          return out;
        };
        b.x = to_last(a.x);
        b.gs = to_last(a.gs);
        const int all = kAllOutputs;
        const Outputs fa = run_kernel(a, false, all), fb = run_kernel(b, false, all);
        EXPECT_EQ(fa.keypoints, fb.keypoints);
        EXPECT_EQ(fa.covariance, fb.covariance);
        EXPECT_EQ(to_last(fa.softmax), fb.softmax);
        const Outputs ba = run_kernel(a, true, all | kBeta), bb = run_kernel(b, true, all | kBeta);
        EXPECT_EQ(to_last(ba.grad_input), bb.grad_input);
        EXPECT_EQ(std::memcmp(&ba.grad_beta, &bb.grad_beta, sizeof(double)), 0)
            << ba.grad_beta << " vs " << bb.grad_beta;
      }
    }
  }
}

// Channel 0 has a NaN, 1 a +inf, 2 only -inf, 3 some -inf next to finite
// values, 4 is finite: the first three are NaN throughout, 3 has S = 0 at its
// -inf pixels, and nothing leaks into 4. The reference agrees element by element.
TEST_P(SpatialKernelTest, NonFiniteInputs) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (bool last : {false, true}) {
      for (const std::vector<std::int64_t>& d : {std::vector<std::int64_t>{9, 21}, {40}}) {
        Case c;
        c.dims = d;
        c.dtype = dtype;
        c.channel_last = last;
        c.batch = 2;
        c.channels = 5;
        c.seed = 5;
        SCOPED_TRACE(c.str());
        Inputs in = make_inputs(c);
        const core::Geometry& g = in.geom;
        const std::int64_t P = g.pixels;
        for (std::int64_t n = 0; n < g.batch; ++n) {
          in.x[g.offset(n, 0, P / 2)] = kNaN;
          in.x[g.offset(n, 1, 3)] = kInf;
          for (std::int64_t p = 0; p < P; ++p) in.x[g.offset(n, 2, p)] = -kInf;
          for (std::int64_t p = 0; p < P; p += 3) in.x[g.offset(n, 3, p)] = -kInf;
        }
        check_case(in, kAllOutputs, kAllOutputs | kBeta);
        const Outputs f = run_kernel(in, false, kAllOutputs);
        const Outputs b = run_kernel(in, true, kKeypoints | kCovariance | kBeta);
        const int k = c.k();
        for (std::int64_t n = 0; n < g.batch; ++n) {
          for (std::int64_t ch = 0; ch < 5; ++ch) {
            const bool nan = ch < 3;
            EXPECT_EQ(std::isnan(f.keypoints[(n * 5 + ch) * k]), nan) << "channel " << ch;
            EXPECT_EQ(std::isnan(f.covariance[(n * 5 + ch) * k * k]), nan) << "channel " << ch;
            for (std::int64_t p = 0; p < P; ++p) {
              const double s = f.softmax[g.offset(n, ch, p)], dx = b.grad_input[g.offset(n, ch, p)];
              ASSERT_EQ(std::isnan(s), nan) << "channel " << ch << " pixel " << p;
              ASSERT_EQ(std::isnan(dx), nan) << "channel " << ch << " pixel " << p;
              if (ch == 3 && p % 3 == 0) {
                EXPECT_EQ(s, 0.0);
                EXPECT_EQ(dx, 0.0);
              }
            }
          }
        }
        // As in the reference, NaN: the NaN channels, and 0 * (-inf) at the -inf pixels.
        EXPECT_TRUE(std::isnan(b.grad_beta));
      }
    }
  }
}

// Logits far above exp's range: without the max subtracted, exp overflows.
TEST_P(SpatialKernelTest, LargeLogitsNeedTheMaxShift) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (bool last : {false, true}) {
      Case c;
      c.dims = {17, 33};
      c.dtype = dtype;
      c.channel_last = last;
      c.batch = 2;
      c.channels = 9;
      c.beta = 1.5;
      c.lo = dtype == DType::kFloat32
                 ? 150
                 : 1000;  // float32 exp overflows above 88.7, float64 above 709.8
      c.hi = c.lo + 10;
      c.seed = 9;
      check_case(make_inputs(c), kAllOutputs, kAllOutputs | kBeta);
      const Outputs f = run_kernel(make_inputs(c), false, kKeypoints | kSoftmax);
      for (double v : f.softmax) ASSERT_TRUE(std::isfinite(v)) << c.str();
      for (double v : f.keypoints) ASSERT_TRUE(std::isfinite(v)) << c.str();
    }
  }
}

// P = 1 (rank 0 too): S = 1, the keypoint is the coordinate, covariance and dX
// are exactly 0 (docs/semantics.md 4). P = 0 and C = 0: zero keypoints, nothing else.
TEST_P(SpatialKernelTest, SinglePixelAndEmpty) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (bool last : {false, true}) {
      for (const std::vector<std::int64_t>& d : {std::vector<std::int64_t>{}, {1}, {1, 1}}) {
        for (bool minus_one : {false, true}) {
          Case c;
          c.dims = d;
          c.dtype = dtype;
          c.channel_last = last;
          c.batch = 3;
          c.channels = 21;
          c.minus_one = minus_one;
          SCOPED_TRACE(c.str());
          const Inputs in = make_inputs(c);
          const Outputs f = run_kernel(in, false, kAllOutputs);
          for (double s : f.softmax) EXPECT_EQ(s, 1.0);
          for (double e : f.keypoints) EXPECT_EQ(e, minus_one ? -1.0 : 0.0);
          for (double v : f.covariance) EXPECT_EQ(v, 0.0);
          const Outputs b = run_kernel(in, true, kAllOutputs | kBeta);
          for (double dx : b.grad_input) EXPECT_EQ(dx, 0.0);
          EXPECT_EQ(b.grad_beta, 0.0);
        }
      }
      Case empty;
      empty.dtype = dtype;
      empty.channel_last = last;
      empty.dims = {0, 3};
      empty.channels = 4;
      EXPECT_EQ(run_kernel(make_inputs(empty), false, kKeypoints | kCovariance).keypoints,
                std::vector<double>(4 * 2, 0.0));
      EXPECT_EQ(run_kernel(make_inputs(empty), true, kKeypoints | kBeta).grad_beta, 0.0);
      empty.dims = {3};
      empty.channels = 0;
      EXPECT_EQ(run_kernel(make_inputs(empty), true, kSoftmax | kBeta).grad_beta, 0.0);
    }
  }
}

// --- through the public API -------------------------------------------------------------

Tensor dense(const Inputs& in, const std::vector<double>& memory_order) {
  return testing::values(in.c.dtype, in.c.shape(), memory_order);
}

// A view of `t` whose batch axis runs backwards and whose last axis has
// stride 2; the storage between holds NaN.
Strided spread(const Tensor& t) {
  const Shape& shape = t.shape();
  Shape padded = shape;
  padded.back() *= 2;
  Shape strides = contiguous_strides(padded);
  strides.back() = 2;
  const std::int64_t base = (shape[0] - 1) * strides[0];
  strides[0] = -strides[0];
  Strided s;
  std::int64_t storage = 1;
  for (std::int64_t d : padded) storage *= d;
  s.storage = testing::filled(t.dtype(), {std::max<std::int64_t>(storage, 1)}, kNaN);
  for (std::int64_t flat = 0; flat < t.numel(); ++flat) {
    std::int64_t rem = flat, at = base;
    for (int a = t.rank() - 1; a >= 0; --a) {
      at += rem % shape[a] * strides[a];
      rem /= shape[a];
    }
    testing::set_element(s.storage, at, t.view().at(flat));
  }
  const std::size_t esize = dtype_size(t.dtype());
  s.view = TensorView(static_cast<const unsigned char*>(s.storage.data()) + base * esize, t.dtype(),
                      shape, strides);
  return s;
}

std::vector<double> elements(const Tensor& t) {
  std::vector<double> v(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) v[i] = t.view().at(i);
  return v;
}

SpatialSoftArgmaxOptions api_options(const Case& c, double temperature, TemperatureMode mode) {
  SpatialSoftArgmaxOptions o;
  o.channel_axis = c.channel_last ? ClassAxis::kLast : ClassAxis::kFirst;
  o.temperature = temperature;
  o.temperature_mode = mode;
  o.coordinates = c.pixel ? Coordinates::kPixel : Coordinates::kNormalized;
  o.singleton_coordinate =
      c.minus_one ? SingletonCoordinate::kMinusOne : SingletonCoordinate::kCenter;
  o.want_softmax = o.want_covariance = true;
  return o;
}

TEST(SpatialKernelDispatch, TheDefaultBackendRunsTheKernels) {
  if (const char* forced = std::getenv("SPATIALSOFTMAX_BACKEND"); forced && *forced) {
    GTEST_SKIP() << "SPATIALSOFTMAX_BACKEND=" << forced;
  }
  core::Geometry g;
  g.batch = g.classes = g.pixels = 1;
  EXPECT_EQ(
      dispatch::select(dispatch::Op::kSpatialSoftArgmax, g, DType::kFloat32, Device::cpu(), "test")
          .name(),
      "highway");
  EXPECT_EQ(dispatch::select(dispatch::Op::kSpatialSoftArgmaxBackward, g, DType::kFloat64,
                             Device::cpu(), "test")
                .name(),
            "highway");
}

// Non-contiguous, negatively strided inputs and upstream gradients give the
// dense inputs' results bit for bit, and those match the reference.
TEST_P(SpatialKernelTest, StridedInputsThroughTheApi) {
  std::uint64_t seed = 3000;
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (bool last : {false, true}) {
      for (TemperatureMode mode : {TemperatureMode::kDivide, TemperatureMode::kMultiply}) {
        Case c;
        c.dims = {13, 9};
        c.dtype = dtype;
        c.channel_last = last;
        c.batch = 3;
        c.channels = 11;
        c.pixel = mode == TemperatureMode::kMultiply;
        c.seed = seed++;
        const double temperature = 0.45;
        c.beta = mode == TemperatureMode::kDivide ? 1.0 / temperature : temperature;  // as the API
        SCOPED_TRACE(c.str());
        const Inputs in = make_inputs(c);
        const SpatialSoftArgmaxOptions o = api_options(c, temperature, mode);
        const Tensor x = dense(in, in.x), gs = dense(in, in.gs);
        const std::int64_t k = c.k();
        const Tensor gk = testing::values(dtype, {c.batch, c.channels, k}, in.gk);
        const Tensor gc = testing::values(dtype, {c.batch, c.channels, k, k}, in.gc);
        const Strided sx = spread(x), sgs = spread(gs), sgk = spread(gk), sgc = spread(gc);
        ASSERT_FALSE(sx.view.is_contiguous());

        const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, o);
        const SpatialSoftArgmaxResult rs = spatial_soft_argmax(sx.view, o);
        EXPECT_TRUE(testing::bitwise_equal(rs.keypoints, r.keypoints));
        EXPECT_TRUE(testing::bitwise_equal(rs.softmax, r.softmax));
        EXPECT_TRUE(testing::bitwise_equal(rs.covariance, r.covariance));
        EXPECT_TRUE(testing::bitwise_equal(spatial_softmax(sx.view, o), r.softmax));
        const SpatialSoftArgmaxBackward b =
            spatial_soft_argmax_backward(x, {gk.view(), gs.view(), gc.view()}, o);
        const SpatialSoftArgmaxBackward bs =
            spatial_soft_argmax_backward(sx.view, {sgk.view, sgs.view, sgc.view}, o);
        EXPECT_TRUE(testing::bitwise_equal(bs.grad_input, b.grad_input));
        EXPECT_EQ(std::memcmp(&bs.grad_temperature, &b.grad_temperature, sizeof(double)), 0);

        const Outputs ref = run_reference(in, false, kAllOutputs);
        expect_close(elements(r.keypoints), ref.keypoints, keypoint_tol(c), "keypoints");
        expect_close(elements(r.softmax), ref.softmax, softmax_tol(c), "softmax");
        expect_close(elements(r.covariance), ref.covariance, covariance_tol(c), "covariance");
        const Outputs ref_b = run_reference(in, true, kAllOutputs | kBeta);
        expect_close(elements(b.grad_input), ref_b.grad_input, grad_tol(c, ref_b.grad_input),
                     "grad_input");
        const double dbeta_dt =
            mode == TemperatureMode::kDivide ? -1 / (temperature * temperature) : 1.0;
        Tolerance t = grad_beta_tol(in, ref_b.grad_input);
        t.atol *= std::abs(dbeta_dt);
        expect_close({b.grad_temperature}, {ref_b.grad_beta * dbeta_dt}, t, "grad_temperature");
      }
    }
  }
}

// Every output is bitwise identical for 1, 2, 3 and 7 threads.
TEST_P(SpatialKernelTest, BitwiseAcrossThreadCounts) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (bool last : {false, true}) {
      Case c;
      c.dims = {33, 65};
      c.dtype = dtype;
      c.channel_last = last;
      c.batch = 4;
      c.channels = 24;
      c.seed = 4000;
      SCOPED_TRACE(c.str());
      const Inputs in = make_inputs(c);
      const SpatialSoftArgmaxOptions o = api_options(c, 0.8, TemperatureMode::kDivide);
      const Tensor x = dense(in, in.x), gs = dense(in, in.gs);
      const Tensor gk = testing::values(dtype, {c.batch, c.channels, 2}, in.gk);
      const Tensor gc = testing::values(dtype, {c.batch, c.channels, 2, 2}, in.gc);
      const SpatialSoftArgmaxGrads grads{gk.view(), gs.view(), gc.view()};
      ScopedThreads single(1);
      const SpatialSoftArgmaxResult one = spatial_soft_argmax(x, o);
      const SpatialSoftArgmaxBackward one_b = spatial_soft_argmax_backward(x, grads, o);
      for (int threads : {2, 3, 7}) {
        SCOPED_TRACE("threads " + std::to_string(threads));
        ScopedThreads scoped(threads);
        const SpatialSoftArgmaxResult r = spatial_soft_argmax(x, o);
        const SpatialSoftArgmaxBackward b = spatial_soft_argmax_backward(x, grads, o);
        EXPECT_TRUE(testing::bitwise_equal(r.keypoints, one.keypoints));
        EXPECT_TRUE(testing::bitwise_equal(r.softmax, one.softmax));
        EXPECT_TRUE(testing::bitwise_equal(r.covariance, one.covariance));
        EXPECT_TRUE(testing::bitwise_equal(b.grad_input, one_b.grad_input));
        EXPECT_EQ(std::memcmp(&b.grad_temperature, &one_b.grad_temperature, sizeof(double)), 0);
      }
    }
  }
}

// float32 runs the kernel for beta in [2^-100, 2^100] and the reference outside
// it; both ends agree with the float64 reference.
TEST_P(SpatialKernelTest, TemperaturesAtTheFloat32Limits) {
  for (double beta : {0x1p-100, 0x1p100, 0x1p-101, 0x1p101, 1e-35, 1e35}) {
    Case c;
    c.dims = {7, 19};
    c.channels = 6;
    c.beta = beta;
    c.lo = -3 / beta;  // beta (x - max) in [-6, 0]
    c.hi = 3 / beta;
    c.seed = 6000;
    const Inputs in = make_inputs(c);
    core::SpatialSoftArgmaxProblem<float> pb;
    pb.beta = beta;
    EXPECT_EQ(cpu::runs(pb), beta >= 0x1p-100 && beta <= 0x1p100) << beta;
    const SpatialSoftArgmaxOptions o = api_options(c, beta, TemperatureMode::kMultiply);
    const SpatialSoftArgmaxResult r = spatial_soft_argmax(dense(in, in.x), o);
    const Outputs ref = run_reference(in, false, kKeypoints | kSoftmax);
    SCOPED_TRACE(c.str());
    expect_close(elements(r.softmax), ref.softmax, softmax_tol(c), "softmax");
    expect_close(elements(r.keypoints), ref.keypoints, keypoint_tol(c), "keypoints");
  }
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(SpatialKernelTest);

}  // namespace
}  // namespace spatialsoftmax::testing::spatial
