// The seam between the API and the kernels. A backend runs the problems of
// core/problems.h on one device type; backends are kept in an ordered list,
// best first (for the CPU the scalar reference last), and the first one for
// the call's device that does not decline a problem runs it (the pattern of
// oneDNN's implementation lists). Each call gets the caller's
// ExecutionContext: the CPU backends run on its thread count, a CUDA backend
// on its stream.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "reference/problems.h"
#include "spatialsoftmax/device.h"

namespace spatialsoftmax::dispatch {

enum class Op {
  kSoftmax,
  kSoftmaxBackward,
  kCrossEntropy,
  kScanLabels,
  kProbMinusTarget,
  kKlDiv,
  kSpatialSoftArgmax,
  kSpatialSoftArgmaxBackward,
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual DeviceType device() const = 0;
  // Empty if this backend runs `op` for this geometry and dtype; otherwise the
  // reason it declines, for diagnostics ("no float64 kernels", ...).
  virtual std::string declines(Op op, const core::Geometry& geom, DType dtype) const = 0;

  // An Error naming `op` unless this backend can run now on `device` (a
  // CUDA backend runs on the current CUDA device only).
  virtual void check_device(Device /*device*/, std::string_view /*op*/) const {}
  // A device backend's memory: a dense tensor on `device` (zero-filled if
  // `zeroed`) for the outputs the API allocates, and copies of `bytes`
  // between host memory and this backend's device, complete on return. CPU
  // backends have no device memory (an Error).
  virtual Tensor allocate(DType, const Shape&, bool /*zeroed*/, Device device,
                          const ExecutionContext&) const;
  virtual void copy(void* /*dst*/, const void* /*src*/, std::size_t /*bytes*/,
                    const ExecutionContext&) const;
  // A device backend's checks record errors on the device (kernels cannot
  // throw): the first since the last call, after waiting for the context's
  // stream if `wait`. CPU backends throw instead and have none.
  virtual bool take_error(const ExecutionContext&, bool /*wait*/, core::DeviceError*) const {
    return false;
  }

// The loss family, softmax and log_softmax, for float32, float64 and the
// 16-bit storage types; the spatial soft-argmax for float32 and float64.
#define SPATIALSOFTMAX_BACKEND_METHODS(T)                                                         \
  virtual void softmax(const core::SoftmaxProblem<T>&, const ExecutionContext&) const = 0;        \
  virtual void softmax_backward(const core::SoftmaxBackwardProblem<T>&, const ExecutionContext&)  \
      const = 0;                                                                                  \
  virtual void cross_entropy(const core::CrossEntropyProblem<T>&, const ExecutionContext&)        \
      const = 0;                                                                                  \
  virtual void scan_labels(const core::LabelScanProblem<T>&, const ExecutionContext&) const = 0;  \
  virtual void prob_minus_target(const core::ProbMinusTargetProblem<T>&, const ExecutionContext&) \
      const = 0;                                                                                  \
  virtual void kl_div(const core::KlDivProblem<T>&, const ExecutionContext&) const = 0;
#define SPATIALSOFTMAX_SPATIAL_METHODS(T)                                             \
  virtual void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>&,          \
                                   const ExecutionContext&) const = 0;                \
  virtual void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>&, \
                                            const ExecutionContext&) const = 0;
  SPATIALSOFTMAX_BACKEND_METHODS(float)
  SPATIALSOFTMAX_BACKEND_METHODS(double)
  SPATIALSOFTMAX_BACKEND_METHODS(BFloat16)
  SPATIALSOFTMAX_BACKEND_METHODS(Float16)
  SPATIALSOFTMAX_SPATIAL_METHODS(float)
  SPATIALSOFTMAX_SPATIAL_METHODS(double)
#undef SPATIALSOFTMAX_SPATIAL_METHODS
#undef SPATIALSOFTMAX_BACKEND_METHODS
};

// All backends compiled in, best first per device; the CPU's reference is
// its last and never declines.
std::span<const Backend* const> backends();
const Backend& reference_backend();
// The backend that owns `device`'s memory: the first of backends() for its
// device type (an Error naming `api_op` if there is none).
const Backend& memory_backend(Device device, std::string_view api_op);
// The first error any device backend recorded (Backend::take_error).
bool take_device_error(const ExecutionContext& context, bool wait, core::DeviceError* error);

// "highway (cpu)": the name and the device type, for messages and lists.
std::string describe(const Backend& backend);
// The backend that runs `op` on `device`: the first of backends() for that
// device type that does not decline, or the one named by the environment
// variable SPATIALSOFTMAX_BACKEND if set (an Error if it is unknown, runs on
// another device or declines). No backend for the device is an Error naming
// `api_op` (the operation as the caller called it) and the device. A problem
// with nothing to compute (no positions; for the spatial ops, no channels)
// gets a backend that does nothing, so that no backend meets empty work.
const Backend& select(Op op, const core::Geometry& geom, DType dtype, Device device,
                      std::string_view api_op);

}  // namespace spatialsoftmax::dispatch
