// The loss family: softmax, log_softmax, cross-entropy, NLL, KL divergence and
// the spatial soft-argmax, each with its gradient. docs/semantics.md sections 3-5.
//
// Every function validates all of its arguments first and throws
// spatialsoftmax::Error before computing anything. Inputs are never written.
// Outputs are dense tensors in the input's layout (class axis where the input
// has it). float32 and float64 logits; int32 and int64 labels.
//
// Every function takes an optional ExecutionContext (device.h: the thread
// count of this call; a CUDA stream) and runs on the device its inputs are
// on: for device inputs the allocating forms return tensors that own device
// memory (Tensor::device()). The `_into` forms write into views the caller allocated
// (MutableTensorView, dense C order) instead of returning new tensors; each
// view is checked for dtype, shape and device, and must share no byte with
// an input or another output. A failed check writes nothing.
#pragma once

#include <optional>

#include "spatialsoftmax/options.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax {

// A dense copy of `view` in `device`'s memory: host to device, device to
// host or between devices (a device view must be dense), complete when it
// returns (the one call that waits for the device: data is being moved to
// or from the host).
Tensor copy_to(const TensorView& view, Device device, const ExecutionContext& context = {});

// --- softmax over the class axis -------------------------------------------
Tensor softmax(const TensorView& logits, ClassAxis class_axis = ClassAxis::kFirst,
               const ExecutionContext& context = {});
Tensor log_softmax(const TensorView& logits, ClassAxis class_axis = ClassAxis::kFirst,
                   const ExecutionContext& context = {});
// dX_c = p_c * (g_c - sum_j p_j g_j), from the softmax output p.
Tensor softmax_backward(const TensorView& prob, const TensorView& grad_prob,
                        ClassAxis class_axis = ClassAxis::kFirst,
                        const ExecutionContext& context = {});
// dX_c = g_c - p_c * sum_j g_j with p = exp(log_prob), from the output.
Tensor log_softmax_backward(const TensorView& log_prob, const TensorView& grad_log_prob,
                            ClassAxis class_axis = ClassAxis::kFirst,
                            const ExecutionContext& context = {});
// Per-position entropy H = -sum_c p_c logp_c, shape (N, d1..dk).
Tensor entropy(const TensorView& logits, ClassAxis class_axis = ClassAxis::kFirst,
               const ExecutionContext& context = {});

// The same into caller-provided outputs: prob and log_prob of the logits'
// shape, entropy (N, d1..dk), grad_logits of the output's shape.
void softmax_into(const TensorView& logits, const MutableTensorView& prob,
                  ClassAxis class_axis = ClassAxis::kFirst, const ExecutionContext& context = {});
void log_softmax_into(const TensorView& logits, const MutableTensorView& log_prob,
                      ClassAxis class_axis = ClassAxis::kFirst,
                      const ExecutionContext& context = {});
void entropy_into(const TensorView& logits, const MutableTensorView& entropy,
                  ClassAxis class_axis = ClassAxis::kFirst, const ExecutionContext& context = {});
void softmax_backward_into(const TensorView& prob, const TensorView& grad_prob,
                           const MutableTensorView& grad_logits,
                           ClassAxis class_axis = ClassAxis::kFirst,
                           const ExecutionContext& context = {});
void log_softmax_backward_into(const TensorView& log_prob, const TensorView& grad_log_prob,
                               const MutableTensorView& grad_logits,
                               ClassAxis class_axis = ClassAxis::kFirst,
                               const ExecutionContext& context = {});

// --- cross-entropy ----------------------------------------------------------
// `targets` are class indices (int32/int64, shape (N, d1..dk)) or
// probabilities (the logits' dtype and shape).
struct CrossEntropyResult {
  Tensor loss;         // scalar, or (N, d1..dk) for Reduction::kNone
  Tensor prob;         // if want_prob
  Tensor log_prob;     // if want_log_prob
  Tensor entropy;      // if want_entropy
  Tensor grad_logits;  // only from cross_entropy_forward_backward
};

// Upstream gradients of the forward outputs; absent ones are zero. `loss` is a
// scalar for sum/mean and a (N, d1..dk) map for none.
struct CrossEntropyGrads {
  std::optional<TensorView> loss;
  std::optional<TensorView> prob;
  std::optional<TensorView> log_prob;
  std::optional<TensorView> entropy;
};

CrossEntropyResult cross_entropy(const TensorView& logits, const TensorView& targets,
                                 const CrossEntropyOptions& options = {},
                                 const ExecutionContext& context = {});
Tensor cross_entropy_backward(const TensorView& logits, const TensorView& targets,
                              const CrossEntropyGrads& grads,
                              const CrossEntropyOptions& options = {},
                              const ExecutionContext& context = {});
// Loss (and requested maps) and the gradient of the loss in one call. The
// upstream gradient is 1 unless `grads.loss` is given; the other upstream
// gradients in `grads` are added as in cross_entropy_backward.
CrossEntropyResult cross_entropy_forward_backward(const TensorView& logits,
                                                  const TensorView& targets,
                                                  const CrossEntropyOptions& options = {},
                                                  const CrossEntropyGrads& grads = {},
                                                  const ExecutionContext& context = {});

// The same, writing dX over the logits' own storage (a memory saving of one
// X-sized buffer): `logits` is consumed and its storage comes back as
// result.grad_logits; on an error it is left as it was. The log_prob output
// is not available (it needs X after dX has replaced it).
CrossEntropyResult cross_entropy_forward_backward_in_place(Tensor&& logits,
                                                           const TensorView& targets,
                                                           const CrossEntropyOptions& options = {},
                                                           const CrossEntropyGrads& grads = {},
                                                           const ExecutionContext& context = {});

// Where the _into forms write. An output is computed where its view is
// given; the options' want_* flags are not read. loss: () for sum and mean,
// (N, d1..dk) for none; prob and log_prob the logits' shape; entropy
// (N, d1..dk); grad_logits the logits' shape, and only for the fused form,
// where it may be exactly the logits' own bytes (dense), the in-place call
// (then log_prob cannot be asked for, and no other input may share them).
struct CrossEntropyOutputs {
  std::optional<MutableTensorView> loss;
  std::optional<MutableTensorView> prob;
  std::optional<MutableTensorView> log_prob;
  std::optional<MutableTensorView> entropy;
  std::optional<MutableTensorView> grad_logits;
};
void cross_entropy_into(const TensorView& logits, const TensorView& targets,
                        const CrossEntropyOutputs& outputs, const CrossEntropyOptions& options = {},
                        const ExecutionContext& context = {});
void cross_entropy_backward_into(const TensorView& logits, const TensorView& targets,
                                 const CrossEntropyGrads& grads,
                                 const MutableTensorView& grad_logits,
                                 const CrossEntropyOptions& options = {},
                                 const ExecutionContext& context = {});
void cross_entropy_forward_backward_into(const TensorView& logits, const TensorView& targets,
                                         const CrossEntropyOutputs& outputs,
                                         const CrossEntropyOptions& options = {},
                                         const CrossEntropyGrads& grads = {},
                                         const ExecutionContext& context = {});

// --- negative log-likelihood over given log-probabilities (ONNX NLL) --------
// l_i = -w_{y_i} * log_prob[i, y_i]; class weights, ignore_index and the
// reduction of `options` apply (smoothing, floor, pixel weights do not).
Tensor nll_loss(const TensorView& log_prob, const TensorView& labels,
                const CrossEntropyOptions& options = {}, const ExecutionContext& context = {});
Tensor nll_loss_backward(const TensorView& log_prob, const TensorView& labels,
                         const TensorView& grad_loss, const CrossEntropyOptions& options = {},
                         const ExecutionContext& context = {});
void nll_loss_into(const TensorView& log_prob, const TensorView& labels,
                   const MutableTensorView& loss, const CrossEntropyOptions& options = {},
                   const ExecutionContext& context = {});
void nll_loss_backward_into(const TensorView& log_prob, const TensorView& labels,
                            const TensorView& grad_loss, const MutableTensorView& grad_log_prob,
                            const CrossEntropyOptions& options = {},
                            const ExecutionContext& context = {});

// --- KL divergence KL(target || softmax(logits)) ------------------------------
Tensor kl_div(const TensorView& logits, const TensorView& target, const KlDivOptions& options = {},
              const ExecutionContext& context = {});
// `grad_output` is a scalar for sum/mean/batchmean, the logits' shape for none.
Tensor kl_div_backward(const TensorView& logits, const TensorView& target,
                       const TensorView& grad_output, const KlDivOptions& options = {},
                       const ExecutionContext& context = {});
// output: the logits' shape for none, () otherwise; grad_logits: the logits' shape.
void kl_div_into(const TensorView& logits, const TensorView& target,
                 const MutableTensorView& output, const KlDivOptions& options = {},
                 const ExecutionContext& context = {});
void kl_div_backward_into(const TensorView& logits, const TensorView& target,
                          const TensorView& grad_output, const MutableTensorView& grad_logits,
                          const KlDivOptions& options = {}, const ExecutionContext& context = {});

// --- spatial softmax and soft-argmax keypoints (docs/semantics.md 4) ------------------
struct SpatialSoftArgmaxResult {
  Tensor keypoints;   // (N, C, k), fastest spatial axis first
  Tensor softmax;     // if want_softmax: the input's shape and layout
  Tensor covariance;  // if want_covariance: (N, C, k, k)
};
struct SpatialSoftArgmaxGrads {
  std::optional<TensorView> keypoints;
  std::optional<TensorView> softmax;
  std::optional<TensorView> covariance;
};
struct SpatialSoftArgmaxBackward {
  Tensor grad_input;
  // dL/dT (divide mode) or dL/d(multiplier); NaN for device inputs, where
  // it would need a wait for the device.
  double grad_temperature = 0;
};

Tensor spatial_softmax(const TensorView& input, const SpatialSoftArgmaxOptions& options = {},
                       const ExecutionContext& context = {});
SpatialSoftArgmaxResult spatial_soft_argmax(const TensorView& input,
                                            const SpatialSoftArgmaxOptions& options = {},
                                            const ExecutionContext& context = {});
SpatialSoftArgmaxBackward spatial_soft_argmax_backward(const TensorView& input,
                                                       const SpatialSoftArgmaxGrads& grads,
                                                       const SpatialSoftArgmaxOptions& options = {},
                                                       const ExecutionContext& context = {});

// Where spatial_soft_argmax_into writes: keypoints (N, C, k) always; softmax
// (the input's shape) and covariance (N, C, k, k) where given (the options'
// want_* flags are not read).
struct SpatialSoftArgmaxOutputs {
  std::optional<MutableTensorView> keypoints;
  std::optional<MutableTensorView> softmax;
  std::optional<MutableTensorView> covariance;
};
void spatial_soft_argmax_into(const TensorView& input, const SpatialSoftArgmaxOutputs& outputs,
                              const SpatialSoftArgmaxOptions& options = {},
                              const ExecutionContext& context = {});
void spatial_softmax_into(const TensorView& input, const MutableTensorView& softmax,
                          const SpatialSoftArgmaxOptions& options = {},
                          const ExecutionContext& context = {});
// Writes grad_input (the input's shape); returns dL/dT (divide mode) or
// dL/d(multiplier), NaN for device inputs.
double spatial_soft_argmax_backward_into(const TensorView& input,
                                         const SpatialSoftArgmaxGrads& grads,
                                         const MutableTensorView& grad_input,
                                         const SpatialSoftArgmaxOptions& options = {},
                                         const ExecutionContext& context = {});

}  // namespace spatialsoftmax
