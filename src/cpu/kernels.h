// Entry points of the CPU kernels (src/cpu), each dispatched at run time to
// the best SIMD target the CPU supports. The kernels are written once with
// Highway and compiled for every target of HWY_TARGETS (foreach_target +
// HWY_DYNAMIC_DISPATCH); no -march flag is used.
//
// Files, as Highway's vqsort and XNNPACK split theirs: an algorithm lives in
// a per-target `name-inl.h` (Highway's include guard toggle, code in
// spatialsoftmax::cpu::HWY_NAMESPACE), and each operation family has one
// `.cc` that re-includes itself through hwy/foreach_target.h, includes the
// -inl.h headers it needs, defines its per-target entry functions and, under
// HWY_ONCE, exports them (HWY_EXPORT) and defines the entry points below
// with HWY_DYNAMIC_DISPATCH:
//   math-inl.h            the exp and log, with their ranges and errors
//   transpose-inl.h       layout transposes, the class-last tile copies
//   memory-inl.h          prefetches, streaming copies
//   blocks.h              work blocks and their sizes (plain C++)
//   labels-inl.h          the label scan             -> labels.cc
//   loss_setup-inl.h      the loss family's setup and per-position terms
//   tiles-inl.h           tile kernel                -> cross_entropy.cc
//   plain_tiles-inl.h     tile fast path             -> cross_entropy.cc
//   rows-inl.h            row kernel (many classes)  -> cross_entropy.cc
//   spatial_axes-inl.h,   spatial soft-argmax        -> spatial_soft_argmax.cc
//   spatial_passes-inl.h
//   prob_minus_target.cc, softmax_backward.cc, kl_div.cc: one file each;
//   convert.cc: 16-bit <-> float32 conversions;
//   targets.cc: the SIMD targets.
//
// Names. A function with a Highway descriptor or vector among its
// parameters is a SIMD building block and is CamelCase, like Highway's own
// ops (ExpNonPositive, LoadWide, AddUpstream); so is a per-target function
// that HWY_EXPORT exports, named for its operation and lane type
// (CrossEntropyF32, ScanLabelsF64), as in Highway's examples. Everything
// else (loops over arrays, the tile and row kernels, drivers, setup) is
// snake_case like the rest of the project; the template behind a pair of
// exports is `<operation>_impl`. Types are CamelCase, constants kCamelCase.
//
// Every .cc puts its code in the same per-target namespace with external
// linkage, so a name there means one thing in all of them: two files with a
// thread-local `Scratch<float>` of different layouts would share one symbol.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "reference/problems.h"

namespace spatialsoftmax::cpu {

// From this many classes on, contiguous class vectors are processed with
// classes in lanes (one position at a time) rather than pixels in lanes
// (transposed tiles). Measured with AVX-512 on class-last (2, C, d1, d2):
// at C = 150 tiles are 1.6x (forward) and 1.25x (fused) faster than rows,
// at C = 300 they are about even, and from C = 600 rows win.
inline constexpr std::int64_t kRowClasses = 256;

void cross_entropy(const core::CrossEntropyProblem<float>& pb);
void cross_entropy(const core::CrossEntropyProblem<double>& pb);
// 16-bit problems of the plain tiles (index targets without smoothing;
// outputs loss, P, dX; fewer than kRowClasses contiguous classes): X is
// read, P and dX written in 16 bits by the tile kernel itself. False for
// any other problem, untouched (src/dispatch/staging.h runs those).
bool cross_entropy(const core::CrossEntropyProblem<BFloat16>& pb);
bool cross_entropy(const core::CrossEntropyProblem<Float16>& pb);
void softmax(const core::SoftmaxProblem<float>& pb);
void softmax(const core::SoftmaxProblem<double>& pb);
void prob_minus_target(const core::ProbMinusTargetProblem<float>& pb);
void prob_minus_target(const core::ProbMinusTargetProblem<double>& pb);
void softmax_backward(const core::SoftmaxBackwardProblem<float>& pb);
void softmax_backward(const core::SoftmaxBackwardProblem<double>& pb);
void kl_div(const core::KlDivProblem<float>& pb);
void kl_div(const core::KlDivProblem<double>& pb);

// The spatial softmax / soft-argmax (docs/semantics.md 4). runs: whether the kernels
// run this problem. float32 computes beta * (x - max) in float32, which
// matches the float64 reference only while beta is a normal float32 far from
// overflow: beta in [2^-100, 2^100], i.e. temperatures between about 1e-30
// and 1e30. Outside that the caller uses the reference. float64: always.
bool runs(const core::SpatialSoftArgmaxProblem<float>& pb);
bool runs(const core::SpatialSoftArgmaxProblem<double>& pb);
// Forward: any of keypoints, softmax and covariance.
void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<float>& pb);
void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<double>& pb);
// Backward: grad_input (required) and grad_beta (optional) from any subset
// of grad_keypoints, grad_softmax and grad_covariance.
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<float>& pb);
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<double>& pb);

// The label check and the labels' total weight (core::LabelScanProblem),
// in fixed blocks of labels whose totals are added in block order.
void scan_labels(const core::LabelScanProblem<float>& pb);
void scan_labels(const core::LabelScanProblem<double>& pb);

// n values between a 16-bit type and float32, rounding to nearest even
// (the bits of spatialsoftmax/tensor.h's scalar conversions on every target).
void widen(const BFloat16* from, float* to, std::int64_t n);
void widen(const Float16* from, float* to, std::int64_t n);
void narrow(const float* from, BFloat16* to, std::int64_t n);
void narrow(const float* from, Float16* to, std::int64_t n);

// SIMD targets compiled in that this CPU supports, best first (Highway's
// target bits), and the one the kernels dispatch to now. Highway's chosen
// target is one global, so forcing one forces every kernel.
std::vector<std::int64_t> supported_targets();
std::int64_t active_target();
std::string target_name(std::int64_t target);
// Tests: dispatch to `target` only (one of supported_targets()); 0 restores
// the normal choice.
void use_only_target_for_test(std::int64_t target);

}  // namespace spatialsoftmax::cpu
