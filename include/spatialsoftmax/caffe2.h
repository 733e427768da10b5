// Caffe2's operators with their exact semantics (docs/semantics.md section 2):
// SpatialSoftmaxWithLoss, SoftmaxWithLoss and their gradients. The defects of
// Caffe2 listed in docs/semantics.md 2.4 items 3-5 are fixed; everything else,
// including the unscaled CPU forward, is kept.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "spatialsoftmax/options.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::caffe2 {

// "cpu" (default) or "cuda": Caffe2's two implementations differ in whether
// the forward applies `scale` and in what a total weight <= 0 gives.
enum class Variant { kCpu, kCuda };
// "cpu" or "cuda"; anything else is an Error "<what>: '<text>', expected cpu
// or cuda". The one parser of the word (operators, Python).
Variant parse_variant(std::string_view text, std::string_view what);

// Caffe2's `order`: "NCHW" (the class axis 1) or, where `nhwc` (the spatial
// operators: an extension, Caffe2 refused it), "NHWC" (the class axis
// last); anything else is an Error "<what> = '<text>': ...". The one
// parser of the word (the functions, the operators).
ClassAxis parse_order(std::string_view text, std::string_view what, bool nhwc);

struct SpatialSoftmaxWithLossArgs {
  float scale = 1.0f;  // >= 0
  // "NCHW": X (N, D, H, W); "NHWC" (an extension): X (N, H, W, D), P in
  // X's layout. T and the weights are (N, H, W) either way.
  std::string order = "NCHW";
  Variant variant = Variant::kCpu;
};

struct SoftmaxWithLossArgs {
  float scale = 1.0f;
  std::string order = "NCHW";  // only "NCHW", as in Caffe2 (the rows are given by `axis`)
  int label_prob = 0;          // 1: targets are probabilities (N, D)
  int axis = 1;                // X is coerced to 2-D (N, D) at this axis
  int average_by_batch_size = 0;
  Variant variant = Variant::kCpu;
};

struct LossOutputs {
  Tensor prob;  // P, X's shape and dtype
  Tensor loss;  // scalar of X's dtype
};

// X (N, D, H, W) float, T (N, H, W) int32 with -1 = ignore, optional weight
// (N, H, W) one per pixel.
LossOutputs spatial_softmax_with_loss(const TensorView& X, const TensorView& T,
                                      const std::optional<TensorView>& weight,
                                      const SpatialSoftmaxWithLossArgs& args = {},
                                      const ExecutionContext& context = {});
// The gradient from the supplied P (X gives only the shape); d_loss is a
// tensor whose first element is used.
Tensor spatial_softmax_with_loss_gradient(const TensorView& X, const TensorView& T,
                                          const std::optional<TensorView>& weight,
                                          const TensorView& P, const TensorView& d_loss,
                                          const SpatialSoftmaxWithLossArgs& args = {},
                                          const ExecutionContext& context = {});

LossOutputs softmax_with_loss(const TensorView& X, const TensorView& T,
                              const std::optional<TensorView>& weight,
                              const SoftmaxWithLossArgs& args = {},
                              const ExecutionContext& context = {});
Tensor softmax_with_loss_gradient(const TensorView& X, const TensorView& T,
                                  const std::optional<TensorView>& weight, const TensorView& P,
                                  const TensorView& d_loss, const SoftmaxWithLossArgs& args = {},
                                  const ExecutionContext& context = {});

// --- into caller-provided outputs ------------------------------------------
// The same four functions writing into the caller's dense views, checked as
// every _into form is (dtype, shape, device, null data, no byte shared with
// an input or the other output) before anything is written. P has X's shape,
// avg_loss is a scalar of X's dtype. dX may be exactly P's memory (Caffe2
// runs the gradient in place over P); any other overlap is refused.
struct LossOutputViews {
  MutableTensorView prob;
  MutableTensorView loss;
};
void spatial_softmax_with_loss_into(const TensorView& X, const TensorView& T,
                                    const std::optional<TensorView>& weight,
                                    const LossOutputViews& outputs,
                                    const SpatialSoftmaxWithLossArgs& args = {},
                                    const ExecutionContext& context = {});
void spatial_softmax_with_loss_gradient_into(const TensorView& X, const TensorView& T,
                                             const std::optional<TensorView>& weight,
                                             const TensorView& P, const TensorView& d_loss,
                                             const MutableTensorView& dX,
                                             const SpatialSoftmaxWithLossArgs& args = {},
                                             const ExecutionContext& context = {});
void softmax_with_loss_into(const TensorView& X, const TensorView& T,
                            const std::optional<TensorView>& weight, const LossOutputViews& outputs,
                            const SoftmaxWithLossArgs& args = {},
                            const ExecutionContext& context = {});
void softmax_with_loss_gradient_into(const TensorView& X, const TensorView& T,
                                     const std::optional<TensorView>& weight, const TensorView& P,
                                     const TensorView& d_loss, const MutableTensorView& dX,
                                     const SoftmaxWithLossArgs& args = {},
                                     const ExecutionContext& context = {});

}  // namespace spatialsoftmax::caffe2
