// Entry points of the Highway spatial softmax / soft-argmax kernels
// (src/cpu/spatial_soft_argmax.cc, SPEC.md 4), dispatched at run time to the
// best SIMD target the CPU supports. Targets are listed and forced for tests
// through cpu::supported_targets / use_only_target_for_test
// (cpu/kernels.h): Highway's chosen target is one global.
#pragma once

#include "core/problems.h"

namespace spatialsoftmax::cpu {

// Whether the kernels run this problem. float32 computes beta * (x - max) in
// float32, which matches the float64 reference only while beta is a normal
// float32 far from overflow: beta in [2^-100, 2^100], i.e. temperatures
// between about 1e-30 and 1e30. Outside that the caller uses the reference.
// float64: always.
bool runs(const core::SpatialSoftArgmaxProblem<float>& pb);
bool runs(const core::SpatialSoftArgmaxProblem<double>& pb);

// Forward: any of keypoints, softmax and covariance.
void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<float>& pb);
void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<double>& pb);
// Backward: grad_input (required) and grad_beta (optional) from any subset
// of grad_keypoints, grad_softmax and grad_covariance.
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<float>& pb);
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<double>& pb);

}  // namespace spatialsoftmax::cpu
