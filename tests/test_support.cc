#include "test_support.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

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
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::kFloat32) {
      t.data_as<float>()[i] = static_cast<float>(dist(rng));
    } else {
      t.data_as<double>()[i] = dist(rng);
    }
  }
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
    case DType::kFloat32: t.data_as<float>()[flat] = static_cast<float>(value); break;
    case DType::kFloat64: t.data_as<double>()[flat] = value; break;
    case DType::kInt32: t.data_as<std::int32_t>()[flat] = static_cast<std::int32_t>(value); break;
    case DType::kInt64: t.data_as<std::int64_t>()[flat] = static_cast<std::int64_t>(value); break;
  }
}

Tensor filled(DType dtype, Shape shape, double value) {
  Tensor t(dtype, std::move(shape));
  for (std::int64_t i = 0; i < t.numel(); ++i) set_element(t, i, value);
  return t;
}

Tensor values(DType dtype, Shape shape, const std::vector<double>& values) {
  Tensor t(dtype, std::move(shape));
  EXPECT_EQ(static_cast<std::size_t>(t.numel()), values.size()) << "values() for " << shape_string(t.shape());
  for (std::int64_t i = 0; i < t.numel() && static_cast<std::size_t>(i) < values.size(); ++i) {
    set_element(t, i, values[static_cast<std::size_t>(i)]);
  }
  return t;
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
    bool ok;
    if (std::isnan(w)) {
      ok = std::isnan(g);
    } else if (std::isinf(w)) {
      ok = g == w;
    } else {
      ok = std::abs(g - w) <= atol + rtol * std::abs(w);
    }
    if (!ok) {
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

}  // namespace spatialsoftmax::testing
