// Entry points of the Highway kernels (src/kernels/highway_kernels.cc), each
// dispatched at run time to the best SIMD target the CPU supports.
#pragma once

#include <string>
#include <vector>

#include "core/problems.h"

namespace spatialsoftmax::kernels {

void cross_entropy(const core::CrossEntropyProblem<float>& pb);
void cross_entropy(const core::CrossEntropyProblem<double>& pb);
void softmax(const core::SoftmaxProblem<float>& pb);
void softmax(const core::SoftmaxProblem<double>& pb);
void prob_minus_target(const core::ProbMinusTargetProblem<float>& pb);
void prob_minus_target(const core::ProbMinusTargetProblem<double>& pb);

}  // namespace spatialsoftmax::kernels
