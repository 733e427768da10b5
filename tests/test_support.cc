#include "test_support.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "cpu/kernels.h"

namespace spatialsoftmax::testing {

std::filesystem::path conformance_dir() {
  if (const char* env = std::getenv("SPATIALSOFTMAX_CONFORMANCE_DIR"); env && *env) return env;
  return SPATIALSOFTMAX_CONFORMANCE_DIR;
}

std::filesystem::path cli_path() { return SPATIALSOFTMAX_CLI_PATH; }

Tensor random_uniform(DType dtype, Shape shape, double lo, double hi, std::uint64_t seed) {
  Tensor t(dtype, std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) set_element(t, i, dist(rng));
  return t;
}

Tensor random_labels(DType dtype, Shape shape, std::int64_t classes, std::uint64_t seed) {
  Tensor t(dtype, std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> dist(0, classes - 1);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::kInt32) {
      t.data_as<std::int32_t>()[i] = static_cast<std::int32_t>(dist(rng));
    } else {
      t.data_as<std::int64_t>()[i] = dist(rng);
    }
  }
  return t;
}

void set_element(Tensor& t, std::int64_t flat, double value) {
  switch (t.dtype()) {
    case DType::kFloat32:
      t.data_as<float>()[flat] = static_cast<float>(value);
      break;
    case DType::kFloat64:
      t.data_as<double>()[flat] = value;
      break;
    case DType::kInt32:
      t.data_as<std::int32_t>()[flat] = static_cast<std::int32_t>(value);
      break;
    case DType::kInt64:
      t.data_as<std::int64_t>()[flat] = static_cast<std::int64_t>(value);
      break;
    case DType::kBFloat16:
      t.data_as<BFloat16>()[flat] = to_bfloat16(static_cast<float>(value));
      break;
    case DType::kFloat16:
      t.data_as<Float16>()[flat] = to_float16(static_cast<float>(value));
      break;
  }
}

Tensor filled(DType dtype, Shape shape, double value) {
  Tensor t(dtype, std::move(shape));
  for (std::int64_t i = 0; i < t.numel(); ++i) set_element(t, i, value);
  return t;
}

Tensor values(DType dtype, Shape shape, const std::vector<double>& values) {
  Tensor t(dtype, std::move(shape));
  EXPECT_EQ(static_cast<std::size_t>(t.numel()), values.size())
      << "values() for " << shape_string(t.shape());
  for (std::int64_t i = 0; i < t.numel() && static_cast<std::size_t>(i) < values.size(); ++i) {
    set_element(t, i, values[static_cast<std::size_t>(i)]);
  }
  return t;
}

bool close_enough(double got, double want, const Tolerance& t) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::abs(got - want) <= t.atol + t.rtol * std::abs(want);
}

bool all_close(const TensorView& got, const TensorView& want, double rtol, double atol,
               std::string* why) {
  auto fail = [&](const std::string& text) {
    if (why) *why = text;
    return false;
  };
  if (got.shape() != want.shape()) {
    return fail("shape " + shape_string(got.shape()) + " != expected " +
                shape_string(want.shape()));
  }
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.at(i);
    const double w = want.at(i);
    if (!close_enough(g, w, {rtol, atol})) {
      std::ostringstream out;
      out.precision(17);
      out << "element " << i << ": got " << g << ", expected " << w << " (atol " << atol
          << ", rtol " << rtol << ")";
      return fail(out.str());
    }
  }
  return true;
}

double max_abs(const TensorView& t) {
  double m = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t.at(i)));
  return m;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

Tolerance conformance_tolerance(std::string_view op, std::string_view name,
                                const TensorView& want) {
  // Gradients: atol relative to the largest expected magnitude, so an
  // all-zero expected gradient must be reproduced as exact zeros.
  if (name == "grad_input" || name == "dX") return {1e-5, 1e-6 * max_abs(want)};
  // ONNX cases have no float64 twin: their own float32 values at 1e-5.
  if (op == "SoftmaxCrossEntropyLoss" || op == "NegativeLogLikelihoodLoss") return {1e-5, 1e-5};
  if (op == "spatial_soft_argmax" && name == "output") return {0.0, 1e-5};  // keypoints
  // Losses and other scalars (a reduced `output` is 0-d).
  if (name == "loss" || name == "avg_loss" || want.rank() == 0) return {1e-5, 1e-6};
  // Per-position maps, probabilities, log-probabilities, softmax outputs,
  // KL maps.
  return {1e-5, 1e-5};
}

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
  if (const char* old = std::getenv(name)) old_ = old;
  if (value) {
    ::setenv(name, value, 1);
  } else {
    ::unsetenv(name);
  }
}

ScopedEnv::~ScopedEnv() {
  if (old_) {
    ::setenv(name_, old_->c_str(), 1);
  } else {
    ::unsetenv(name_);
  }
}

std::vector<std::int64_t> simd_targets() { return cpu::supported_targets(); }

std::string simd_target_name(std::int64_t target) { return cpu::target_name(target); }

ScopedTarget::ScopedTarget(std::int64_t target) { cpu::use_only_target_for_test(target); }

ScopedTarget::~ScopedTarget() { cpu::use_only_target_for_test(0); }

std::string target_test_name(std::int64_t target) {
  std::string name = cpu::target_name(target);
  for (char& ch : name) {
    const bool ok =
        (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
    if (!ok) ch = '_';
  }
  // gtest rejects an empty name; a target Highway cannot name gets its bit.
  if (name.empty()) {
    std::ostringstream bit;
    bit << "target_0x" << std::hex << target;
    return bit.str();
  }
  return name;
}

std::string target_param_name(const ::testing::TestParamInfo<std::int64_t>& info) {
  return target_test_name(info.param);
}

}  // namespace spatialsoftmax::testing

namespace spatialsoftmax::op::test {

Tensor probabilities(Shape shape, int axis, std::uint64_t seed) {
  Tensor t = rnd(shape, seed, 0.1, 1.0);
  const auto a = static_cast<std::size_t>(axis < 0 ? axis + static_cast<int>(shape.size()) : axis);
  std::int64_t outer = 1, len = shape[a], inner = 1;
  for (std::size_t d = 0; d < a; ++d) outer *= shape[d];
  for (std::size_t d = a + 1; d < shape.size(); ++d) inner *= shape[d];
  double* v = t.data_as<double>();
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      double s = 0;
      for (std::int64_t c = 0; c < len; ++c) s += v[(o * len + c) * inner + i];
      for (std::int64_t c = 0; c < len; ++c) v[(o * len + c) * inner + i] /= s;
    }
  }
  return t;
}

}  // namespace spatialsoftmax::op::test
