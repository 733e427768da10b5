#include "dispatch/backend.h"

#include <cstdlib>

#include "core/reference.h"
#include "cpu/kernels.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::dispatch {
namespace {

class ReferenceBackend final : public Backend {
 public:
  std::string_view name() const override { return "reference"; }
  std::string declines(Op, const core::Geometry&, DType) const override { return {}; }

#define SPATIALSOFTMAX_REFERENCE_METHODS(T)                                                  \
  void softmax(const core::SoftmaxProblem<T>& p) const override {                            \
    core::reference::softmax(p);                                                             \
  }                                                                                          \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>& p) const override {           \
    core::reference::softmax_backward(p);                                                    \
  }                                                                                          \
  void cross_entropy(const core::CrossEntropyProblem<T>& p) const override {                 \
    core::reference::cross_entropy(p);                                                       \
  }                                                                                          \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>& p) const override {          \
    core::reference::prob_minus_target(p);                                                   \
  }                                                                                          \
  void kl_div(const core::KlDivProblem<T>& p) const override { core::reference::kl_div(p); } \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& p) const override {      \
    core::reference::spatial_soft_argmax(p);                                                 \
  }                                                                                          \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& p)             \
      const override {                                                                       \
    core::reference::spatial_soft_argmax_backward(p);                                        \
  }
  SPATIALSOFTMAX_REFERENCE_METHODS(float)
  SPATIALSOFTMAX_REFERENCE_METHODS(double)
#undef SPATIALSOFTMAX_REFERENCE_METHODS
};

// The Highway kernels (src/cpu). Only float32 soft-argmax problems with a
// temperature beyond about 1e30 either way run on the reference (the kernel's
// float32 beta * (x - max) would lose range there; cpu::runs).
class HighwayBackend final : public Backend {
 public:
  std::string_view name() const override { return "highway"; }
  // Runs every op; what has no SIMD kernel falls back inside the methods.
  std::string declines(Op, const core::Geometry&, DType) const override { return {}; }

#define SPATIALSOFTMAX_HIGHWAY_METHODS(T)                                                    \
  void softmax(const core::SoftmaxProblem<T>& p) const override { cpu::softmax(p); }        \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>& p) const override {           \
    cpu::softmax_backward(p);                                                                \
  }                                                                                          \
  void cross_entropy(const core::CrossEntropyProblem<T>& p) const override {                 \
    cpu::cross_entropy(p);                                                                   \
  }                                                                                          \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>& p) const override {          \
    cpu::prob_minus_target(p);                                                               \
  }                                                                                          \
  void kl_div(const core::KlDivProblem<T>& p) const override { cpu::kl_div(p); }             \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& p) const override {      \
    if (!cpu::runs(p)) {                                                                     \
      core::reference::spatial_soft_argmax(p);                                               \
    } else {                                                                                 \
      cpu::spatial_soft_argmax(p);                                                           \
    }                                                                                        \
  }                                                                                          \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& p)             \
      const override {                                                                       \
    if (!cpu::runs(p)) {                                                                     \
      core::reference::spatial_soft_argmax_backward(p);                                      \
    } else {                                                                                 \
      cpu::spatial_soft_argmax_backward(p);                                                  \
    }                                                                                        \
  }
  SPATIALSOFTMAX_HIGHWAY_METHODS(float)
  SPATIALSOFTMAX_HIGHWAY_METHODS(double)
#undef SPATIALSOFTMAX_HIGHWAY_METHODS
};

// Problems with nothing to compute: every output is empty and every sum
// stays 0, so no backend is called. Backends may assume work to do; without
// this, per-class setup ran over C = 2^32 classes of zero positions.
class NothingToDo final : public Backend {
 public:
  std::string_view name() const override { return "none (empty problem)"; }
  std::string declines(Op, const core::Geometry&, DType) const override { return {}; }

#define SPATIALSOFTMAX_EMPTY_METHODS(T)                                                    \
  void softmax(const core::SoftmaxProblem<T>&) const override {}                           \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>&) const override {}          \
  void cross_entropy(const core::CrossEntropyProblem<T>&) const override {}                \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>&) const override {}         \
  void kl_div(const core::KlDivProblem<T>&) const override {}                              \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>&) const override {}     \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>&) const override {}
  SPATIALSOFTMAX_EMPTY_METHODS(float)
  SPATIALSOFTMAX_EMPTY_METHODS(double)
#undef SPATIALSOFTMAX_EMPTY_METHODS
};

// The spatial ops compute per channel (N * C of them; a channel of zero
// pixels still has outputs); the others per position, and every output of a
// problem without positions is empty (softmax's entropy map included).
bool is_empty(Op op, const core::Geometry& g) {
  const bool per_channel = op == Op::kSpatialSoftArgmax || op == Op::kSpatialSoftArgmaxBackward;
  return per_channel ? g.batch == 0 || g.classes == 0 : g.positions() == 0;
}

const NothingToDo kNothingToDo;
const ReferenceBackend kReference;
const HighwayBackend kHighway;
const Backend* const kBackends[] = {&kHighway, &kReference};

}  // namespace

std::span<const Backend* const> backends() { return kBackends; }
const Backend& reference_backend() { return kReference; }

namespace {

const Backend& choose(Op op, const core::Geometry& geom, DType dtype) {
  const char* forced = std::getenv("SPATIALSOFTMAX_BACKEND");
  for (const Backend* b : backends()) {
    if (forced && *forced) {
      if (b->name() != forced) continue;
      if (std::string why = b->declines(op, geom, dtype); !why.empty()) {
        throw Error("SPATIALSOFTMAX_BACKEND=" + std::string(forced) + " declines: " + why);
      }
      return *b;
    }
    if (b->declines(op, geom, dtype).empty()) return *b;
  }
  if (forced && *forced) {
    std::string names;
    for (const Backend* b : backends()) names += (names.empty() ? "" : ", ") + std::string(b->name());
    throw Error("SPATIALSOFTMAX_BACKEND = '" + std::string(forced) + "', expected one of: " + names);
  }
  return kReference;
}

}  // namespace

const Backend& select(Op op, const core::Geometry& geom, DType dtype) {
  const Backend& chosen = choose(op, geom, dtype);  // still checks SPATIALSOFTMAX_BACKEND
  return is_empty(op, geom) ? kNothingToDo : chosen;
}

}  // namespace spatialsoftmax::dispatch
