// Helpers shared by the operator-layer tests (test_operators,
// test_gradient_nets): building OperatorDefs, checking error messages, and
// float64 test inputs made without the library's math.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/operator_def.h"
#include "spatialsoftmax/op/registry.h"
#include "spatialsoftmax/op/schema.h"
#include "spatialsoftmax/op/workspace.h"
#include "test_support.h"

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
inline Tensor probabilities(Shape shape, int axis, std::uint64_t seed) {
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
