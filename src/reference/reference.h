// The scalar reference of every kernel: plain loops written for clarity, one
// position at a time. It is the oracle that faster backends are tested
// against, so it favours the obvious formula over speed.
#pragma once

#include "reference/problems.h"

namespace spatialsoftmax::core::reference {

template <class T>
void softmax(const SoftmaxProblem<T>& problem);
template <class T>
void softmax_backward(const SoftmaxBackwardProblem<T>& problem);
template <class T>
void cross_entropy(const CrossEntropyProblem<T>& problem);
template <class T>
void scan_labels(const LabelScanProblem<T>& problem);
template <class T>
void prob_minus_target(const ProbMinusTargetProblem<T>& problem);
template <class T>
void kl_div(const KlDivProblem<T>& problem);
template <class T>
void spatial_soft_argmax(const SpatialSoftArgmaxProblem<T>& problem);
template <class T>
void spatial_soft_argmax_backward(const SpatialSoftArgmaxProblem<T>& problem);

}  // namespace spatialsoftmax::core::reference
