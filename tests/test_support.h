// Helpers shared by the tests: random inputs, tolerance checks, paths,
// scoped settings (environment, thread count, SIMD target), the per-target
// test fixture, and the operator-layer helpers.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/operator_def.h"
#include "spatialsoftmax/op/registry.h"
#include "spatialsoftmax/op/schema.h"
#include "spatialsoftmax/op/workspace.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "spatialsoftmax/threads.h"

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

struct Tolerance {
  double rtol = 0;
  double atol = 0;
};

// |got - want| <= atol + rtol * |want|, where NaN matches only NaN and an
// infinity only the same infinity: the one closeness rule of the tests.
bool close_enough(double got, double want, const Tolerance& t);

// True if close_enough holds elementwise; on failure `why` names the first
// bad element.
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

#define EXPECT_ERROR_MENTIONS(statement, ...)                                                     \
  EXPECT_TRUE(::spatialsoftmax::testing::error_mentions([&] { (void)(statement); }, __VA_ARGS__)) \
      << #statement

// A view into storage of its own (a strided or offset layout, the storage
// between the elements poisoned).
struct Strided {
  Tensor storage;
  TensorView view;
};

// --- tolerances of the conformance README -------------------------------------

// |got - want| <= atol + rtol * |want|, `want` being NAME_f64 where the case
// has it, else NAME. `op` is the case's operator, `name` the output ("loss",
// "grad_input", ...), `want` the reference array it is compared with.
Tolerance conformance_tolerance(std::string_view op, std::string_view name, const TensorView& want);

// --- scoped settings -------------------------------------------------------------

// Sets (or, with a null value, unsets) an environment variable for a scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The backend is chosen on every call from SPATIALSOFTMAX_BACKEND, so a
// scope can force one.
class ScopedBackend : public ScopedEnv {
 public:
  explicit ScopedBackend(const char* name) : ScopedEnv("SPATIALSOFTMAX_BACKEND", name) {}
};

class ScopedThreads {
 public:
  explicit ScopedThreads(int n) : old_(num_threads()) { set_num_threads(n); }
  ~ScopedThreads() { set_num_threads(old_); }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int old_;
};

// --- SIMD targets ---------------------------------------------------------------

// The Highway targets this CPU runs, best first, as cpu::supported_targets.
std::vector<std::int64_t> simd_targets();
// Highway's name of a target ("AVX3", "SSE4", "EMU128").
std::string simd_target_name(std::int64_t target);

// Dispatches the Highway kernels to one target only (one of simd_targets()),
// back to the best one at the end of the scope.
class ScopedTarget {
 public:
  explicit ScopedTarget(std::int64_t target);
  ~ScopedTarget();
  ScopedTarget(const ScopedTarget&) = delete;
  ScopedTarget& operator=(const ScopedTarget&) = delete;
};

// A test run once per SIMD target, with that target forced: derive a
// fixture from it (or use it directly) with TEST_P, then instantiate with
// SPATIALSOFTMAX_INSTANTIATE_PER_TARGET. A failure names the target in the
// test's name, as Highway's own tests do.
class PerTarget : public ::testing::TestWithParam<std::int64_t> {
 protected:
  void SetUp() override { target_.emplace(GetParam()); }
  void TearDown() override { target_.reset(); }

 private:
  std::optional<ScopedTarget> target_;
};

// PerTarget with a second parameter: GetParam() is (target, value), for a
// suite instantiated over the Combine of simd_targets() and its values.
template <class T>
class PerTargetWith : public ::testing::TestWithParam<std::tuple<std::int64_t, T>> {
 protected:
  void SetUp() override { target_.emplace(target()); }
  void TearDown() override { target_.reset(); }
  std::int64_t target() const { return std::get<0>(this->GetParam()); }
  const T& value() const { return std::get<1>(this->GetParam()); }

 private:
  std::optional<ScopedTarget> target_;
};

// The name of a target in a test's name: its Highway name in [A-Za-z0-9_].
std::string target_test_name(std::int64_t target);
std::string target_param_name(const ::testing::TestParamInfo<std::int64_t>& info);

#define SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(suite)                                       \
  INSTANTIATE_TEST_SUITE_P(Targets, suite,                                                 \
                           ::testing::ValuesIn(::spatialsoftmax::testing::simd_targets()), \
                           ::spatialsoftmax::testing::target_param_name)

}  // namespace spatialsoftmax::testing

// --- the operator layer: OperatorDefs and float64 inputs made without the
// library's math ----------------------------------------------------------------

namespace spatialsoftmax::op::test {

using spatialsoftmax::testing::values;

inline OperatorDef make_def(std::string type, std::vector<std::string> inputs,
                            std::vector<std::string> outputs, std::vector<Argument> args = {}) {
  OperatorDef def;
  def.type = std::move(type);
  def.inputs = std::move(inputs);
  def.outputs = std::move(outputs);
  def.args = std::move(args);
  return def;
}

// float64 values uniform in [lo, hi).
inline Tensor rnd(Shape shape, std::uint64_t seed, double lo = -2.0, double hi = 2.0) {
  return testing::random_uniform(DType::kFloat64, std::move(shape), lo, hi, seed);
}

// Labels uniform in [0, classes).
inline Tensor labels(DType dtype, Shape shape, std::int64_t classes, std::uint64_t seed) {
  return testing::random_labels(dtype, std::move(shape), classes, seed);
}

// Positive float64 values that sum to 1 along `axis` (plain normalisation,
// no softmax).
Tensor probabilities(Shape shape, int axis, std::uint64_t seed);

inline Tensor copy(const Tensor& t) { return Tensor::copy_of(t.view()); }

inline TensorSpec spec_of(const Tensor& t) { return TensorSpec{t.dtype(), t.shape()}; }

inline std::string spec_string(const std::optional<TensorSpec>& s) {
  if (!s) return "(absent)";
  return std::string(dtype_name(s->dtype)) + " " + shape_string(s->shape);
}

// A tensor shared by copies of a test case (Tensor itself is move-only, and
// gtest copies parameters).
class Blob {
 public:
  Blob(Tensor t) : t_(std::make_shared<const Tensor>(std::move(t))) {}  // NOLINT: implicit
  const Tensor& get() const { return *t_; }

 private:
  std::shared_ptr<const Tensor> t_;
};
using Blobs = std::map<std::string, Blob>;

inline void put(Workspace& ws, const Blobs& blobs) {
  for (const auto& [name, b] : blobs) ws.set(name, copy(b.get()));
}

}  // namespace spatialsoftmax::op::test
