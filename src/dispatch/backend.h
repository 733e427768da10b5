// The seam between the API and the kernels. A backend runs the problems of
// core/problems.h; backends are kept in an ordered list, best first, with the
// scalar reference last, and the first one that does not decline a problem
// runs it (the pattern of oneDNN's implementation lists). Later issues add
// the Highway and CUDA backends to this list; the API does not change.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "core/problems.h"

namespace spatialsoftmax::dispatch {

enum class Op {
  kSoftmax,
  kSoftmaxBackward,
  kCrossEntropy,
  kProbMinusTarget,
  kKlDiv,
  kSpatialSoftArgmax,
  kSpatialSoftArgmaxBackward,
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // Empty if this backend runs `op` for this geometry and dtype; otherwise the
  // reason it declines, for diagnostics ("no float64 kernels", ...).
  virtual std::string declines(Op op, const core::Geometry& geom, DType dtype) const = 0;

#define SPATIALSOFTMAX_BACKEND_METHODS(T)                                                \
  virtual void softmax(const core::SoftmaxProblem<T>&) const = 0;                        \
  virtual void softmax_backward(const core::SoftmaxBackwardProblem<T>&) const = 0;       \
  virtual void cross_entropy(const core::CrossEntropyProblem<T>&) const = 0;             \
  virtual void prob_minus_target(const core::ProbMinusTargetProblem<T>&) const = 0;      \
  virtual void kl_div(const core::KlDivProblem<T>&) const = 0;                           \
  virtual void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>&) const = 0;  \
  virtual void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>&) const = 0;
  SPATIALSOFTMAX_BACKEND_METHODS(float)
  SPATIALSOFTMAX_BACKEND_METHODS(double)
#undef SPATIALSOFTMAX_BACKEND_METHODS
};

// All backends compiled in, best first; the reference is always last and
// never declines.
std::span<const Backend* const> backends();
const Backend& reference_backend();
// The backend that runs `op`: the first in backends() that does not decline,
// or the one named by the environment variable SPATIALSOFTMAX_BACKEND if set
// (an Error if it is unknown or declines). A problem with nothing to compute
// (no positions; for the spatial ops, no channels) gets a backend that does
// nothing, so that no backend meets empty work.
const Backend& select(Op op, const core::Geometry& geom, DType dtype);

}  // namespace spatialsoftmax::dispatch
