// The API layer of the loss family: validate, allocate, fill a problem, run
// the selected backend, reduce.
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "api/cross_entropy.h"
#include "api/validate.h"
#include "dispatch/backend.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax {
namespace {

using api::ClassTensor;
using api::Dense;
using api::fail;
using api::visit_float;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Scalar upstream gradient: a float tensor with exactly one element.
double scalar_grad(std::string_view op, std::string_view arg, const TensorView& t, DType dtype) {
  api::check_dtype(op, arg, t, dtype);
  if (checked_numel(t.shape(), arg) != 1) {
    fail(op, arg, "shape: expected a scalar (one element), got " + shape_string(t.shape()));
  }
  return t.at(0);
}

Tensor class_softmax(std::string_view op, const TensorView& logits, ClassAxis axis,
                     bool want_prob, bool want_log_prob, bool want_entropy) {
  const ClassTensor info = api::analyze_class_tensor(op, "logits", logits, axis);
  const Dense x(logits);
  // Outputs the kernels write in full are not zeroed first.
  Tensor out = want_entropy ? Tensor::uninitialized(logits.dtype(), info.map_shape)
                            : Tensor::uninitialized(logits.dtype(), logits.shape());
  visit_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    core::SoftmaxProblem<T> pb;
    pb.geom = info.geom;
    pb.logits = x.get<T>();
    if (want_prob) pb.prob = out.data_as<T>();
    if (want_log_prob) pb.log_prob = out.data_as<T>();
    if (want_entropy) pb.entropy = out.data_as<T>();
    dispatch::select(dispatch::Op::kSoftmax, info.geom, logits.dtype()).softmax(pb);
  });
  return out;
}

Tensor class_softmax_backward(std::string_view op, const TensorView& output,
                              const TensorView& grad_output, ClassAxis axis, bool log) {
  const std::string_view output_name = log ? "log_prob" : "prob";
  const std::string_view grad_name = log ? "grad_log_prob" : "grad_prob";
  const ClassTensor info = api::analyze_class_tensor(op, output_name, output, axis);
  api::check_dtype(op, grad_name, grad_output, output.dtype());
  api::check_shape(op, grad_name, grad_output, output.shape(),
                   log ? "(log_prob's shape)" : "(prob's shape)");
  const Dense y(output), gy(grad_output);
  Tensor dx(output.dtype(), output.shape());
  visit_float(output.dtype(), [&](auto tag) {
    using T = decltype(tag);
    core::SoftmaxBackwardProblem<T> pb;
    pb.geom = info.geom;
    pb.from_log_softmax = log;
    pb.output = y.get<T>();
    pb.grad_output = gy.get<T>();
    pb.grad_logits = dx.data_as<T>();
    dispatch::select(dispatch::Op::kSoftmaxBackward, info.geom, output.dtype())
        .softmax_backward(pb);
  });
  return dx;
}

}  // namespace

Tensor softmax(const TensorView& logits, ClassAxis axis) {
  return class_softmax("softmax", logits, axis, true, false, false);
}
Tensor log_softmax(const TensorView& logits, ClassAxis axis) {
  return class_softmax("log_softmax", logits, axis, false, true, false);
}
Tensor entropy(const TensorView& logits, ClassAxis axis) {
  return class_softmax("entropy", logits, axis, false, false, true);
}
Tensor softmax_backward(const TensorView& prob, const TensorView& grad_prob, ClassAxis axis) {
  return class_softmax_backward("softmax_backward", prob, grad_prob, axis, false);
}
Tensor log_softmax_backward(const TensorView& log_prob, const TensorView& grad_log_prob,
                            ClassAxis axis) {
  return class_softmax_backward("log_softmax_backward", log_prob, grad_log_prob, axis, true);
}

namespace api {

CrossEntropyRun run_cross_entropy(const LossArgNames& names, const TensorView& logits,
                                  const TensorView& targets, const CrossEntropyOptions& options,
                                  const CrossEntropyGrads& grads, Pass pass,
                                  bool logits_are_log_probs, Tensor* grad_over_logits) {
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
    fail(op, "label_smoothing", "= " + format_value(options.label_smoothing) + ", expected in [0, 1]");
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
  if (options.class_weight) {
    check_weights(op, "class_weight", *options.class_weight, {C}, "(one per class)", dtype);
  }
  if (options.pixel_weight) {
    check_weights(op, "pixel_weight", *options.pixel_weight, info.map_shape,
                  "(one per position: (N, d1..dk))", dtype);
  }

  const Dense x(logits), target(targets), class_weight(options.class_weight),
      pixel_weight(options.pixel_weight);
  core::Labels labels{soft ? nullptr : target.raw(), targets.dtype()};
  // Upstream gradients, checked before the labels are read: the arguments'
  // shapes and dtypes first, then the labels' values.
  const bool backward = pass != Pass::kForward;
  const bool map_loss = options.reduction == Reduction::kNone;
  double grad_scale = pass == Pass::kFused ? 1.0 : 0.0;
  Dense grad_loss_map;
  if (backward && grads.loss) {
    if (map_loss) {
      check_dtype(op, "grad_loss", *grads.loss, dtype);
      check_shape(op, "grad_loss", *grads.loss, info.map_shape, "(reduction none: (N, d1..dk))");
      grad_loss_map = Dense(*grads.loss);
    } else {
      grad_scale = scalar_grad(op, "grad_loss", *grads.loss, dtype);
    }
  } else if (pass == Pass::kFused && map_loss) {
    // Fused with reduction none and no upstream map: every position gets 1.
    grad_scale = 1.0;
  }
  auto check_upstream = [&](const std::optional<TensorView>& g, std::string_view name,
                            const Shape& shape, std::string_view what) {
    if (!backward || !g) return Dense();
    check_dtype(op, name, *g, dtype);
    check_shape(op, name, *g, shape, what);
    return Dense(*g);
  };
  const Dense grad_prob = check_upstream(grads.prob, "grad_prob", logits.shape(), "(the logits' shape)");
  const Dense grad_log_prob =
      check_upstream(grads.log_prob, "grad_log_prob", logits.shape(), "(the logits' shape)");
  const Dense grad_entropy =
      check_upstream(grads.entropy, "grad_entropy", info.map_shape, "((N, d1..dk))");

  // Index targets: the labels' check and the mean's denominator. Without
  // weights the kernel checks and counts the labels as it reads them, which
  // saves a read of them, unless dX needs the mean's denominator before the
  // pass (ignored labels make it other than M) or X is about to be
  // overwritten (nothing may be written before every check has passed).
  const bool weighted = class_weight.present() || pixel_weight.present();
  const bool denominator_first =
      pass != Pass::kForward && options.reduction == Reduction::kMean && ignore_index.has_value();
  const bool kernel_checks_labels = !soft && !weighted && !denominator_first && !grad_over_logits;
  core::LabelCheck label_check;
  const auto scan = [&] {
    return scan_labels(op, targets_name, targets, labels, C, ignore_index, class_weight.raw(),
                       pixel_weight.raw(), dtype);
  };
  double index_denominator = 0;
  if (kernel_checks_labels) {
    // M for a backward mean, which comes here only without ignore_index (every
    // label counts, or raises); a forward pass replaces it with the kernel's
    // count, and sum and none do not use it.
    index_denominator = static_cast<double>(info.geom.positions());
  } else if (!soft) {
    index_denominator = scan();
  }

  // The mean's denominator depends only on targets and weights, so it is known
  // before the kernel runs and the fused pass can scale dX directly.
  CrossEntropyRun run;
  const std::int64_t M = info.geom.positions();
  run.denominator = index_denominator;
  if (soft) {  // sum_i a_i, or M: class weights never enter it (SPEC.md 3.3)
    run.denominator = static_cast<double>(M);
    if (pixel_weight.present()) {
      visit_float(dtype, [&](auto tag) {
        using T = decltype(tag);
        const T* a = pixel_weight.get<T>();
        double denominator = 0;
        for (std::int64_t i = 0; i < M; ++i) denominator += static_cast<double>(a[i]);
        run.denominator = denominator;
      });
    }
  }
  if (options.reduction == Reduction::kMean) {
    grad_scale = run.denominator > 0 ? grad_scale / run.denominator : 0.0;
  }

  const bool forward = pass != Pass::kBackward;
  CrossEntropyResult& result = run.result;
  if (forward) {
    if (map_loss) result.loss = Tensor::uninitialized(dtype, info.map_shape);
    if (options.want_prob) result.prob = Tensor::uninitialized(dtype, logits.shape());
    if (options.want_log_prob) result.log_prob = Tensor::uninitialized(dtype, logits.shape());
    if (options.want_entropy) result.entropy = Tensor::uninitialized(dtype, info.map_shape);
  }
  if (backward) {
    // Everything is validated by now: only from here on is X overwritten.
    result.grad_logits = grad_over_logits ? std::move(*grad_over_logits)
                                          : Tensor::uninitialized(dtype, logits.shape());
  }

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
    pb.has_ignore_index = ignore_index.has_value();
    pb.ignore_index = ignore_index.value_or(0);
    pb.label_smoothing = static_cast<T>(options.label_smoothing);
    pb.prob_floor = static_cast<T>(options.prob_floor);
    pb.zero_target_log_is_zero = options.zero_target_log == ZeroTargetLog::kZero;
    pb.label_check = kernel_checks_labels ? &label_check : nullptr;
    if (forward) {
      pb.loss_map = map_loss ? result.loss.template data_as<T>() : nullptr;
      pb.loss_sum = &run.loss_sum;
      if (options.want_prob) pb.prob = result.prob.template data_as<T>();
      if (options.want_log_prob) pb.log_prob = result.log_prob.template data_as<T>();
      if (options.want_entropy) pb.entropy = result.entropy.template data_as<T>();
    }
    if (backward) {
      pb.grad_logits = result.grad_logits.template data_as<T>();
      pb.grad_loss_map = grad_loss_map.get<T>();
      pb.grad_loss_scale = static_cast<T>(grad_scale);
      pb.grad_prob = grad_prob.get<T>();
      pb.grad_log_prob = grad_log_prob.get<T>();
      pb.grad_entropy = grad_entropy.get<T>();
    }
    dispatch::select(dispatch::Op::kCrossEntropy, info.geom, dtype).cross_entropy(pb);
  });
  if (kernel_checks_labels) {
    if (label_check.bad) {
      (void)scan();  // throws, naming the first bad label
      fail(op, targets_name, "internal error: the kernel found a bad label that the scan did not");
    }
    run.denominator = static_cast<double>(label_check.counted);
  }

  if (forward && !map_loss) {
    double loss = run.loss_sum;
    if (options.reduction == Reduction::kMean) {
      if (run.denominator != 0) {
        loss /= run.denominator;
      } else {
        loss = options.zero_weight_mean == ZeroWeightMean::kNaN ? kNaN : 0.0;
      }
    }
    result.loss = Tensor::scalar(dtype, loss);
  }
  return run;
}

}  // namespace api

CrossEntropyResult cross_entropy(const TensorView& logits, const TensorView& targets,
                                 const CrossEntropyOptions& options) {
  return api::run_cross_entropy({"cross_entropy"}, logits, targets, options, {}, api::Pass::kForward)
      .result;
}

Tensor cross_entropy_backward(const TensorView& logits, const TensorView& targets,
                              const CrossEntropyGrads& grads, const CrossEntropyOptions& options) {
  return api::run_cross_entropy({"cross_entropy_backward"}, logits, targets, options, grads,
                                api::Pass::kBackward)
      .result.grad_logits;
}

CrossEntropyResult cross_entropy_forward_backward(const TensorView& logits,
                                                  const TensorView& targets,
                                                  const CrossEntropyOptions& options,
                                                  const CrossEntropyGrads& grads) {
  return api::run_cross_entropy({"cross_entropy_forward_backward"}, logits, targets, options, grads,
                                api::Pass::kFused)
      .result;
}

CrossEntropyResult cross_entropy_forward_backward_in_place(Tensor&& logits,
                                                           const TensorView& targets,
                                                           const CrossEntropyOptions& options,
                                                           const CrossEntropyGrads& grads) {
  constexpr std::string_view op = "cross_entropy_forward_backward_in_place";
  if (!logits.defined()) fail(op, "logits", "expected a defined tensor, got an empty one");
  if (options.want_log_prob) {
    fail(op, "options.want_log_prob", "= true, expected false (dX replaces X, which log_prob needs)");
  }
  // No other input may live in the storage that dX overwrites.
  const auto* begin = static_cast<const std::byte*>(logits.data());
  const auto aliases = [&](const std::optional<TensorView>& t) {
    const auto* p = t ? static_cast<const std::byte*>(t->data()) : nullptr;
    return p && p >= begin && p < begin + logits.nbytes();
  };
  const std::pair<const char*, std::optional<TensorView>> others[] = {
      {"targets", targets}, {"options.class_weight", options.class_weight},
      {"options.pixel_weight", options.pixel_weight}, {"grads.loss", grads.loss},
      {"grads.prob", grads.prob}, {"grads.log_prob", grads.log_prob},
      {"grads.entropy", grads.entropy}};
  for (const auto& [name, view] : others) {
    if (aliases(view)) fail(op, name, "expected memory apart from logits, got a view into it");
  }
  const TensorView x = logits.view();
  return api::run_cross_entropy({op}, x, targets, options, grads, api::Pass::kFused, false,
                                &logits)
      .result;
}

Tensor nll_loss(const TensorView& log_prob, const TensorView& labels,
                const CrossEntropyOptions& options) {
  CrossEntropyOptions o = options;
  o.want_prob = o.want_log_prob = o.want_entropy = false;
  return api::run_cross_entropy({"nll_loss", "log_prob", "labels"}, log_prob, labels, o, {}, api::Pass::kForward, true)
      .result.loss;
}

Tensor nll_loss_backward(const TensorView& log_prob, const TensorView& labels,
                         const TensorView& grad_loss, const CrossEntropyOptions& options) {
  CrossEntropyGrads grads;
  grads.loss = grad_loss;
  return api::run_cross_entropy({"nll_loss_backward", "log_prob", "labels"}, log_prob, labels, options, grads,
                                api::Pass::kBackward, true)
      .result.grad_logits;
}

// --- KL divergence ------------------------------------------------------------
namespace {

struct KlRun {
  Tensor output;
  Tensor grad;
};

KlRun run_kl_div(std::string_view op, const TensorView& logits, const TensorView& target,
                 const std::optional<TensorView>& grad_output, const KlDivOptions& options) {
  const ClassTensor info = api::analyze_class_tensor(op, "logits", logits, options.class_axis);
  api::check_enum(op, "reduction", static_cast<int>(options.reduction), 4);
  const DType dtype = logits.dtype();
  api::check_dtype(op, "target", target, dtype);
  api::check_shape(op, "target", target, logits.shape(), "(the logits' shape)");
  const double elements = static_cast<double>(info.geom.elements());
  double denominator = 1;
  switch (options.reduction) {
    case Reduction::kNone:
    case Reduction::kSum: break;
    case Reduction::kMean: denominator = elements; break;
    case Reduction::kBatchMean: denominator = static_cast<double>(info.geom.batch); break;
  }
  const bool map = options.reduction == Reduction::kNone;
  Dense grad_map;
  double grad_scale = 0;
  if (grad_output) {
    if (map) {
      api::check_dtype(op, "grad_output", *grad_output, dtype);
      api::check_shape(op, "grad_output", *grad_output, logits.shape(), "(reduction none: the logits' shape)");
      grad_map = Dense(*grad_output);
    } else {
      grad_scale = scalar_grad(op, "grad_output", *grad_output, dtype) / denominator;
    }
  }
  const Dense x(logits), t(target);
  KlRun run;
  double sum = 0;
  if (map && !grad_output) run.output = Tensor(dtype, logits.shape());
  if (grad_output) run.grad = Tensor(dtype, logits.shape());
  visit_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    core::KlDivProblem<T> pb;
    pb.geom = info.geom;
    pb.logits = x.get<T>();
    pb.target = t.get<T>();
    pb.log_target = options.log_target;
    if (!grad_output) {
      pb.out_map = map ? run.output.template data_as<T>() : nullptr;
      pb.out_sum = &sum;
    } else {
      pb.grad_logits = run.grad.template data_as<T>();
      pb.grad_map = grad_map.get<T>();
      pb.grad_scale = static_cast<T>(grad_scale);
    }
    dispatch::select(dispatch::Op::kKlDiv, info.geom, dtype).kl_div(pb);
  });
  if (!grad_output && !map) {
    run.output = Tensor::scalar(dtype, denominator != 0 ? sum / denominator : kNaN);
  }
  return run;
}

}  // namespace

Tensor kl_div(const TensorView& logits, const TensorView& target, const KlDivOptions& options) {
  return run_kl_div("kl_div", logits, target, std::nullopt, options).output;
}

Tensor kl_div_backward(const TensorView& logits, const TensorView& target,
                       const TensorView& grad_output, const KlDivOptions& options) {
  return run_kl_div("kl_div_backward", logits, target, grad_output, options).grad;
}

// --- spatial softmax and soft-argmax -----------------------------------------
namespace {

struct SoftArgmaxSetup {
  ClassTensor info;
  int k = 0;
  std::vector<std::vector<double>> coordinates;
  double beta = 1;
};

SoftArgmaxSetup setup_soft_argmax(std::string_view op, const TensorView& input,
                                  const SpatialSoftArgmaxOptions& options) {
  SoftArgmaxSetup s;
  s.info = api::analyze_class_tensor(op, "input", input, options.channel_axis, 1, true);
  const double t = options.temperature;
  if (!(t > 0) || !std::isfinite(t)) {
    fail(op, "temperature", "= " + api::format_value(t) + ", expected finite and > 0");
  }
  api::check_enum(op, "temperature_mode", static_cast<int>(options.temperature_mode), 2);
  api::check_enum(op, "coordinates", static_cast<int>(options.coordinates), 2);
  api::check_enum(op, "singleton_coordinate", static_cast<int>(options.singleton_coordinate), 2);
  s.beta = options.temperature_mode == TemperatureMode::kDivide ? 1.0 / t : t;
  s.k = static_cast<int>(s.info.spatial_dims.size());
  for (std::int64_t length : s.info.spatial_dims) {
    std::vector<double> u(static_cast<std::size_t>(length));
    for (std::int64_t j = 0; j < length; ++j) {
      if (options.coordinates == Coordinates::kPixel) {
        u[j] = static_cast<double>(j);
      } else if (length == 1) {
        u[j] = options.singleton_coordinate == SingletonCoordinate::kCenter ? 0.0 : -1.0;
      } else {
        u[j] = -1.0 + 2.0 * static_cast<double>(j) / static_cast<double>(length - 1);
      }
    }
    s.coordinates.push_back(std::move(u));
  }
  return s;
}

template <class T>
core::SpatialSoftArgmaxProblem<T> soft_argmax_problem(const SoftArgmaxSetup& s, const Dense& x) {
  core::SpatialSoftArgmaxProblem<T> pb;
  pb.geom = s.info.geom;
  pb.spatial_rank = s.k;
  for (int a = 0; a < s.k; ++a) {
    pb.dims[a] = s.info.spatial_dims[a];
    pb.coordinate[a] = s.coordinates[a].data();
  }
  pb.beta = s.beta;
  pb.input = x.get<T>();
  return pb;
}

}  // namespace

SpatialSoftArgmaxResult spatial_soft_argmax(const TensorView& input,
                                            const SpatialSoftArgmaxOptions& options) {
  const SoftArgmaxSetup s = setup_soft_argmax("spatial_soft_argmax", input, options);
  const DType dtype = input.dtype();
  const std::int64_t N = s.info.geom.batch, C = s.info.geom.classes, k = s.k;
  const Dense x(input);
  SpatialSoftArgmaxResult r;  // every element is written by the kernel
  r.keypoints = Tensor::uninitialized(dtype, {N, C, k});
  if (options.want_softmax) r.softmax = Tensor::uninitialized(dtype, input.shape());
  if (options.want_covariance) r.covariance = Tensor::uninitialized(dtype, {N, C, k, k});
  visit_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto pb = soft_argmax_problem<T>(s, x);
    pb.keypoints = r.keypoints.template data_as<T>();
    if (options.want_softmax) pb.softmax = r.softmax.template data_as<T>();
    if (options.want_covariance) pb.covariance = r.covariance.template data_as<T>();
    dispatch::select(dispatch::Op::kSpatialSoftArgmax, s.info.geom, dtype).spatial_soft_argmax(pb);
  });
  return r;
}

Tensor spatial_softmax(const TensorView& input, const SpatialSoftArgmaxOptions& options) {
  SpatialSoftArgmaxOptions o = options;
  o.want_softmax = true;
  return spatial_soft_argmax(input, o).softmax;
}

SpatialSoftArgmaxBackward spatial_soft_argmax_backward(const TensorView& input,
                                                       const SpatialSoftArgmaxGrads& grads,
                                                       const SpatialSoftArgmaxOptions& options) {
  constexpr std::string_view op = "spatial_soft_argmax_backward";
  const SoftArgmaxSetup s = setup_soft_argmax(op, input, options);
  const DType dtype = input.dtype();
  const std::int64_t N = s.info.geom.batch, C = s.info.geom.classes, k = s.k;
  auto check = [&](const std::optional<TensorView>& g, std::string_view name, const Shape& shape,
                   std::string_view what) {
    if (!g) return Dense();
    api::check_dtype(op, name, *g, dtype);
    api::check_shape(op, name, *g, shape, what);
    return Dense(*g);
  };
  const Dense gk = check(grads.keypoints, "grad_keypoints", {N, C, k}, "((N, C, k))");
  const Dense gs = check(grads.softmax, "grad_softmax", input.shape(), "(the input's shape)");
  const Dense gc = check(grads.covariance, "grad_covariance", {N, C, k, k}, "((N, C, k, k))");
  const Dense x(input);
  SpatialSoftArgmaxBackward r;
  r.grad_input = Tensor::uninitialized(dtype, input.shape());  // written whole by the kernel
  double grad_beta = 0;
  visit_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto pb = soft_argmax_problem<T>(s, x);
    pb.grad_input = r.grad_input.template data_as<T>();
    pb.grad_keypoints = gk.get<T>();
    pb.grad_softmax = gs.get<T>();
    pb.grad_covariance = gc.get<T>();
    pb.grad_beta = &grad_beta;
    dispatch::select(dispatch::Op::kSpatialSoftArgmaxBackward, s.info.geom, dtype)
        .spatial_soft_argmax_backward(pb);
  });
  // beta = 1/T (divide) or T (multiply).
  const double t = options.temperature;
  r.grad_temperature = options.temperature_mode == TemperatureMode::kDivide
                           ? -grad_beta / (t * t)
                           : grad_beta;
  return r;
}

}  // namespace spatialsoftmax
