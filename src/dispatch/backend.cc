#include "dispatch/backend.h"

#include <cstdlib>
#include <vector>

#include "core/reference.h"
#include "kernels/highway_kernels.h"
#include "parallel/thread_pool.h"
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

// The spatial soft-argmax has no SIMD kernel yet: the reference's math, run
// on the images in parallel (one block per image, d loss / d beta summed in
// image order, so the result does not depend on the thread count).
template <class T>
void spatial_soft_argmax_by_image(const core::SpatialSoftArgmaxProblem<T>& p, bool backward) {
  const core::Geometry& g = p.geom;
  const std::int64_t k = p.spatial_rank;
  const std::int64_t image = g.classes * g.pixels, points = g.classes * k;
  std::vector<double> grad_beta(static_cast<std::size_t>(g.batch), 0.0);
  parallel::for_each_block(g.batch, [&](std::int64_t n) {
    const auto shift = [](auto* ptr, std::int64_t by) { return ptr ? ptr + by : ptr; };
    core::SpatialSoftArgmaxProblem<T> q = p;
    q.geom.batch = 1;
    q.input = p.input + n * image;
    q.softmax = shift(p.softmax, n * image);
    q.grad_input = shift(p.grad_input, n * image);
    q.grad_softmax = shift(p.grad_softmax, n * image);
    q.keypoints = shift(p.keypoints, n * points);
    q.grad_keypoints = shift(p.grad_keypoints, n * points);
    q.covariance = shift(p.covariance, n * points * k);
    q.grad_covariance = shift(p.grad_covariance, n * points * k);
    q.grad_beta = p.grad_beta ? &grad_beta[static_cast<std::size_t>(n)] : nullptr;
    if (backward) {
      core::reference::spatial_soft_argmax_backward(q);
    } else {
      core::reference::spatial_soft_argmax(q);
    }
  });
  if (p.grad_beta) {
    double total = 0;
    for (double v : grad_beta) total += v;
    *p.grad_beta = total;
  }
}

// The Highway kernels (src/kernels). What they do not cover yet runs on the
// reference: the spatial soft-argmax (threaded by image).
class HighwayBackend final : public Backend {
 public:
  std::string_view name() const override { return "highway"; }
  // Runs every op; what has no SIMD kernel falls back inside the methods.
  std::string declines(Op, const core::Geometry&, DType) const override { return {}; }

#define SPATIALSOFTMAX_HIGHWAY_METHODS(T)                                                    \
  void softmax(const core::SoftmaxProblem<T>& p) const override { kernels::softmax(p); }    \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>& p) const override {           \
    kernels::softmax_backward(p);                                                            \
  }                                                                                          \
  void cross_entropy(const core::CrossEntropyProblem<T>& p) const override {                 \
    kernels::cross_entropy(p);                                                               \
  }                                                                                          \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>& p) const override {          \
    kernels::prob_minus_target(p);                                                           \
  }                                                                                          \
  void kl_div(const core::KlDivProblem<T>& p) const override { kernels::kl_div(p); }         \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& p) const override {      \
    spatial_soft_argmax_by_image(p, false);                                                  \
  }                                                                                          \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& p)             \
      const override {                                                                       \
    spatial_soft_argmax_by_image(p, true);                                                   \
  }
  SPATIALSOFTMAX_HIGHWAY_METHODS(float)
  SPATIALSOFTMAX_HIGHWAY_METHODS(double)
#undef SPATIALSOFTMAX_HIGHWAY_METHODS
};

const ReferenceBackend kReference;
const HighwayBackend kHighway;
const Backend* const kBackends[] = {&kHighway, &kReference};

}  // namespace

std::span<const Backend* const> backends() { return kBackends; }
const Backend& reference_backend() { return kReference; }

const Backend& select(Op op, const core::Geometry& geom, DType dtype) {
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

}  // namespace spatialsoftmax::dispatch
