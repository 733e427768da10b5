// bfloat16 and float16: the conversions (every bit pattern, ties, NaN,
// overflow; the SIMD ones on every target against the scalar ones), and
// every loss-family operation on 16-bit tensors against the float64
// reference run on the same values widened, at the tolerances stated below;
// results bitwise the same at every thread count; the errors.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "spatialsoftmax/caffe2.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

// --- conversions -----------------------------------------------------------------

float bf16_value(std::uint16_t bits) { return to_float(BFloat16{bits}); }
float f16_value(std::uint16_t bits) { return to_float(Float16{bits}); }
bool is_nan_bits_bf16(std::uint16_t b) { return (b & 0x7F80u) == 0x7F80u && (b & 0x7Fu) != 0; }
bool is_nan_bits_f16(std::uint16_t b) { return (b & 0x7C00u) == 0x7C00u && (b & 0x3FFu) != 0; }

TEST(SixteenBitConversions, Float16WideningIsTheIeeeValue) {
  EXPECT_EQ(f16_value(0x3C00), 1.0f);
  EXPECT_EQ(f16_value(0xC000), -2.0f);
  EXPECT_EQ(f16_value(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_value(0x0001), std::ldexp(1.0f, -24));  // the smallest subnormal
  EXPECT_EQ(f16_value(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_value(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(f16_value(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(f16_value(0x8000)));
  EXPECT_TRUE(std::isnan(f16_value(0x7E00)));
  EXPECT_TRUE(std::isnan(f16_value(0x7C01)));  // a signalling NaN widens to a quiet one
  EXPECT_EQ(std::bit_cast<std::uint32_t>(f16_value(0x7C01)), 0x7FC02000u);
  // Every finite half is an exact float: value = (-1)^s * m * 2^(e - 25).
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const std::uint32_t e = bits >> 10 & 0x1F, m = bits & 0x3FF;
    if (e == 0x1F) continue;
    const double want =
        (bits & 0x8000 ? -1.0 : 1.0) *
        (e == 0 ? std::ldexp(m, -24) : std::ldexp(1024.0 + m, static_cast<int>(e) - 25));
    ASSERT_EQ(static_cast<double>(f16_value(bits)), want) << std::hex << b;
  }
}

// Narrowing: each 16-bit value comes back to itself, a value halfway
// between two neighbours goes to the one with an even last bit, and a
// value a float step off the middle goes to the nearer one.
template <class Narrow, class Widen, class IsNan>
void check_round_to_nearest_even(Narrow narrow, Widen widen, IsNan is_nan, std::uint16_t largest) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    if (is_nan(bits)) {
      ASSERT_TRUE(is_nan(narrow(widen(bits)))) << std::hex << b;
      continue;
    }
    ASSERT_EQ(narrow(widen(bits)), bits) << std::hex << b;
    const std::uint16_t magnitude = bits & 0x7FFF;
    if (magnitude >= largest) continue;
    const auto next = static_cast<std::uint16_t>(bits + 1);  // the neighbour away from 0
    const float lo = widen(bits), hi = widen(next);
    const float middle = lo + (hi - lo) / 2;  // exact: floats have more bits than both types
    ASSERT_EQ(narrow(middle), (bits & 1) ? next : bits) << std::hex << b;
    ASSERT_EQ(narrow(std::nextafter(middle, lo)), bits) << std::hex << b;
    ASSERT_EQ(narrow(std::nextafter(middle, hi)), next) << std::hex << b;
  }
}

TEST(SixteenBitConversions, NarrowingRoundsToNearestEven) {
  check_round_to_nearest_even([](float v) { return to_bfloat16(v).bits; }, bf16_value,
                              is_nan_bits_bf16, 0x7F7F);
  check_round_to_nearest_even([](float v) { return to_float16(v).bits; }, f16_value,
                              is_nan_bits_f16, 0x7BFF);
}

TEST(SixteenBitConversions, OverflowIsInfinityAndNanStaysNan) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(to_float16(65519.99f).bits, 0x7BFF);  // below the middle to 2^16
  EXPECT_EQ(to_float16(65520.0f).bits, 0x7C00);   // the middle: to even, infinity
  EXPECT_EQ(to_float16(-1e10f).bits, 0xFC00);
  EXPECT_EQ(to_float16(inf).bits, 0x7C00);
  EXPECT_EQ(to_bfloat16(std::numeric_limits<float>::max()).bits, 0x7F80);
  EXPECT_EQ(to_bfloat16(-inf).bits, 0xFF80);
  EXPECT_TRUE(std::isnan(to_float(to_bfloat16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lies in the dropped bits only stays a NaN.
  EXPECT_TRUE(std::isnan(to_float(to_bfloat16(std::bit_cast<float>(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(to_float(to_float16(std::bit_cast<float>(0x7F800001u)))));
  EXPECT_EQ(to_float16(std::ldexp(1.0f, -26)).bits, 0x0000);  // a quarter of the smallest
  EXPECT_EQ(to_float16(std::ldexp(3.0f, -26)).bits, 0x0001);
}

class SixteenBitSimdConversions : public PerTarget {};

TEST_P(SixteenBitSimdConversions, MatchTheScalarOnesBitForBit) {
  // Every 16-bit pattern widened, at every offset modulo a vector.
  std::vector<BFloat16> bf(0x10000 + 7);
  std::vector<Float16> hf(bf.size());
  for (std::size_t i = 0; i < bf.size(); ++i) {
    bf[i].bits = hf[i].bits = static_cast<std::uint16_t>(i * 40503u);
  }
  std::vector<float> wide(bf.size());
  cpu::widen(bf.data(), wide.data(), static_cast<std::int64_t>(bf.size()));
  for (std::size_t i = 0; i < bf.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(wide[i]), std::bit_cast<std::uint32_t>(to_float(bf[i])))
        << i;
  }
  cpu::widen(hf.data(), wide.data(), static_cast<std::int64_t>(hf.size()));
  for (std::size_t i = 0; i < hf.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(wide[i]), std::bit_cast<std::uint32_t>(to_float(hf[i])))
        << i;
  }
  // Floats: random bits (every exponent, NaNs, infinities, subnormals) and
  // the exact middles between 16-bit neighbours.
  std::mt19937 rng(7);
  std::vector<float> floats;
  for (int i = 0; i < 100000; ++i)
    floats.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(rng())));
  for (std::uint32_t b = 0; b < 0x7C00; b += 3) {
    floats.push_back(
        (f16_value(static_cast<std::uint16_t>(b)) + f16_value(static_cast<std::uint16_t>(b + 1))) /
        2);
    floats.push_back(-(bf16_value(static_cast<std::uint16_t>(b)) +
                       bf16_value(static_cast<std::uint16_t>(b + 1))) /
                     2);
  }
  const auto n = static_cast<std::int64_t>(floats.size());
  std::vector<BFloat16> to_bf(floats.size());
  std::vector<Float16> to_hf(floats.size());
  cpu::narrow(floats.data(), to_bf.data(), n);
  cpu::narrow(floats.data(), to_hf.data(), n);
  for (std::size_t i = 0; i < floats.size(); ++i) {
    ASSERT_EQ(to_bf[i].bits, to_bfloat16(floats[i]).bits) << floats[i];
    ASSERT_EQ(to_hf[i].bits, to_float16(floats[i]).bits) << floats[i];
  }
}
SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(SixteenBitSimdConversions);

// --- operations -------------------------------------------------------------------

// A 16-bit result against the float64 reference on the same inputs: one
// rounding to the type (relative 2^-8 bfloat16, 2^-11 float16, given twice
// over; float16's subnormals are 2^-24 apart) plus float32 arithmetic (1e-5
// of the output's largest value).
void expect_close_16(const Tensor& got, const Tensor& want, DType dtype, const std::string& what) {
  ASSERT_EQ(got.dtype(), dtype) << what;
  ASSERT_EQ(want.dtype(), DType::kFloat64) << what;
  const double unit = dtype == DType::kBFloat16 ? 0x1p-8 : 0x1p-11;
  std::string why;
  const double subnormal_step = dtype == DType::kFloat16 ? 0x1p-24 : 0.0;
  EXPECT_TRUE(all_close(got.view(), want.view(), 2 * unit,
                        1e-5 * max_abs(want.view()) + subnormal_step, &why))
      << what << " (" << dtype_name(dtype) << "): " << why;
}

Tensor wide(const Tensor& t) { return t.to(DType::kFloat64); }

struct Geometry16 {
  Shape shape;
  bool class_last = false;
};

// (dtype, shape) per test; the shapes cross the staging blocks (16384 values).
class SixteenBitOps : public PerTargetWith<std::tuple<DType, Geometry16>> {
 protected:
  DType dtype() const { return std::get<0>(value()); }
  const Shape& shape() const { return std::get<1>(value()).shape; }
  ClassAxis axis() const {
    return std::get<1>(value()).class_last ? ClassAxis::kLast : ClassAxis::kFirst;
  }
  std::int64_t classes() const { return axis() == ClassAxis::kLast ? shape().back() : shape()[1]; }
  Shape map_shape() const {
    Shape m = shape();
    m.erase(m.begin() +
            (axis() == ClassAxis::kLast ? static_cast<std::ptrdiff_t>(m.size() - 1) : 1));
    return m;
  }
  Tensor logits(std::uint64_t seed) const { return random_uniform(dtype(), shape(), -6, 6, seed); }
  Tensor labels_with_ignored(std::uint64_t seed) const {
    Tensor y = random_labels(DType::kInt64, map_shape(), classes(), seed);
    for (std::int64_t i = 0; i < y.numel(); i += 7) y.data_as<std::int64_t>()[i] = -100;
    return y;
  }
  // Rows of probabilities (each sums to 1 in float64 before rounding).
  Tensor probabilities(std::uint64_t seed) const {
    return softmax(random_uniform(DType::kFloat64, shape(), -2, 2, seed).view(), axis())
        .to(dtype());
  }
};

TEST_P(SixteenBitOps, CrossEntropyEveryOptionMatchesTheReference) {
  const Tensor x = logits(1), y = labels_with_ignored(2);
  const Tensor w = random_uniform(dtype(), {classes()}, 0.5, 2, 3);
  const Tensor a = random_uniform(dtype(), map_shape(), 0, 1, 4);
  for (const Reduction reduction : {Reduction::kMean, Reduction::kSum}) {
    for (const bool weighted : {false, true}) {
      SCOPED_TRACE(std::string(reduction == Reduction::kMean ? "mean" : "sum") +
                   (weighted ? ", weighted" : ""));
      const auto run = [&](bool reference) {
        const auto in = [&](const Tensor& t) { return reference ? wide(t) : t.to(t.dtype()); };
        const Tensor xs = in(x), ws = in(w), as = in(a);
        CrossEntropyOptions o = CrossEntropyOptions::pytorch();
        o.class_axis = axis();
        o.reduction = reduction;
        o.label_smoothing = 0.1;
        o.want_prob = o.want_log_prob = o.want_entropy = true;
        if (weighted) {
          o.class_weight = ws.view();
          o.pixel_weight = as.view();
        }
        std::optional<ScopedBackend> backend;
        if (reference) backend.emplace("reference");
        return cross_entropy_forward_backward(xs.view(), y.view(), o);
      };
      const CrossEntropyResult got = run(false), want = run(true);
      expect_close_16(got.loss, want.loss, dtype(), "loss");
      expect_close_16(got.prob, want.prob, dtype(), "prob");
      expect_close_16(got.log_prob, want.log_prob, dtype(), "log_prob");
      expect_close_16(got.entropy, want.entropy, dtype(), "entropy");
      expect_close_16(got.grad_logits, want.grad_logits, dtype(), "grad_logits");
    }
  }
}

// The plain problems (index targets, no smoothing; loss, P, dX), which the
// tile kernel reads and writes in 16 bits itself.
TEST_P(SixteenBitOps, PlainCrossEntropyMatchesTheReference) {
  const Tensor x = logits(31), y = labels_with_ignored(32);
  const Tensor w = random_uniform(dtype(), {classes()}, 0.5, 2, 33);
  const Tensor a = random_uniform(dtype(), map_shape(), 0, 1, 34);
  const Tensor g_loss = random_uniform(dtype(), map_shape(), -1, 1, 35);
  for (const Reduction reduction : {Reduction::kMean, Reduction::kSum, Reduction::kNone}) {
    for (const bool weighted : {false, true}) {
      SCOPED_TRACE(std::to_string(static_cast<int>(reduction)) + (weighted ? ", weighted" : ""));
      const auto run = [&](bool reference) {
        const auto in = [&](const Tensor& t) { return reference ? wide(t) : t.to(t.dtype()); };
        const Tensor xs = in(x), ws = in(w), as = in(a), gl = in(g_loss);
        CrossEntropyOptions o = CrossEntropyOptions::pytorch();
        o.class_axis = axis();
        o.reduction = reduction;
        o.want_prob = true;
        if (weighted) {
          o.class_weight = ws.view();
          o.pixel_weight = as.view();
        }
        CrossEntropyGrads grads;
        if (reduction == Reduction::kNone) grads.loss = gl.view();
        std::optional<ScopedBackend> backend;
        if (reference) backend.emplace("reference");
        return cross_entropy_forward_backward(xs.view(), y.view(), o, grads);
      };
      const CrossEntropyResult got = run(false), want = run(true);
      expect_close_16(got.loss, want.loss, dtype(), "loss");
      expect_close_16(got.prob, want.prob, dtype(), "prob");
      expect_close_16(got.grad_logits, want.grad_logits, dtype(), "grad_logits");
    }
  }
}

TEST_P(SixteenBitOps, CrossEntropyMapsAndUpstreamGradientsMatchTheReference) {
  const Tensor x = logits(5), y = labels_with_ignored(6), t = probabilities(7);
  const Tensor g_loss = random_uniform(dtype(), map_shape(), -1, 1, 8);
  const Tensor g_prob = random_uniform(dtype(), shape(), -1, 1, 9);
  const Tensor g_entropy = random_uniform(dtype(), map_shape(), -1, 1, 10);
  for (const bool soft : {false, true}) {
    SCOPED_TRACE(soft ? "probability targets" : "index targets");
    const auto run = [&](bool reference) {
      const auto in = [&](const Tensor& v) { return reference ? wide(v) : v.to(v.dtype()); };
      const Tensor xs = in(x), ts = in(t), gl = in(g_loss), gp = in(g_prob), gh = in(g_entropy);
      CrossEntropyOptions o = soft ? CrossEntropyOptions{} : CrossEntropyOptions::pytorch();
      o.class_axis = axis();
      o.reduction = Reduction::kNone;
      o.want_entropy = true;
      CrossEntropyGrads grads;
      grads.loss = gl.view();
      grads.prob = gp.view();
      grads.entropy = gh.view();
      std::optional<ScopedBackend> backend;
      if (reference) backend.emplace("reference");
      return cross_entropy_forward_backward(xs.view(), soft ? ts.view() : y.view(), o, grads);
    };
    const CrossEntropyResult got = run(false), want = run(true);
    expect_close_16(got.loss, want.loss, dtype(), "loss map");
    expect_close_16(got.entropy, want.entropy, dtype(), "entropy");
    expect_close_16(got.grad_logits, want.grad_logits, dtype(), "grad_logits");
  }
}

// Each operation on 16-bit inputs against the reference on the same values
// widened: a backward's or an NLL's 16-bit input (P, logP) comes from the
// 16-bit forward, and the reference gets that same rounded input.
TEST_P(SixteenBitOps, SoftmaxNllAndKlMatchTheReference) {
  const ClassAxis ax = axis();
  const Tensor x = logits(11), y = labels_with_ignored(12), t = probabilities(13);
  const Tensor g = random_uniform(dtype(), shape(), -1, 1, 14);
  const Tensor one = Tensor::scalar(dtype(), 1);
  const Tensor p = softmax(x.view(), ax), logp = log_softmax(x.view(), ax);
  const Tensor log_t = log_softmax(t.view(), ax);
  const auto both = [&](auto&& f, const char* what) {
    const Tensor got = f([](const Tensor& v) { return v.view(); });
    Tensor want;
    {
      const ScopedBackend reference("reference");
      std::vector<Tensor> widened;
      widened.reserve(4);
      want = f([&](const Tensor& v) { return widened.emplace_back(wide(v)).view(); });
    }
    expect_close_16(got, want, dtype(), what);
  };
  both([&](auto in) { return softmax(in(x), ax); }, "softmax");
  both([&](auto in) { return log_softmax(in(x), ax); }, "log_softmax");
  both([&](auto in) { return softmax_backward(in(p), in(g), ax); }, "softmax_backward");
  both([&](auto in) { return log_softmax_backward(in(logp), in(g), ax); }, "log_softmax_backward");
  CrossEntropyOptions nll = CrossEntropyOptions::pytorch();
  nll.class_axis = ax;
  both([&](auto in) { return nll_loss(in(logp), y.view(), nll); }, "nll_loss");
  both([&](auto in) { return nll_loss_backward(in(logp), y.view(), in(one), nll); },
       "nll_loss_backward");
  KlDivOptions kl;
  kl.class_axis = ax;
  kl.reduction = Reduction::kBatchMean;
  both([&](auto in) { return kl_div(in(x), in(t), kl); }, "kl_div");
  both([&](auto in) { return kl_div_backward(in(x), in(t), in(one), kl); }, "kl_div_backward");
  kl.reduction = Reduction::kNone;
  kl.log_target = true;
  both([&](auto in) { return kl_div(in(x), in(log_t), kl); }, "kl_div log_target none");
  both([&](auto in) { return kl_div_backward(in(x), in(log_t), in(g), kl); },
       "kl_div_backward log_target none");
}

TEST_P(SixteenBitOps, BitwiseTheSameAtEveryThreadCountAndInPlace) {
  const Tensor x = logits(18), y = labels_with_ignored(19);
  CrossEntropyOptions o = CrossEntropyOptions::pytorch();
  o.class_axis = axis();
  o.want_prob = true;
  const auto run = [&](int threads) {
    ExecutionContext context;
    context.num_threads = threads;
    return cross_entropy_forward_backward(x.view(), y.view(), o, {}, context);
  };
  const CrossEntropyResult one = run(1), two = run(2), three = run(3);
  for (const CrossEntropyResult* r : {&two, &three}) {
    EXPECT_TRUE(bitwise_equal(r->loss, one.loss));
    EXPECT_TRUE(bitwise_equal(r->prob, one.prob));
    EXPECT_TRUE(bitwise_equal(r->grad_logits, one.grad_logits));
  }
  o.want_prob = false;
  const CrossEntropyResult in_place =
      cross_entropy_forward_backward_in_place(x.to(x.dtype()), y.view(), o);
  EXPECT_TRUE(bitwise_equal(in_place.grad_logits, one.grad_logits));
  EXPECT_TRUE(bitwise_equal(in_place.loss, one.loss));
}

std::vector<Geometry16> geometries() {
  return {
      {{2, 5, 3, 7}, false},     // less than a block
      {{2, 19, 40, 30}, false},  // several blocks per image
      {{3, 40, 19}, true},       // class-last
      {{2, 24, 24, 19}, true},   // class-last, several blocks
      {{70, 3}, false},          // one pixel: blocks across the batch
      {{2, 300, 9}, false},      // many classes: the row kernels
      {{5, 20000}, false},       // a block per row
  };
}

std::string param_name(
    const ::testing::TestParamInfo<std::tuple<std::int64_t, std::tuple<DType, Geometry16>>>& info) {
  const auto& [dtype, g] = std::get<1>(info.param);
  std::string name = target_test_name(std::get<0>(info.param));
  name.append("_").append(dtype_name(dtype));
  for (const std::int64_t d : g.shape) name.append("_").append(std::to_string(d));
  if (g.class_last) name.append("_last");
  return name;
}

INSTANTIATE_TEST_SUITE_P(Targets, SixteenBitOps,
                         ::testing::Combine(::testing::ValuesIn(simd_targets()),
                                            ::testing::Combine(::testing::Values(DType::kBFloat16,
                                                                                 DType::kFloat16),
                                                               ::testing::ValuesIn(geometries()))),
                         param_name);

// Caffe2's operator on (N, D, H, W), several staging blocks per image.
class SixteenBitCaffe2 : public PerTargetWith<DType> {};

TEST_P(SixteenBitCaffe2, SpatialSoftmaxWithLossMatchesTheReference) {
  const DType dtype = value();
  Tensor y = random_labels(DType::kInt32, {2, 40, 30}, 19, 15);
  for (std::int64_t i = 0; i < y.numel(); i += 5) y.data_as<std::int32_t>()[i] = -1;
  const Tensor x = random_uniform(dtype, {2, 19, 40, 30}, -6, 6, 16);
  const Tensor w = random_uniform(dtype, {2, 40, 30}, 0, 2, 17);
  const Tensor d_loss = Tensor::scalar(dtype, 0.75);
  const auto fwd = caffe2::spatial_softmax_with_loss(x.view(), y.view(), w.view());
  const Tensor dx = caffe2::spatial_softmax_with_loss_gradient(x.view(), y.view(), w.view(),
                                                               fwd.prob.view(), d_loss.view());
  const ScopedBackend reference("reference");
  const auto fwd64 = caffe2::spatial_softmax_with_loss(wide(x).view(), y.view(), wide(w).view());
  expect_close_16(fwd.prob, fwd64.prob, dtype, "P");
  expect_close_16(fwd.loss, fwd64.loss, dtype, "avg_loss");
  // The gradient is computed from the P it is given: the same 16-bit P.
  const Tensor dx64 = caffe2::spatial_softmax_with_loss_gradient(
      wide(x).view(), y.view(), wide(w).view(), wide(fwd.prob).view(), wide(d_loss).view());
  expect_close_16(dx, dx64, dtype, "dX");
}

INSTANTIATE_TEST_SUITE_P(Targets, SixteenBitCaffe2,
                         ::testing::Combine(::testing::ValuesIn(simd_targets()),
                                            ::testing::Values(DType::kBFloat16, DType::kFloat16)),
                         [](const auto& param_info) {
                           return target_test_name(std::get<0>(param_info.param)) + "_" +
                                  std::string(dtype_name(std::get<1>(param_info.param)));
                         });

// Outputs of 16 MiB and more are streamed past the cache: both layouts.
TEST(SixteenBitStreaming, LargePlainCrossEntropyMatchesTheReference) {
  for (const bool class_last : {false, true}) {
    SCOPED_TRACE(class_last ? "class last" : "class first");
    const Shape shape = class_last ? Shape{1, 1500, 1900, 3} : Shape{1, 3, 1500, 1900};
    const Tensor x = random_uniform(DType::kBFloat16, shape, -6, 6, 40);
    const Tensor y = random_labels(DType::kInt64, {1, 1500, 1900}, 3, 41);
    CrossEntropyOptions o;
    o.class_axis = class_last ? ClassAxis::kLast : ClassAxis::kFirst;
    const CrossEntropyResult got = cross_entropy_forward_backward(x.view(), y.view(), o);
    const ScopedBackend reference("reference");
    const CrossEntropyResult want = cross_entropy_forward_backward(wide(x).view(), y.view(), o);
    expect_close_16(got.loss, want.loss, DType::kBFloat16, "loss");
    expect_close_16(got.grad_logits, want.grad_logits, DType::kBFloat16, "grad_logits");
  }
}

// --- errors -------------------------------------------------------------------------

TEST(SixteenBitErrors, MixedDtypesAndBadLabelsAreNamed) {
  const Tensor x = random_uniform(DType::kBFloat16, {2, 4, 3}, -1, 1, 20);
  Tensor y = random_labels(DType::kInt64, {2, 3}, 4, 21);
  const Tensor w32 = filled(DType::kFloat32, {4}, 1);
  CrossEntropyOptions o;
  o.class_weight = w32.view();
  EXPECT_ERROR_MENTIONS(
      cross_entropy(x.view(), y.view(), o),
      {"cross_entropy", "class_weight", "bfloat16 (the logits' dtype)", "got float32"});
  y.data_as<std::int64_t>()[4] = 9;
  EXPECT_ERROR_MENTIONS(cross_entropy(x.view(), y.view()), {"cross_entropy", "targets", "9"});
  EXPECT_ERROR_MENTIONS(spatial_soft_argmax(x.view()), {"spatial_soft_argmax", "input dtype",
                                                        "float32 or float64", "got bfloat16"});
}

}  // namespace
}  // namespace spatialsoftmax::testing
