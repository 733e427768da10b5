// The conformance README's tolerances, shared by test_conformance and
// test_cli: |got - want| <= atol + rtol * |want|, `want` being NAME_f64 where
// the case has it, else NAME.
#pragma once

#include <string_view>

#include "test_support.h"

namespace spatialsoftmax::testing {

struct Tolerance {
  double rtol;
  double atol;
};

// `op` is the case's operator, `name` the output ("loss", "grad_input", ...),
// `want` the reference array it is compared with.
inline Tolerance conformance_tolerance(std::string_view op, std::string_view name,
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

}  // namespace spatialsoftmax::testing
