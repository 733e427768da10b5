// Registration of the built-in operators, one function per family.
#pragma once

namespace spatialsoftmax::op::detail {

void register_caffe2_operators();   // SpatialSoftmaxWithLoss, SoftmaxWithLoss
void register_onnx_operators();     // SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss
void register_softmax_operators();  // Softmax, LogSoftmax
void register_loss_operators();     // CrossEntropy, KLDiv
void register_spatial_operators();  // SpatialSoftmax, SpatialSoftArgmax
void register_utility_operators();  // ConstantFill, Sum

inline void register_builtin_operators() {
  register_caffe2_operators();
  register_onnx_operators();
  register_softmax_operators();
  register_loss_operators();
  register_spatial_operators();
  register_utility_operators();
}

}  // namespace spatialsoftmax::op::detail
