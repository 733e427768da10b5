// The shared driver of every class-axis loss: cross_entropy, nll_loss and the
// Caffe2 operators all validate and run through here, so the checks, the
// mean's denominator and the reductions exist once.
#pragma once

#include <string_view>

#include "reference/problems.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::api {

enum class Pass { kForward, kBackward, kFused };

// How the scalar loss (reductions other than none) is made from the loss
// sum: the rule, and the denominator it divides by. Without one, the
// options' reduction: the sum, or the mean over sum_i e_i (index targets:
// the weights of the labels not ignored) or sum_i a_i (soft targets).
struct LossPlan {
  core::LossScalar rule;
  core::DenominatorFrom denominator_from = core::DenominatorFrom::kConstant;
  double denominator = 1;  // kConstant's
};

// How the caller names itself and its inputs in error messages (Caffe2's
// operators call the pixel weights weight_tensor, one per pixel or row).
struct LossArgNames {
  std::string_view op;
  std::string_view logits = "logits";
  std::string_view targets = "targets";
  std::string_view pixel_weight = "pixel_weight";
  std::string_view pixel_weight_shape = "(one per position: (N, d1..dk))";
};

// grad_over_logits (fused pass only): the dense tensor behind `logits`,
// whose storage receives dX and is moved into the result.
// into: the _into forms' views; an output is computed where a view is given
// (the options' want_* flags are not read), and result then holds nothing.
CrossEntropyResult run_cross_entropy(const LossArgNames& names, const TensorView& logits,
                                     const TensorView& targets, const CrossEntropyOptions& options,
                                     const CrossEntropyGrads& grads, Pass pass,
                                     bool logits_are_log_probs = false,
                                     Tensor* grad_over_logits = nullptr,
                                     const CrossEntropyOutputs* into = nullptr,
                                     const ExecutionContext& context = {},
                                     const LossPlan* plan = nullptr);

}  // namespace spatialsoftmax::api
