// Entry points of the Highway kernels (src/cpu/cross_entropy.cc), each
// dispatched at run time to the best SIMD target the CPU supports.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/problems.h"

namespace spatialsoftmax::cpu {

// From this many classes on, contiguous class vectors are processed with
// classes in lanes (one position at a time) rather than pixels in lanes
// (transposed tiles). Measured with AVX-512 on class-last (2, C, d1, d2):
// at C = 150 tiles are 1.6x (forward) and 1.25x (fused) faster than rows,
// at C = 300 they are about even, and from C = 600 rows win.
inline constexpr std::int64_t kRowClasses = 256;

void cross_entropy(const core::CrossEntropyProblem<float>& pb);
void cross_entropy(const core::CrossEntropyProblem<double>& pb);
void softmax(const core::SoftmaxProblem<float>& pb);
void softmax(const core::SoftmaxProblem<double>& pb);
void prob_minus_target(const core::ProbMinusTargetProblem<float>& pb);
void prob_minus_target(const core::ProbMinusTargetProblem<double>& pb);
void softmax_backward(const core::SoftmaxBackwardProblem<float>& pb);
void softmax_backward(const core::SoftmaxBackwardProblem<double>& pb);
void kl_div(const core::KlDivProblem<float>& pb);
void kl_div(const core::KlDivProblem<double>& pb);

// Of the labels y[0, n): how many are not ignore_index and in [0, classes),
// and (*bad) whether any other is out of range. One block of the API's label
// check: the count builds up in lanes of the label type, so n < 2^31.
std::int64_t count_labels(const std::int32_t* y, std::int64_t n, std::int64_t classes,
                          std::optional<std::int64_t> ignore, bool* bad);
std::int64_t count_labels(const std::int64_t* y, std::int64_t n, std::int64_t classes,
                          std::optional<std::int64_t> ignore, bool* bad);

// SIMD targets compiled in that this CPU supports, best first (Highway's
// target bits), and the one the kernels dispatch to now.
std::vector<std::int64_t> supported_targets();
std::int64_t active_target();
std::string target_name(std::int64_t target);
// Tests: dispatch to `target` only (one of supported_targets()); 0 restores
// the normal choice.
void use_only_target_for_test(std::int64_t target);

}  // namespace spatialsoftmax::cpu
