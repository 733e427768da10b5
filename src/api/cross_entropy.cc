// The cross-entropy family (cross_entropy, its backward and fused forms,
// nll_loss) and the shared driver that the Caffe2 operators use too:
// validate, place the outputs, run the selected backend, reduce.
#include "api/cross_entropy.h"

#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <optional>

#include "api/device_errors.h"
#include "api/labels.h"
#include "api/outputs.h"
#include "api/validate.h"
#include "dispatch/backend.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax {
namespace {

using api::ClassTensor;
using api::Dense;
using api::fail;
using api::scalar_grad;
using api::visit_float;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

namespace api {

CrossEntropyResult run_cross_entropy(const LossArgNames& names, const TensorView& logits,
                                     const TensorView& targets, const CrossEntropyOptions& options,
                                     const CrossEntropyGrads& grads, Pass pass,
                                     bool logits_are_log_probs, Tensor* grad_over_logits,
                                     const CrossEntropyOutputs* into,
                                     const ExecutionContext& context, const LossPlan* plan) {
  const std::string_view op = names.op, targets_name = names.targets;
  const ClassTensor info = analyze_class_tensor(op, names.logits, logits, options.class_axis);
  const DType dtype = logits.dtype();
  const std::int64_t C = info.geom.classes;
  const bool soft = is_floating(targets.dtype());

  // Options.
  check_enum(op, "reduction", static_cast<int>(options.reduction), 4);
  check_enum(op, "zero_weight_mean", static_cast<int>(options.zero_weight_mean), 2);
  check_enum(op, "zero_target_log", static_cast<int>(options.zero_target_log), 2);
  if (options.reduction == Reduction::kBatchMean) {
    fail(op, "reduction", "= batchmean, expected none, sum or mean (batchmean is for kl_div)");
  }
  if (!(options.label_smoothing >= 0 && options.label_smoothing <= 1)) {
    fail(op, "label_smoothing",
         "= " + format_value(options.label_smoothing) + ", expected in [0, 1]");
  }
  if (!(options.prob_floor >= 0 && std::isfinite(options.prob_floor))) {
    fail(op, "prob_floor", "= " + format_value(options.prob_floor) + ", expected finite and >= 0");
  }
  if (logits_are_log_probs) {
    check_index_dtype(op, targets_name, targets);  // nll_loss takes class indices only
    if (options.label_smoothing != 0 || options.prob_floor != 0) {
      fail(op, "options", "expected label_smoothing = 0 and prob_floor = 0 for nll_loss");
    }
  }

  // Targets. With probability targets a negative ignore_index is dropped, as
  // PyTorch does (so the pytorch preset's -100 works); any other is an error.
  std::optional<std::int64_t> ignore_index = options.ignore_index;
  if (soft) {
    check_dtype(op, targets_name, targets, dtype);
    check_shape(op, targets_name, targets, logits.shape(),
                "(probability targets: the logits' shape)");
    if (ignore_index && *ignore_index >= 0) {
      fail(op, "ignore_index",
           "= " + std::to_string(*ignore_index) +
               ", expected unset or negative with probability targets");
    }
    ignore_index.reset();
  } else {
    check_index_dtype(op, targets_name, targets);
    check_shape(op, targets_name, targets, info.map_shape, "(class indices: (N, d1..dk))");
  }
  const TensorView* class_weight_view = options.class_weight ? &*options.class_weight : nullptr;
  const TensorView* pixel_weight_view = options.pixel_weight ? &*options.pixel_weight : nullptr;
  const auto grad_view = [](const std::optional<TensorView>& g) { return g ? &*g : nullptr; };
  const std::initializer_list<NamedView> inputs = {{names.logits, &logits},
                                                   {targets_name, &targets},
                                                   {"class_weight", class_weight_view},
                                                   {names.pixel_weight, pixel_weight_view},
                                                   {"grad_loss", grad_view(grads.loss)},
                                                   {"grad_prob", grad_view(grads.prob)},
                                                   {"grad_log_prob", grad_view(grads.log_prob)},
                                                   {"grad_entropy", grad_view(grads.entropy)}};
  const Device device = common_device(op, inputs);
  // Device memory is not read here: its values are checked on the device
  // (core::DeviceScalars), which also takes the denominators and scalars.
  const bool on_device = device.type != DeviceType::kCpu;
  const Shape class_weight_shape{C};
  if (options.class_weight) {
    check_weights_on(device, op, "class_weight", *options.class_weight, class_weight_shape,
                     "(one per class)", dtype);
  }
  double pixel_weight_sum = static_cast<double>(info.geom.positions());  // sum_i a_i, a_i = 1
  if (options.pixel_weight) {
    pixel_weight_sum = check_weights_on(device, op, names.pixel_weight, *options.pixel_weight,
                                        info.map_shape, names.pixel_weight_shape, dtype)
                           .value_or(0.0);
  }

  const Dense x(logits), target(targets), class_weight(options.class_weight),
      pixel_weight(options.pixel_weight);
  core::Labels labels{soft ? nullptr : target.raw(), targets.dtype()};
  // Upstream gradients, checked before the labels are read: the arguments'
  // shapes and dtypes first, then the labels' values.
  const bool backward = pass != Pass::kForward;
  const bool map_loss = options.reduction == Reduction::kNone;
  // The upstream scalar g of the backward: 1 for the fused pass (or the
  // caller's grad_loss), read here or, on a device, by the kernel.
  double upstream = pass == Pass::kFused ? 1.0 : 0.0;
  const void* upstream_on_device = nullptr;
  Dense grad_loss_map;
  if (backward && grads.loss) {
    if (map_loss) {
      check_dtype(op, "grad_loss", *grads.loss, dtype);
      check_shape(op, "grad_loss", *grads.loss, info.map_shape, "(reduction none: (N, d1..dk))");
      grad_loss_map = Dense(*grads.loss);
    } else if (on_device) {
      check_scalar_grad(op, "grad_loss", *grads.loss, dtype);
      upstream_on_device = grads.loss->data();
    } else {
      upstream = scalar_grad(op, "grad_loss", *grads.loss, dtype);
    }
  } else if (pass == Pass::kFused && map_loss) {
    // Fused with reduction none and no upstream map: every position gets 1.
    upstream = 1.0;
  }
  auto check_upstream = [&](const std::optional<TensorView>& g, std::string_view name,
                            const Shape& shape, std::string_view what) {
    if (!backward || !g) return Dense();
    check_dtype(op, name, *g, dtype);
    check_shape(op, name, *g, shape, what);
    return Dense(*g);
  };
  const Dense grad_prob =
      check_upstream(grads.prob, "grad_prob", logits.shape(), "(the logits' shape)");
  const Dense grad_log_prob =
      check_upstream(grads.log_prob, "grad_log_prob", logits.shape(), "(the logits' shape)");
  const Dense grad_entropy =
      check_upstream(grads.entropy, "grad_entropy", info.map_shape, "((N, d1..dk))");

  // The scalar loss: the caller's plan (Caffe2's rules), or the options'
  // reduction with the targets' weight as the mean's denominator.
  const bool mean = options.reduction == Reduction::kMean;
  LossPlan own;
  own.rule.rule = mean ? core::LossRule::kMean : core::LossRule::kSum;
  own.rule.empty = options.zero_weight_mean == ZeroWeightMean::kNaN ? kNaN : 0.0;
  // sum_i e_i (index targets) or sum_i a_i (soft: class weights never enter
  // it, docs/semantics.md 3.3).
  own.denominator_from =
      soft ? core::DenominatorFrom::kPixelWeights : core::DenominatorFrom::kLabelWeights;
  const LossPlan& loss_plan = plan ? *plan : own;
  const core::GradScalar grad_rule{mean ? core::GradRule::kMean : core::GradRule::kAsIs};

  // Index targets: the labels' check and the mean's denominator. Without
  // weights the kernel checks and counts the labels as it reads them, which
  // saves a read of them, unless dX needs the mean's denominator before the
  // pass (ignored labels make it other than M) or X is about to be
  // overwritten (nothing may be written before every check has passed).
  const bool weighted = class_weight.present() || pixel_weight.present();
  const bool denominator_first = backward && mean && ignore_index.has_value();
  // dX over X: the in-place form, or an _into grad_logits view of X's bytes.
  const bool writes_over_logits =
      grad_over_logits ||
      (into && into->grad_logits && into->grad_logits->view().byte_range() == logits.byte_range() &&
       logits.byte_range().first != logits.byte_range().second);
  // Nor into the caller's views: a bad label must leave them as they were.
  const bool kernel_checks_labels =
      !on_device && !soft && !weighted && !denominator_first && !writes_over_logits && !into;
  core::LabelCheck label_check;
  const LabelArg label_arg{op, targets_name, targets, labels, C, ignore_index};
  double index_denominator = 0;
  if (kernel_checks_labels) {
    // M for a backward mean, which comes here only without ignore_index (every
    // label counts, or raises); a forward pass replaces it with the kernel's
    // count, and sum and none do not use it.
    index_denominator = static_cast<double>(info.geom.positions());
  } else if (!soft && !on_device) {
    index_denominator =
        scan_labels(label_arg, class_weight.raw(), pixel_weight.raw(), dtype, device, context);
  }

  // The mean's denominator depends only on targets and weights, so it is known
  // before the kernel runs and the fused pass can scale dX directly.
  const auto host_denominator = [&] {
    switch (loss_plan.denominator_from) {
      case core::DenominatorFrom::kLabelWeights:
        return index_denominator;
      case core::DenominatorFrom::kPixelWeights:
        return pixel_weight_sum;
      case core::DenominatorFrom::kConstant:
        break;
    }
    return loss_plan.denominator;
  };
  double denominator = host_denominator();
  const double grad_scale = core::finish_grad(grad_rule, upstream, denominator);

  const bool forward = pass != Pass::kBackward;
  CrossEntropyResult result;
  const bool want_loss = forward && (!into || into->loss);
  const bool want_prob = forward && (into ? into->prob.has_value() : options.want_prob);
  const bool want_log_prob = forward && (into ? into->log_prob.has_value() : options.want_log_prob);
  const bool want_entropy = forward && (into ? into->entropy.has_value() : options.want_entropy);
  if (into && !backward && into->grad_logits) {
    fail(op, "outputs.grad_logits", "expected none (a forward call; the fused form computes dX)");
  }
  if (into && backward && !into->grad_logits) {
    fail(op, "outputs.grad_logits", "expected a view of the logits' shape, got none");
  }
  if (writes_over_logits && want_log_prob) {
    fail(op, "outputs.log_prob",
         "expected none when dX is written over the logits (log_prob needs X)");
  }
  // Every output placed (and checked) before anything is written.
  Footprint footprint(op, device, inputs, context);
  const MutableTensorView* no_view = nullptr;
  const auto view_of = [&](const std::optional<MutableTensorView> CrossEntropyOutputs::*member) {
    return into ? given(into->*member) : no_view;
  };
  void* loss_data = nullptr;
  if (want_loss) {
    loss_data = footprint.place(
        "loss", view_of(&CrossEntropyOutputs::loss), dtype, map_loss ? info.map_shape : Shape{},
        map_loss ? "(reduction none: (N, d1..dk))" : "(a scalar: ())", &result.loss);
  }
  void* prob_data = want_prob ? footprint.place("prob", view_of(&CrossEntropyOutputs::prob), dtype,
                                                logits.shape(), "(the logits' shape)", &result.prob)
                              : nullptr;
  void* log_prob_data =
      want_log_prob ? footprint.place("log_prob", view_of(&CrossEntropyOutputs::log_prob), dtype,
                                      logits.shape(), "(the logits' shape)", &result.log_prob)
                    : nullptr;
  void* entropy_data =
      want_entropy ? footprint.place("entropy", view_of(&CrossEntropyOutputs::entropy), dtype,
                                     info.map_shape, "((N, d1..dk))", &result.entropy)
                   : nullptr;
  void* grad_data = nullptr;
  if (backward) {
    // Everything is validated by now: only from here on is X overwritten.
    if (grad_over_logits) {
      // The in-place form: dX over X's own storage, which no other input
      // may share.
      const MutableTensorView over(grad_over_logits->data(), dtype, logits.shape(), device);
      grad_data = footprint.place_over("grad_logits", &over, names.logits, dtype, logits.shape(),
                                       "(the logits' shape)", nullptr);
      result.grad_logits = std::move(*grad_over_logits);
    } else {
      grad_data = footprint.place_over("grad_logits", view_of(&CrossEntropyOutputs::grad_logits),
                                       names.logits, dtype, logits.shape(), "(the logits' shape)",
                                       &result.grad_logits);
    }
  }

  double loss_sum = 0;
  visit_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    core::CrossEntropyProblem<T> pb;
    pb.geom = info.geom;
    pb.logits = x.get<T>();
    pb.logits_are_log_probs = logits_are_log_probs;
    pb.labels = labels;
    pb.target_probs = soft ? target.get<T>() : nullptr;
    pb.class_weight = class_weight.get<T>();
    pb.pixel_weight = pixel_weight.get<T>();
    pb.has_ignore_index = core::ignore_index_can_match(labels.dtype, ignore_index);
    pb.ignore_index = pb.has_ignore_index ? *ignore_index : 0;
    pb.label_smoothing = static_cast<typename decltype(pb)::Scalar>(options.label_smoothing);
    pb.prob_floor = static_cast<typename decltype(pb)::Scalar>(options.prob_floor);
    pb.zero_target_log_is_zero = options.zero_target_log == ZeroTargetLog::kZero;
    pb.label_check = kernel_checks_labels ? &label_check : nullptr;
    if (forward) {
      pb.loss_map = map_loss ? static_cast<T*>(loss_data) : nullptr;
      pb.loss_sum = &loss_sum;
      pb.prob = static_cast<T*>(prob_data);
      pb.log_prob = static_cast<T*>(log_prob_data);
      pb.entropy = static_cast<T*>(entropy_data);
    }
    if (backward) {
      pb.grad_logits = static_cast<T*>(grad_data);
      pb.grad_loss_map = grad_loss_map.get<T>();
      pb.grad_loss_scale = static_cast<typename decltype(pb)::Scalar>(grad_scale);
      pb.grad_prob = grad_prob.get<T>();
      pb.grad_log_prob = grad_log_prob.get<T>();
      pb.grad_entropy = grad_entropy.get<T>();
    }
    core::DeviceScalars<T> scalars;
    if (on_device) {
      if (class_weight.present()) {
        scalars.class_weight_site = error_site(op, "class_weight", class_weight_shape);
      }
      if (pixel_weight.present()) {
        scalars.pixel_weight_site = error_site(op, names.pixel_weight, info.map_shape);
      }
      if (!soft) scalars.label_site = error_site(op, targets_name, info.map_shape, C, ignore_index);
      scalars.denominator_from = loss_plan.denominator_from;
      scalars.denominator = loss_plan.denominator;
      scalars.loss = want_loss && !map_loss ? static_cast<T*>(loss_data) : nullptr;
      scalars.loss_rule = loss_plan.rule;
      scalars.grad = static_cast<const T*>(upstream_on_device);
      scalars.grad_constant = upstream;
      scalars.grad_rule = grad_rule;
      pb.device = &scalars;
    }
    dispatch::select(dispatch::Op::kCrossEntropy, info.geom, dtype, device, op)
        .cross_entropy(pb, context);
  });
  if (on_device) return result;  // the scalars stay on the device
  if (kernel_checks_labels) {
    if (label_check.first_bad >= 0) fail_label(label_arg, label_check.first_bad);
    index_denominator = static_cast<double>(label_check.counted);
    denominator = host_denominator();
  }
  if (want_loss && !map_loss) {
    const double loss = core::finish_loss(loss_plan.rule, loss_sum, denominator);
    visit_float(dtype, [&](auto tag) {
      *static_cast<decltype(tag)*>(loss_data) = api::element_from<decltype(tag)>(loss);
    });
  }
  return result;
}

}  // namespace api

CrossEntropyResult cross_entropy(const TensorView& logits, const TensorView& targets,
                                 const CrossEntropyOptions& options,
                                 const ExecutionContext& context) {
  return api::run_cross_entropy({"cross_entropy"}, logits, targets, options, {},
                                api::Pass::kForward, false, nullptr, nullptr, context);
}

Tensor cross_entropy_backward(const TensorView& logits, const TensorView& targets,
                              const CrossEntropyGrads& grads, const CrossEntropyOptions& options,
                              const ExecutionContext& context) {
  return api::run_cross_entropy({"cross_entropy_backward"}, logits, targets, options, grads,
                                api::Pass::kBackward, false, nullptr, nullptr, context)
      .grad_logits;
}

CrossEntropyResult cross_entropy_forward_backward(const TensorView& logits,
                                                  const TensorView& targets,
                                                  const CrossEntropyOptions& options,
                                                  const CrossEntropyGrads& grads,
                                                  const ExecutionContext& context) {
  return api::run_cross_entropy({"cross_entropy_forward_backward"}, logits, targets, options, grads,
                                api::Pass::kFused, false, nullptr, nullptr, context);
}

CrossEntropyResult cross_entropy_forward_backward_in_place(Tensor&& logits,
                                                           const TensorView& targets,
                                                           const CrossEntropyOptions& options,
                                                           const CrossEntropyGrads& grads,
                                                           const ExecutionContext& context) {
  constexpr std::string_view op = "cross_entropy_forward_backward_in_place";
  if (!logits.defined()) fail(op, "logits", "expected a defined tensor, got an empty one");
  if (options.want_log_prob) {
    fail(op, "options.want_log_prob",
         "= true, expected false (dX replaces X, which log_prob needs)");
  }
  const TensorView x = logits.view();
  return api::run_cross_entropy({op}, x, targets, options, grads, api::Pass::kFused, false, &logits,
                                nullptr, context);
}

Tensor nll_loss(const TensorView& log_prob, const TensorView& labels,
                const CrossEntropyOptions& options, const ExecutionContext& context) {
  CrossEntropyOptions o = options;
  o.want_prob = o.want_log_prob = o.want_entropy = false;
  return api::run_cross_entropy({"nll_loss", "log_prob", "labels"}, log_prob, labels, o, {},
                                api::Pass::kForward, true, nullptr, nullptr, context)
      .loss;
}

Tensor nll_loss_backward(const TensorView& log_prob, const TensorView& labels,
                         const TensorView& grad_loss, const CrossEntropyOptions& options,
                         const ExecutionContext& context) {
  CrossEntropyGrads grads;
  grads.loss = grad_loss;
  return api::run_cross_entropy({"nll_loss_backward", "log_prob", "labels"}, log_prob, labels,
                                options, grads, api::Pass::kBackward, true, nullptr, nullptr,
                                context)
      .grad_logits;
}

// --- into caller-provided outputs -----------------------------------------------

void cross_entropy_into(const TensorView& logits, const TensorView& targets,
                        const CrossEntropyOutputs& outputs, const CrossEntropyOptions& options,
                        const ExecutionContext& context) {
  api::run_cross_entropy({"cross_entropy_into"}, logits, targets, options, {}, api::Pass::kForward,
                         false, nullptr, &outputs, context);
}

void cross_entropy_backward_into(const TensorView& logits, const TensorView& targets,
                                 const CrossEntropyGrads& grads,
                                 const MutableTensorView& grad_logits,
                                 const CrossEntropyOptions& options,
                                 const ExecutionContext& context) {
  CrossEntropyOutputs outputs;
  outputs.grad_logits = grad_logits;
  api::run_cross_entropy({"cross_entropy_backward_into"}, logits, targets, options, grads,
                         api::Pass::kBackward, false, nullptr, &outputs, context);
}

void cross_entropy_forward_backward_into(const TensorView& logits, const TensorView& targets,
                                         const CrossEntropyOutputs& outputs,
                                         const CrossEntropyOptions& options,
                                         const CrossEntropyGrads& grads,
                                         const ExecutionContext& context) {
  api::run_cross_entropy({"cross_entropy_forward_backward_into"}, logits, targets, options, grads,
                         api::Pass::kFused, false, nullptr, &outputs, context);
}

void nll_loss_into(const TensorView& log_prob, const TensorView& labels,
                   const MutableTensorView& loss, const CrossEntropyOptions& options,
                   const ExecutionContext& context) {
  CrossEntropyOutputs outputs;
  outputs.loss = loss;
  api::run_cross_entropy({"nll_loss_into", "log_prob", "labels"}, log_prob, labels, options, {},
                         api::Pass::kForward, true, nullptr, &outputs, context);
}

void nll_loss_backward_into(const TensorView& log_prob, const TensorView& labels,
                            const TensorView& grad_loss, const MutableTensorView& grad_log_prob,
                            const CrossEntropyOptions& options, const ExecutionContext& context) {
  CrossEntropyGrads grads;
  grads.loss = grad_loss;
  CrossEntropyOutputs outputs;
  outputs.grad_logits = grad_log_prob;
  api::run_cross_entropy({"nll_loss_backward_into", "log_prob", "labels"}, log_prob, labels,
                         options, grads, api::Pass::kBackward, true, nullptr, &outputs, context);
}

}  // namespace spatialsoftmax
