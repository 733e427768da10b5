#include "dispatch/backend.h"

#include <cstdlib>

#include "cpu/kernels.h"
#include "dispatch/staging.h"
#ifdef SPATIALSOFTMAX_HAVE_CUDA
#include "cuda/kernels.h"
#endif
#include "parallel/thread_pool.h"
#include "reference/reference.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::dispatch {
namespace {

// The scalar reference, on one thread (it is the oracle, not a fast path).
class ReferenceBackend final : public Backend {
 public:
  std::string_view name() const override { return "reference"; }
  DeviceType device() const override { return DeviceType::kCpu; }
  std::string declines(Op, const core::Geometry&, DType) const override { return {}; }

#define SPATIALSOFTMAX_REFERENCE_METHODS(T)                                                      \
  void softmax(const core::SoftmaxProblem<T>& p, const ExecutionContext&) const override {       \
    core::reference::softmax(p);                                                                 \
  }                                                                                              \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>& p, const ExecutionContext&)       \
      const override {                                                                           \
    core::reference::softmax_backward(p);                                                        \
  }                                                                                              \
  void cross_entropy(const core::CrossEntropyProblem<T>& p, const ExecutionContext&)             \
      const override {                                                                           \
    core::reference::cross_entropy(p);                                                           \
  }                                                                                              \
  void scan_labels(const core::LabelScanProblem<T>& p, const ExecutionContext&) const override { \
    core::reference::scan_labels(p);                                                             \
  }                                                                                              \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>& p, const ExecutionContext&)      \
      const override {                                                                           \
    core::reference::prob_minus_target(p);                                                       \
  }                                                                                              \
  void kl_div(const core::KlDivProblem<T>& p, const ExecutionContext&) const override {          \
    core::reference::kl_div(p);                                                                  \
  }                                                                                              \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& p, const ExecutionContext&)  \
      const override {                                                                           \
    core::reference::spatial_soft_argmax(p);                                                     \
  }                                                                                              \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& p,                  \
                                    const ExecutionContext&) const override {                    \
    core::reference::spatial_soft_argmax_backward(p);                                            \
  }
  SPATIALSOFTMAX_REFERENCE_METHODS(float)
  SPATIALSOFTMAX_REFERENCE_METHODS(double)
// 16-bit problems in float64 (staging.h), block after block on this thread.
#define SPATIALSOFTMAX_REFERENCE_STAGED(H, op, Problem)                                     \
  void op(const core::Problem<H>& p, const ExecutionContext&) const override {              \
    const parallel::ThreadCount one(1);                                                     \
    staging::op<double>(p, [](const core::Problem<double>& q) { core::reference::op(q); }); \
  }
#define SPATIALSOFTMAX_REFERENCE_16_BIT(H)                                      \
  SPATIALSOFTMAX_REFERENCE_STAGED(H, softmax, SoftmaxProblem)                   \
  SPATIALSOFTMAX_REFERENCE_STAGED(H, softmax_backward, SoftmaxBackwardProblem)  \
  SPATIALSOFTMAX_REFERENCE_STAGED(H, cross_entropy, CrossEntropyProblem)        \
  SPATIALSOFTMAX_REFERENCE_STAGED(H, scan_labels, LabelScanProblem)             \
  SPATIALSOFTMAX_REFERENCE_STAGED(H, prob_minus_target, ProbMinusTargetProblem) \
  SPATIALSOFTMAX_REFERENCE_STAGED(H, kl_div, KlDivProblem)
  SPATIALSOFTMAX_REFERENCE_16_BIT(BFloat16)
  SPATIALSOFTMAX_REFERENCE_16_BIT(Float16)
#undef SPATIALSOFTMAX_REFERENCE_16_BIT
#undef SPATIALSOFTMAX_REFERENCE_STAGED
#undef SPATIALSOFTMAX_REFERENCE_METHODS
};

// The Highway kernels (src/cpu), on the context's thread count. Only
// float32 soft-argmax problems with a temperature beyond about 1e30 either
// way run on the reference (the kernel's float32 beta * (x - max) would lose
// range there; cpu::runs).
class HighwayBackend final : public Backend {
 public:
  std::string_view name() const override { return "highway"; }
  DeviceType device() const override { return DeviceType::kCpu; }
  // Runs every op; what has no SIMD kernel falls back inside the methods.
  std::string declines(Op, const core::Geometry&, DType) const override { return {}; }

#define SPATIALSOFTMAX_HIGHWAY_METHODS(T)                                                          \
  void softmax(const core::SoftmaxProblem<T>& p, const ExecutionContext& c) const override {       \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::softmax(p);                                                                               \
  }                                                                                                \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>& p, const ExecutionContext& c)       \
      const override {                                                                             \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::softmax_backward(p);                                                                      \
  }                                                                                                \
  void cross_entropy(const core::CrossEntropyProblem<T>& p, const ExecutionContext& c)             \
      const override {                                                                             \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::cross_entropy(p);                                                                         \
  }                                                                                                \
  void scan_labels(const core::LabelScanProblem<T>& p, const ExecutionContext& c) const override { \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::scan_labels(p);                                                                           \
  }                                                                                                \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>& p, const ExecutionContext& c)      \
      const override {                                                                             \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::prob_minus_target(p);                                                                     \
  }                                                                                                \
  void kl_div(const core::KlDivProblem<T>& p, const ExecutionContext& c) const override {          \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::kl_div(p);                                                                                \
  }                                                                                                \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& p, const ExecutionContext& c)  \
      const override {                                                                             \
    if (!cpu::runs(p)) return core::reference::spatial_soft_argmax(p);                             \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::spatial_soft_argmax(p);                                                                   \
  }                                                                                                \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& p,                    \
                                    const ExecutionContext& c) const override {                    \
    if (!cpu::runs(p)) return core::reference::spatial_soft_argmax_backward(p);                    \
    const parallel::ThreadCount threads(c.num_threads);                                            \
    cpu::spatial_soft_argmax_backward(p);                                                          \
  }
  SPATIALSOFTMAX_HIGHWAY_METHODS(float)
  SPATIALSOFTMAX_HIGHWAY_METHODS(double)
#undef SPATIALSOFTMAX_HIGHWAY_METHODS
// 16-bit problems through the float32 kernels (staging.h), blocks in parallel.
#define SPATIALSOFTMAX_HIGHWAY_STAGED(H, op, Problem)                            \
  void op(const core::Problem<H>& p, const ExecutionContext& c) const override { \
    const parallel::ThreadCount threads(c.num_threads);                          \
    staging::op<float>(p, [](const core::Problem<float>& q) { cpu::op(q); });    \
  }
// The plain tiles read and write 16 bits themselves; other cross-entropy
// problems are staged.
#define SPATIALSOFTMAX_HIGHWAY_PLAIN_OR_STAGED(H)                                      \
  void cross_entropy(const core::CrossEntropyProblem<H>& p, const ExecutionContext& c) \
      const override {                                                                 \
    const parallel::ThreadCount threads(c.num_threads);                                \
    if (cpu::cross_entropy(p)) return;                                                 \
    staging::cross_entropy<float>(                                                     \
        p, [](const core::CrossEntropyProblem<float>& q) { cpu::cross_entropy(q); });  \
  }
#define SPATIALSOFTMAX_HIGHWAY_16_BIT(H)                                      \
  SPATIALSOFTMAX_HIGHWAY_STAGED(H, softmax, SoftmaxProblem)                   \
  SPATIALSOFTMAX_HIGHWAY_STAGED(H, softmax_backward, SoftmaxBackwardProblem)  \
  SPATIALSOFTMAX_HIGHWAY_PLAIN_OR_STAGED(H)                                   \
  SPATIALSOFTMAX_HIGHWAY_STAGED(H, scan_labels, LabelScanProblem)             \
  SPATIALSOFTMAX_HIGHWAY_STAGED(H, prob_minus_target, ProbMinusTargetProblem) \
  SPATIALSOFTMAX_HIGHWAY_STAGED(H, kl_div, KlDivProblem)
  SPATIALSOFTMAX_HIGHWAY_16_BIT(BFloat16)
  SPATIALSOFTMAX_HIGHWAY_16_BIT(Float16)
#undef SPATIALSOFTMAX_HIGHWAY_16_BIT
#undef SPATIALSOFTMAX_HIGHWAY_STAGED
#undef SPATIALSOFTMAX_HIGHWAY_PLAIN_OR_STAGED
};

// CPU problems with nothing to compute: every output is empty and every sum
// stays 0, so no CPU backend is called. They may assume work to do; without
// this, per-class setup ran over C = 2^32 classes of zero positions.
class NothingToDo final : public Backend {
 public:
  std::string_view name() const override { return "none (empty problem)"; }
  DeviceType device() const override {
    return DeviceType::kCpu;
  }  // never asked: select returns it on any device
  std::string declines(Op, const core::Geometry&, DType) const override { return {}; }

#define SPATIALSOFTMAX_EMPTY_METHODS(T)                                                         \
  void softmax(const core::SoftmaxProblem<T>&, const ExecutionContext&) const override {}       \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>&, const ExecutionContext&)        \
      const override {}                                                                         \
  void cross_entropy(const core::CrossEntropyProblem<T>&, const ExecutionContext&)              \
      const override {}                                                                         \
  void scan_labels(const core::LabelScanProblem<T>&, const ExecutionContext&) const override {} \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>&, const ExecutionContext&)       \
      const override {}                                                                         \
  void kl_div(const core::KlDivProblem<T>&, const ExecutionContext&) const override {}
#define SPATIALSOFTMAX_EMPTY_SPATIAL(T)                                                       \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>&, const ExecutionContext&) \
      const override {}                                                                       \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>&,                 \
                                    const ExecutionContext&) const override {}
  SPATIALSOFTMAX_EMPTY_METHODS(float)
  SPATIALSOFTMAX_EMPTY_METHODS(double)
  SPATIALSOFTMAX_EMPTY_METHODS(BFloat16)
  SPATIALSOFTMAX_EMPTY_METHODS(Float16)
  SPATIALSOFTMAX_EMPTY_SPATIAL(float)
  SPATIALSOFTMAX_EMPTY_SPATIAL(double)
#undef SPATIALSOFTMAX_EMPTY_SPATIAL
#undef SPATIALSOFTMAX_EMPTY_METHODS
};

// The spatial ops compute per channel (N * C of them; a channel of zero
// pixels still has outputs); the others per position, and every output of a
// problem without positions is empty (softmax's entropy map included).
bool is_empty(Op op, const core::Geometry& g) {
  const bool per_channel = op == Op::kSpatialSoftArgmax || op == Op::kSpatialSoftArgmaxBackward;
  return per_channel ? g.batch == 0 || g.classes == 0 : g.positions() == 0;
}

#ifdef SPATIALSOFTMAX_HAVE_CUDA
// The CUDA kernels (src/cuda), on the device the views' memory is on (which
// must be the calling thread's current CUDA device) and the context's
// stream. Every operation but the label scan has a kernel: on a device the
// loss kernels check the labels themselves (core::DeviceScalars).
class CudaBackend final : public Backend {
 public:
  std::string_view name() const override { return "cuda"; }
  DeviceType device() const override { return DeviceType::kCuda; }
  std::string declines(Op op, const core::Geometry&, DType dtype) const override {
    if (is_16_bit(dtype)) {
      return "no bfloat16 or float16 CUDA kernels yet (float32 and float64 only)";
    }
    switch (op) {
      case Op::kSoftmax:
      case Op::kSoftmaxBackward:
      case Op::kCrossEntropy:
      case Op::kProbMinusTarget:
      case Op::kKlDiv:
      case Op::kSpatialSoftArgmax:
      case Op::kSpatialSoftArgmaxBackward:
        return {};
      case Op::kScanLabels:
        break;
    }
    return "labels in device memory are checked by the loss kernels themselves";
  }
  void check_device(Device device, std::string_view op) const override {
    cuda::check_current_device(device.index, op);
  }
  Tensor allocate(DType dtype, const Shape& shape, bool zeroed, Device device,
                  const ExecutionContext& context) const override {
    return cuda::allocate(dtype, shape, zeroed, device, context);
  }
  void copy(void* dst, const void* src, std::size_t bytes,
            const ExecutionContext& context) const override {
    cuda::copy(dst, src, bytes, context);
  }
  bool take_error(const ExecutionContext& context, bool wait,
                  core::DeviceError* error) const override {
    return cuda::take_error(context, wait, error);
  }

#define SPATIALSOFTMAX_CUDA_METHODS(T)                                                            \
  void softmax(const core::SoftmaxProblem<T>& p, const ExecutionContext& c) const override {      \
    cuda::softmax(p, c);                                                                          \
  }                                                                                               \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>& p, const ExecutionContext& c)      \
      const override {                                                                            \
    cuda::softmax_backward(p, c);                                                                 \
  }                                                                                               \
  void cross_entropy(const core::CrossEntropyProblem<T>& p, const ExecutionContext& c)            \
      const override {                                                                            \
    cuda::cross_entropy(p, c);                                                                    \
  }                                                                                               \
  void scan_labels(const core::LabelScanProblem<T>&, const ExecutionContext&) const override {    \
    declined("scan_labels");                                                                      \
  }                                                                                               \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>& p, const ExecutionContext& c)     \
      const override {                                                                            \
    cuda::prob_minus_target(p, c);                                                                \
  }                                                                                               \
  void kl_div(const core::KlDivProblem<T>& p, const ExecutionContext& c) const override {         \
    cuda::kl_div(p, c);                                                                           \
  }                                                                                               \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& p, const ExecutionContext& c) \
      const override {                                                                            \
    cuda::spatial_soft_argmax(p, c);                                                              \
  }                                                                                               \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& p,                   \
                                    const ExecutionContext& c) const override {                   \
    cuda::spatial_soft_argmax_backward(p, c);                                                     \
  }
  SPATIALSOFTMAX_CUDA_METHODS(float)
  SPATIALSOFTMAX_CUDA_METHODS(double)
#undef SPATIALSOFTMAX_CUDA_METHODS
#define SPATIALSOFTMAX_CUDA_DECLINED(H)                                                        \
  void softmax(const core::SoftmaxProblem<H>&, const ExecutionContext&) const override {       \
    declined("softmax");                                                                       \
  }                                                                                            \
  void softmax_backward(const core::SoftmaxBackwardProblem<H>&, const ExecutionContext&)       \
      const override {                                                                         \
    declined("softmax_backward");                                                              \
  }                                                                                            \
  void cross_entropy(const core::CrossEntropyProblem<H>&, const ExecutionContext&)             \
      const override {                                                                         \
    declined("cross_entropy");                                                                 \
  }                                                                                            \
  void scan_labels(const core::LabelScanProblem<H>&, const ExecutionContext&) const override { \
    declined("scan_labels");                                                                   \
  }                                                                                            \
  void prob_minus_target(const core::ProbMinusTargetProblem<H>&, const ExecutionContext&)      \
      const override {                                                                         \
    declined("prob_minus_target");                                                             \
  }                                                                                            \
  void kl_div(const core::KlDivProblem<H>&, const ExecutionContext&) const override {          \
    declined("kl_div");                                                                        \
  }
  SPATIALSOFTMAX_CUDA_DECLINED(BFloat16)
  SPATIALSOFTMAX_CUDA_DECLINED(Float16)
#undef SPATIALSOFTMAX_CUDA_DECLINED

 private:
  // dispatch never calls an operation this backend declines.
  [[noreturn]] static void declined(const char* op) {
    throw Error(std::string("cuda backend: ") + op + " was dispatched though it is declined");
  }
};
#endif

const NothingToDo kNothingToDo;
const ReferenceBackend kReference;
const HighwayBackend kHighway;
}  // namespace

std::span<const Backend* const> backends() {
#ifdef SPATIALSOFTMAX_HAVE_CUDA
  static const CudaBackend cuda_backend;
  static const Backend* const list[] = {&cuda_backend, &kHighway, &kReference};
#else
  static const Backend* const list[] = {&kHighway, &kReference};
#endif
  return list;
}

Tensor Backend::allocate(DType, const Shape&, bool, Device device, const ExecutionContext&) const {
  throw Error(describe(*this) + ": no device memory to allocate on " + device_name(device));
}
void Backend::copy(void*, const void*, std::size_t, const ExecutionContext&) const {
  throw Error(describe(*this) + ": no device memory to copy");
}

bool take_device_error(const ExecutionContext& context, bool wait, core::DeviceError* error) {
  for (const Backend* b : backends()) {
    if (b->device() != DeviceType::kCpu && b->take_error(context, wait, error)) return true;
  }
  return false;
}

std::string describe(const Backend& backend) {
  return std::string(backend.name()) +
         (backend.device() == DeviceType::kCpu ? " (cpu)" : " (cuda)");
}
const Backend& reference_backend() { return kReference; }

namespace {

std::string backend_list() {
  std::string names;
  for (const Backend* b : backends()) names += (names.empty() ? "" : ", ") + describe(*b);
  return names;
}

const Backend& choose(Op op, const core::Geometry& geom, DType dtype, Device device,
                      std::string_view api_op) {
  const char* forced = std::getenv("SPATIALSOFTMAX_BACKEND");
  if (forced && *forced) {
    for (const Backend* b : backends()) {
      if (b->name() != forced) continue;
      if (b->device() != device.type) {
        throw Error(std::string(api_op) + ": SPATIALSOFTMAX_BACKEND=" + forced +
                    " does not run on " + device_name(device) + ", where the inputs are");
      }
      if (std::string why = b->declines(op, geom, dtype); !why.empty()) {
        throw Error("SPATIALSOFTMAX_BACKEND=" + std::string(forced) + " declines: " + why);
      }
      return *b;
    }
    throw Error("SPATIALSOFTMAX_BACKEND = '" + std::string(forced) +
                "', expected one of: " + backend_list());
  }
  std::string declined;
  for (const Backend* b : backends()) {
    if (b->device() != device.type) continue;
    std::string why = b->declines(op, geom, dtype);
    if (why.empty()) return *b;
    declined += "; " + std::string(b->name()) + " declines: " + why;
  }
  throw Error(std::string(api_op) + ": no backend runs on " + device_name(device) +
              " (compiled in: " + backend_list() + ")" + declined);
}

}  // namespace

const Backend& memory_backend(Device device, std::string_view api_op) {
  for (const Backend* b : backends()) {
    if (b->device() == device.type) {
      b->check_device(device, api_op);
      return *b;
    }
  }
  throw Error(std::string(api_op) + ": no backend runs on " + device_name(device) +
              " (compiled in: " + backend_list() + ")");
}

const Backend& select(Op op, const core::Geometry& geom, DType dtype, Device device,
                      std::string_view api_op) {
  const Backend& chosen = choose(op, geom, dtype, device, api_op);  // still checks the device
  if (chosen.device() == DeviceType::kCpu) return is_empty(op, geom) ? kNothingToDo : chosen;
  // A device backend gets empty problems too: the scalars it owns (a mean
  // over nothing, the weights' checks) are still its to write.
  chosen.check_device(device, api_op);
  return chosen;
}

}  // namespace spatialsoftmax::dispatch
