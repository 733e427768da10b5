// kl_div and kl_div_backward: validate, place the output, run the selected
// backend, reduce.
#include <limits>
#include <optional>
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

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The forward (grad_output absent) writes the loss (logits' shape for none,
// else a scalar), the backward dX. `into` null: allocated and returned.
Tensor run_kl_div(std::string_view op, const TensorView& logits, const TensorView& target,
                  const std::optional<TensorView>& grad_output, const KlDivOptions& options,
                  const MutableTensorView* into, const ExecutionContext& context) {
  const ClassTensor info = api::analyze_class_tensor(op, "logits", logits, options.class_axis);
  api::check_enum(op, "reduction", static_cast<int>(options.reduction), 4);
  const DType dtype = logits.dtype();
  api::check_dtype(op, "target", target, dtype);
  api::check_shape(op, "target", target, logits.shape(), "(the logits' shape)");
  const double elements = static_cast<double>(info.geom.elements());
  double denominator = 1;
  switch (options.reduction) {
    case Reduction::kNone:
    case Reduction::kSum:
      break;
    case Reduction::kMean:
      denominator = elements;
      break;
    case Reduction::kBatchMean:
      denominator = static_cast<double>(info.geom.batch);
      break;
  }
  const bool map = options.reduction == Reduction::kNone;
  const TensorView* grad_view = grad_output ? &*grad_output : nullptr;
  const std::initializer_list<api::NamedView> inputs = {
      {"logits", &logits}, {"target", &target}, {"grad_output", grad_view}};
  const Device device = api::common_device(op, inputs);
  const bool on_device = device.type != DeviceType::kCpu;
  // Sizes are the denominators: the scalar and the backward's factor are
  // sum / d and g / d (d = 1 for sum).
  const core::LossScalar loss_rule{core::LossRule::kMean, 1.0, kNaN};
  const core::GradScalar grad_rule{core::GradRule::kMean};
  Dense grad_map;
  double upstream = 0;  // read here, or on a device by the kernel
  if (grad_output) {
    if (map) {
      api::check_dtype(op, "grad_output", *grad_output, dtype);
      api::check_shape(op, "grad_output", *grad_output, logits.shape(),
                       "(reduction none: the logits' shape)");
      grad_map = Dense(*grad_output);
    } else if (on_device) {
      api::check_scalar_grad(op, "grad_output", *grad_output, dtype);
    } else {
      upstream = api::scalar_grad(op, "grad_output", *grad_output, dtype);
    }
  }
  api::Footprint footprint(op, device, inputs, context);
  Tensor out;
  void* data = nullptr;
  if (grad_output) {
    data = footprint.place("grad_logits", into, dtype, logits.shape(), "(the logits' shape)", &out,
                           true);
  } else {
    data =
        footprint.place("output", into, dtype, map ? logits.shape() : Shape{},
                        map ? "(reduction none: the logits' shape)" : "(a scalar: ())", &out, true);
  }
  const Dense x(logits), t(target);
  double sum = 0;
  visit_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    core::KlDivProblem<T> pb;
    pb.geom = info.geom;
    pb.logits = x.get<T>();
    pb.target = t.get<T>();
    pb.log_target = options.log_target;
    if (!grad_output) {
      pb.out_map = map ? static_cast<T*>(data) : nullptr;
      pb.out_sum = &sum;
    } else {
      pb.grad_logits = static_cast<T*>(data);
      pb.grad_map = grad_map.get<T>();
      pb.grad_scale = static_cast<typename decltype(pb)::Scalar>(
          core::finish_grad(grad_rule, upstream, denominator));
    }
    core::DeviceScalars<T> scalars;
    if (on_device) {
      scalars.denominator = denominator;
      scalars.loss = !grad_output && !map ? static_cast<T*>(data) : nullptr;
      scalars.loss_rule = loss_rule;
      scalars.grad = grad_output && !map ? static_cast<const T*>(grad_output->data()) : nullptr;
      scalars.grad_rule = grad_rule;
      pb.device = &scalars;
    }
    dispatch::select(dispatch::Op::kKlDiv, info.geom, dtype, device, op).kl_div(pb, context);
    if (!on_device && !grad_output && !map)
      *static_cast<T*>(data) = api::element_from<T>(core::finish_loss(loss_rule, sum, denominator));
  });
  return out;
}

}  // namespace

Tensor kl_div(const TensorView& logits, const TensorView& target, const KlDivOptions& options,
              const ExecutionContext& context) {
  return run_kl_div("kl_div", logits, target, std::nullopt, options, nullptr, context);
}

Tensor kl_div_backward(const TensorView& logits, const TensorView& target,
                       const TensorView& grad_output, const KlDivOptions& options,
                       const ExecutionContext& context) {
  return run_kl_div("kl_div_backward", logits, target, grad_output, options, nullptr, context);
}

void kl_div_into(const TensorView& logits, const TensorView& target,
                 const MutableTensorView& output, const KlDivOptions& options,
                 const ExecutionContext& context) {
  run_kl_div("kl_div_into", logits, target, std::nullopt, options, &output, context);
}

void kl_div_backward_into(const TensorView& logits, const TensorView& target,
                          const TensorView& grad_output, const MutableTensorView& grad_logits,
                          const KlDivOptions& options, const ExecutionContext& context) {
  run_kl_div("kl_div_backward_into", logits, target, grad_output, options, &grad_logits, context);
}

}  // namespace spatialsoftmax
