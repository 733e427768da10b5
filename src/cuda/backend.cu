// The CUDA backend: runs on the device the views' memory is on (the calling
// thread's current CUDA device) and on the context's stream. It declines the
// operations whose kernels are not written yet, so that dispatch names them.
#include <string>

#include "cuda/backend.h"
#include "cuda/kernels.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::cuda {
namespace {

class CudaBackend final : public dispatch::Backend {
 public:
  std::string_view name() const override { return "cuda"; }
  DeviceType device() const override { return DeviceType::kCuda; }
  std::string declines(dispatch::Op op, const core::Geometry&, DType) const override {
    switch (op) {
      case dispatch::Op::kSoftmax:
      case dispatch::Op::kSoftmaxBackward:
        return {};
      default:
        return "this operation has no CUDA kernel yet";
    }
  }

#define SPATIALSOFTMAX_CUDA_METHODS(T)                                                         \
  void softmax(const core::SoftmaxProblem<T>& p, const ExecutionContext& c) const override {   \
    cuda::softmax(p, c);                                                                       \
  }                                                                                            \
  void softmax_backward(const core::SoftmaxBackwardProblem<T>& p, const ExecutionContext& c)   \
      const override {                                                                         \
    cuda::softmax_backward(p, c);                                                              \
  }                                                                                            \
  void cross_entropy(const core::CrossEntropyProblem<T>&, const ExecutionContext&)             \
      const override {                                                                         \
    declined("cross_entropy");                                                                 \
  }                                                                                            \
  void scan_labels(const core::LabelScanProblem<T>&, const ExecutionContext&) const override { \
    declined("scan_labels");                                                                   \
  }                                                                                            \
  void prob_minus_target(const core::ProbMinusTargetProblem<T>&, const ExecutionContext&)      \
      const override {                                                                         \
    declined("prob_minus_target");                                                             \
  }                                                                                            \
  void kl_div(const core::KlDivProblem<T>&, const ExecutionContext&) const override {          \
    declined("kl_div");                                                                        \
  }                                                                                            \
  void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>&, const ExecutionContext&)  \
      const override {                                                                         \
    declined("spatial_soft_argmax");                                                           \
  }                                                                                            \
  void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>&,                  \
                                    const ExecutionContext&) const override {                  \
    declined("spatial_soft_argmax_backward");                                                  \
  }
  SPATIALSOFTMAX_CUDA_METHODS(float)
  SPATIALSOFTMAX_CUDA_METHODS(double)
#undef SPATIALSOFTMAX_CUDA_METHODS

 private:
  // dispatch never calls an operation this backend declines.
  [[noreturn]] static void declined(const char* op) {
    throw Error(std::string("cuda backend: ") + op + " was dispatched though it is declined");
  }
};

const CudaBackend kCuda;

}  // namespace

const dispatch::Backend& backend() { return kCuda; }

}  // namespace spatialsoftmax::cuda
