// softmax, log_softmax, entropy and the two backward functions: validate,
// place the output (the caller's view or a new tensor), run the selected
// backend.
#include <string_view>

#include "api/outputs.h"
#include "api/validate.h"
#include "dispatch/backend.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax {
namespace {

using api::ClassTensor;
using api::Dense;
using api::visit_float;

enum class Want { kProb, kLogProb, kEntropy };

// `into` null: the output is allocated and returned.
Tensor class_softmax(std::string_view op, const TensorView& logits, ClassAxis axis, Want want,
                     const MutableTensorView* into, const ExecutionContext& context) {
  const ClassTensor info = api::analyze_class_tensor(op, "logits", logits, axis);
  const Device device = api::common_device(op, {{"logits", &logits}});
  const bool entropy = want == Want::kEntropy;
  const std::string_view out_name = want == Want::kProb      ? "prob"
                                    : want == Want::kLogProb ? "log_prob"
                                                             : "entropy";
  api::Footprint footprint(op, device, {{"logits", &logits}}, context);
  Tensor out;  // the kernels write every element: not zeroed first
  void* data =
      footprint.place(out_name, into, logits.dtype(), entropy ? info.map_shape : logits.shape(),
                      entropy ? "((N, d1..dk))" : "(the logits' shape)", &out);
  const Dense x(logits);
  visit_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    core::SoftmaxProblem<T> pb;
    pb.geom = info.geom;
    pb.logits = x.get<T>();
    T* const p = static_cast<T*>(data);
    if (want == Want::kProb) pb.prob = p;
    if (want == Want::kLogProb) pb.log_prob = p;
    if (entropy) pb.entropy = p;
    dispatch::select(dispatch::Op::kSoftmax, info.geom, logits.dtype(), device, op)
        .softmax(pb, context);
  });
  return out;
}

Tensor class_softmax_backward(std::string_view op, const TensorView& output,
                              const TensorView& grad_output, ClassAxis axis, bool log,
                              const MutableTensorView* into, const ExecutionContext& context) {
  const std::string_view output_name = log ? "log_prob" : "prob";
  const std::string_view grad_name = log ? "grad_log_prob" : "grad_prob";
  const ClassTensor info = api::analyze_class_tensor(op, output_name, output, axis);
  api::check_dtype(op, grad_name, grad_output, output.dtype());
  api::check_shape(op, grad_name, grad_output, output.shape(),
                   log ? "(log_prob's shape)" : "(prob's shape)");
  const Device device = api::common_device(op, {{output_name, &output}, {grad_name, &grad_output}});
  api::Footprint footprint(op, device, {{output_name, &output}, {grad_name, &grad_output}},
                           context);
  Tensor dx;
  void* data = footprint.place("grad_logits", into, output.dtype(), output.shape(),
                               log ? "(log_prob's shape)" : "(prob's shape)", &dx, true);
  const Dense y(output), gy(grad_output);
  visit_float(output.dtype(), [&](auto tag) {
    using T = decltype(tag);
    core::SoftmaxBackwardProblem<T> pb;
    pb.geom = info.geom;
    pb.from_log_softmax = log;
    pb.output = y.get<T>();
    pb.grad_output = gy.get<T>();
    pb.grad_logits = static_cast<T*>(data);
    dispatch::select(dispatch::Op::kSoftmaxBackward, info.geom, output.dtype(), device, op)
        .softmax_backward(pb, context);
  });
  return dx;
}

}  // namespace

Tensor softmax(const TensorView& logits, ClassAxis axis, const ExecutionContext& context) {
  return class_softmax("softmax", logits, axis, Want::kProb, nullptr, context);
}
Tensor log_softmax(const TensorView& logits, ClassAxis axis, const ExecutionContext& context) {
  return class_softmax("log_softmax", logits, axis, Want::kLogProb, nullptr, context);
}
Tensor entropy(const TensorView& logits, ClassAxis axis, const ExecutionContext& context) {
  return class_softmax("entropy", logits, axis, Want::kEntropy, nullptr, context);
}
Tensor softmax_backward(const TensorView& prob, const TensorView& grad_prob, ClassAxis axis,
                        const ExecutionContext& context) {
  return class_softmax_backward("softmax_backward", prob, grad_prob, axis, false, nullptr, context);
}
Tensor log_softmax_backward(const TensorView& log_prob, const TensorView& grad_log_prob,
                            ClassAxis axis, const ExecutionContext& context) {
  return class_softmax_backward("log_softmax_backward", log_prob, grad_log_prob, axis, true,
                                nullptr, context);
}

void softmax_into(const TensorView& logits, const MutableTensorView& prob, ClassAxis axis,
                  const ExecutionContext& context) {
  class_softmax("softmax_into", logits, axis, Want::kProb, &prob, context);
}
void log_softmax_into(const TensorView& logits, const MutableTensorView& log_prob, ClassAxis axis,
                      const ExecutionContext& context) {
  class_softmax("log_softmax_into", logits, axis, Want::kLogProb, &log_prob, context);
}
void entropy_into(const TensorView& logits, const MutableTensorView& entropy, ClassAxis axis,
                  const ExecutionContext& context) {
  class_softmax("entropy_into", logits, axis, Want::kEntropy, &entropy, context);
}
void softmax_backward_into(const TensorView& prob, const TensorView& grad_prob,
                           const MutableTensorView& grad_logits, ClassAxis axis,
                           const ExecutionContext& context) {
  class_softmax_backward("softmax_backward_into", prob, grad_prob, axis, false, &grad_logits,
                         context);
}
void log_softmax_backward_into(const TensorView& log_prob, const TensorView& grad_log_prob,
                               const MutableTensorView& grad_logits, ClassAxis axis,
                               const ExecutionContext& context) {
  class_softmax_backward("log_softmax_backward_into", log_prob, grad_log_prob, axis, true,
                         &grad_logits, context);
}

}  // namespace spatialsoftmax
