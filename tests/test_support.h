// Helpers shared by the tests: random inputs, tolerance checks, paths.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <initializer_list>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "spatialsoftmax/spatialsoftmax.h"

namespace spatialsoftmax::testing {

// Root of the conformance cases (env SPATIALSOFTMAX_CONFORMANCE_DIR wins).
std::filesystem::path conformance_dir();
// Path of the built `spatialsoftmax` program.
std::filesystem::path cli_path();

// Dense tensor of `dtype` with values uniform in [lo, hi).
Tensor random_uniform(DType dtype, Shape shape, double lo, double hi, std::uint64_t seed);
// Dense int64 (or int32) labels uniform in [0, classes).
Tensor random_labels(DType dtype, Shape shape, std::int64_t classes, std::uint64_t seed);

// Writes element `flat` of a dense tensor, converting to its dtype.
void set_element(Tensor& t, std::int64_t flat, double value);
// A dense tensor with every element `value`, or with the given `values`.
Tensor filled(DType dtype, Shape shape, double value);
Tensor values(DType dtype, Shape shape, const std::vector<double>& values);

// True if |got - want| <= atol + rtol * |want| elementwise (NaN matches NaN,
// inf matches the same inf); on failure `why` names the first bad element.
bool all_close(const TensorView& got, const TensorView& want, double rtol, double atol,
               std::string* why);
double max_abs(const TensorView& t);
// Bitwise equality of dtype, shape and bytes of two dense tensors.
bool bitwise_equal(const Tensor& a, const Tensor& b);

// Runs `f` and checks that it throws spatialsoftmax::Error whose message
// contains every needle.
template <class F>
::testing::AssertionResult error_mentions(F&& f, std::initializer_list<std::string_view> needles) {
  try {
    f();
  } catch (const Error& e) {
    const std::string what = e.what();
    for (std::string_view needle : needles) {
      if (what.find(needle) == std::string::npos) {
        return ::testing::AssertionFailure()
               << "message \"" << what << "\" does not mention \"" << needle << "\"";
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure()
           << "threw a std::exception that is not spatialsoftmax::Error: " << e.what();
  } catch (...) {
    return ::testing::AssertionFailure() << "threw something that is not an exception";
  }
  return ::testing::AssertionFailure() << "did not throw";
}

#define EXPECT_ERROR_MENTIONS(statement, ...) \
  EXPECT_TRUE(::spatialsoftmax::testing::error_mentions([&] { (void)(statement); }, __VA_ARGS__)) << #statement

}  // namespace spatialsoftmax::testing
