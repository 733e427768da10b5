// The loss family of spatialsoftmax/functions.h: softmax, log_softmax,
// entropy, cross-entropy, NLL and KL, each with its backward and its `_into`
// form. Every call converts its arrays first, then runs the library with the
// GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <string>
#include <utility>

#include "arrays.h"
#include "bindings.h"
#include "keywords.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax::python {
namespace {

using nb::arg;

// Results of the cross-entropy calls; absent outputs are None.
struct PyCrossEntropyResult {
  nb::object loss, prob, log_prob, entropy, grad_logits;
};

PyCrossEntropyResult wrap(CallArrays& arrays, CrossEntropyResult&& r) {
  return {arrays.result(std::move(r.loss)), arrays.result(std::move(r.prob)),
          arrays.result(std::move(r.log_prob)), arrays.result(std::move(r.entropy)),
          arrays.result(std::move(r.grad_logits))};
}

CrossEntropyGrads grads_of(CallArrays& arrays, const std::optional<ArrayArg>& loss,
                           const std::optional<ArrayArg>& prob,
                           const std::optional<ArrayArg>& log_prob,
                           const std::optional<ArrayArg>& entropy) {
  return {arrays.optional_input(loss, "grad_loss"), arrays.optional_input(prob, "grad_prob"),
          arrays.optional_input(log_prob, "grad_log_prob"),
          arrays.optional_input(entropy, "grad_entropy")};
}

CrossEntropyOutputs outputs_of(CallArrays& arrays, const std::optional<ArrayArg>& loss,
                               const std::optional<ArrayArg>& prob,
                               const std::optional<ArrayArg>& log_prob,
                               const std::optional<ArrayArg>& entropy,
                               const std::optional<ArrayArg>& grad_logits) {
  return {arrays.optional_output(loss, "loss"), arrays.optional_output(prob, "prob"),
          arrays.optional_output(log_prob, "log_prob"), arrays.optional_output(entropy, "entropy"),
          arrays.optional_output(grad_logits, "grad_logits")};
}

void want(CrossEntropyOptions& options, bool prob, bool log_prob, bool entropy) {
  options.want_prob = prob;
  options.want_log_prob = log_prob;
  options.want_entropy = entropy;
}

// softmax, log_softmax and entropy share a signature.
using ClassFunction = Tensor (*)(const TensorView&, ClassAxis, const ExecutionContext&);
using ClassIntoFunction = void (*)(const TensorView&, const MutableTensorView&, ClassAxis,
                                   const ExecutionContext&);
using ClassBackward = Tensor (*)(const TensorView&, const TensorView&, ClassAxis,
                                 const ExecutionContext&);
using ClassBackwardInto = void (*)(const TensorView&, const TensorView&, const MutableTensorView&,
                                   ClassAxis, const ExecutionContext&);

void def_class_function(nb::module_& m, const char* name, ClassFunction f, const char* doc) {
  m.def(
      name,
      [name, f](const ArrayArg& logits, const std::string& layout, int num_threads) {
        CallArrays arrays(name);
        const TensorView x = arrays.input(logits, "logits");
        const ClassAxis axis = parse_layout(layout, arrays.op() + ": layout");
        Tensor out;
        {
          nb::gil_scoped_release release;
          out = f(x, axis, context_of(num_threads));
        }
        return arrays.result(std::move(out));
      },
      arg("logits"), arg("layout") = "NCHW", nb::kw_only(), arg("num_threads") = 0, doc);
}

void def_class_into(nb::module_& m, const char* name, const char* out_name, ClassIntoFunction f,
                    const char* doc) {
  m.def(
      name,
      [name, out_name, f](const ArrayArg& logits, const ArrayArg& out, const std::string& layout,
                          int num_threads) {
        CallArrays arrays(name);
        const TensorView x = arrays.input(logits, "logits");
        const MutableTensorView y = arrays.output(out, out_name);
        const ClassAxis axis = parse_layout(layout, arrays.op() + ": layout");
        nb::gil_scoped_release release;
        f(x, y, axis, context_of(num_threads));
      },
      arg("logits"), arg(out_name), arg("layout") = "NCHW", nb::kw_only(), arg("num_threads") = 0,
      doc);
}

void def_class_backward(nb::module_& m, const char* name, const char* into_name,
                        const char* output_name, const char* grad_name, ClassBackward f,
                        ClassBackwardInto f_into, const char* doc) {
  m.def(
      name,
      [name, output_name, grad_name, f](const ArrayArg& output, const ArrayArg& grad,
                                        const std::string& layout, int num_threads) {
        CallArrays arrays(name);
        const TensorView y = arrays.input(output, output_name);
        const TensorView g = arrays.input(grad, grad_name);
        const ClassAxis axis = parse_layout(layout, arrays.op() + ": layout");
        Tensor out;
        {
          nb::gil_scoped_release release;
          out = f(y, g, axis, context_of(num_threads));
        }
        return arrays.result(std::move(out));
      },
      arg(output_name), arg(grad_name), arg("layout") = "NCHW", nb::kw_only(),
      arg("num_threads") = 0, doc);
  m.def(
      into_name,
      [into_name, output_name, grad_name, f_into](const ArrayArg& output, const ArrayArg& grad,
                                                  const ArrayArg& grad_logits,
                                                  const std::string& layout, int num_threads) {
        CallArrays arrays(into_name);
        const TensorView y = arrays.input(output, output_name);
        const TensorView g = arrays.input(grad, grad_name);
        const MutableTensorView dx = arrays.output(grad_logits, "grad_logits");
        const ClassAxis axis = parse_layout(layout, arrays.op() + ": layout");
        nb::gil_scoped_release release;
        f_into(y, g, dx, axis, context_of(num_threads));
      },
      arg(output_name), arg(grad_name), arg("grad_logits"), arg("layout") = "NCHW", nb::kw_only(),
      arg("num_threads") = 0, "The same, written into grad_logits (C-contiguous, writable).");
}

void def_softmax_family(nb::module_& m) {
  def_class_function(m, "softmax", &softmax,
                     "Softmax over the class axis; an array of the logits' shape and layout.");
  def_class_function(m, "log_softmax", &log_softmax, "log_softmax over the class axis.");
  def_class_function(m, "entropy", &entropy,
                     "Per-position entropy -sum_c p_c log p_c, shape (N, d1..dk).");
  def_class_into(m, "softmax_into", "prob", &softmax_into, "softmax written into prob.");
  def_class_into(m, "log_softmax_into", "log_prob", &log_softmax_into,
                 "log_softmax written into log_prob.");
  def_class_into(m, "entropy_into", "entropy", &entropy_into, "entropy written into entropy.");
  def_class_backward(m, "softmax_backward", "softmax_backward_into", "prob", "grad_prob",
                     &softmax_backward, &softmax_backward_into,
                     "dX_c = p_c (g_c - sum_j p_j g_j) from the softmax output p.");
  def_class_backward(m, "log_softmax_backward", "log_softmax_backward_into", "log_prob",
                     "grad_log_prob", &log_softmax_backward, &log_softmax_backward_into,
                     "dX_c = g_c - p_c sum_j g_j from the log_softmax output.");
}

void def_cross_entropy(nb::module_& m) {
  nb::class_<PyCrossEntropyResult>(m, "CrossEntropyResult",
                                   "Outputs of cross_entropy and cross_entropy_forward_backward; "
                                   "the ones not asked for are None.")
      .def_ro("loss", &PyCrossEntropyResult::loss)
      .def_ro("prob", &PyCrossEntropyResult::prob)
      .def_ro("log_prob", &PyCrossEntropyResult::log_prob)
      .def_ro("entropy", &PyCrossEntropyResult::entropy)
      .def_ro("grad_logits", &PyCrossEntropyResult::grad_logits);

  m.def(
      "cross_entropy",
      [](const ArrayArg& logits, const ArrayArg& targets, SPATIALSOFTMAX_CE_PARAMS, bool want_prob,
         bool want_log_prob, bool want_entropy, int num_threads) {
        CallArrays arrays("cross_entropy");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(targets, "targets");
        CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        want(options, want_prob, want_log_prob, want_entropy);
        CrossEntropyResult r;
        {
          nb::gil_scoped_release release;
          r = cross_entropy(x, t, options, context_of(num_threads));
        }
        return wrap(arrays, std::move(r));
      },
      arg("logits"), arg("targets"), nb::kw_only(), SPATIALSOFTMAX_CE_ARGS,
      arg("want_prob") = false, arg("want_log_prob") = false, arg("want_entropy") = false,
      arg("num_threads") = 0,
      "Cross-entropy of the softmax of `logits` against `targets`: class indices (int32/int64, "
      "(N, d1..dk)) or probabilities (the logits' dtype and shape). Returns a CrossEntropyResult "
      "(loss: a scalar, or the (N, d1..dk) map for reduction 'none'; prob, log_prob, entropy "
      "where asked for)." SPATIALSOFTMAX_CE_DOC);

  m.def(
      "cross_entropy_backward",
      [](const ArrayArg& logits, const ArrayArg& targets, const std::optional<ArrayArg>& grad_loss,
         const std::optional<ArrayArg>& grad_prob, const std::optional<ArrayArg>& grad_log_prob,
         const std::optional<ArrayArg>& grad_entropy, SPATIALSOFTMAX_CE_PARAMS, int num_threads) {
        CallArrays arrays("cross_entropy_backward");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(targets, "targets");
        const CrossEntropyGrads grads =
            grads_of(arrays, grad_loss, grad_prob, grad_log_prob, grad_entropy);
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        Tensor dx;
        {
          nb::gil_scoped_release release;
          dx = cross_entropy_backward(x, t, grads, options, context_of(num_threads));
        }
        return arrays.result(std::move(dx));
      },
      arg("logits"), arg("targets"), nb::kw_only(), arg("grad_loss") = nb::none(),
      arg("grad_prob") = nb::none(), arg("grad_log_prob") = nb::none(),
      arg("grad_entropy") = nb::none(), SPATIALSOFTMAX_CE_ARGS, arg("num_threads") = 0,
      "The gradient with respect to the logits of the forward outputs' upstream gradients "
      "(absent ones are zero; grad_loss is a scalar for sum/mean, the (N, d1..dk) map for "
      "none)." SPATIALSOFTMAX_CE_DOC);

  m.def(
      "cross_entropy_forward_backward",
      [](const ArrayArg& logits, const ArrayArg& targets, const std::optional<ArrayArg>& grad_loss,
         const std::optional<ArrayArg>& grad_prob, const std::optional<ArrayArg>& grad_log_prob,
         const std::optional<ArrayArg>& grad_entropy, SPATIALSOFTMAX_CE_PARAMS, bool want_prob,
         bool want_log_prob, bool want_entropy, int num_threads) {
        CallArrays arrays("cross_entropy_forward_backward");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(targets, "targets");
        const CrossEntropyGrads grads =
            grads_of(arrays, grad_loss, grad_prob, grad_log_prob, grad_entropy);
        CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        want(options, want_prob, want_log_prob, want_entropy);
        CrossEntropyResult r;
        {
          nb::gil_scoped_release release;
          r = cross_entropy_forward_backward(x, t, options, grads, context_of(num_threads));
        }
        return wrap(arrays, std::move(r));
      },
      arg("logits"), arg("targets"), nb::kw_only(), arg("grad_loss") = nb::none(),
      arg("grad_prob") = nb::none(), arg("grad_log_prob") = nb::none(),
      arg("grad_entropy") = nb::none(), SPATIALSOFTMAX_CE_ARGS, arg("want_prob") = false,
      arg("want_log_prob") = false, arg("want_entropy") = false, arg("num_threads") = 0,
      "The loss (and the asked-for maps) and its gradient in one pass over the logits: "
      "result.grad_logits. The upstream gradient of the loss is 1 unless grad_loss is "
      "given." SPATIALSOFTMAX_CE_DOC);

  m.def(
      "cross_entropy_into",
      [](const ArrayArg& logits, const ArrayArg& targets, const std::optional<ArrayArg>& loss,
         const std::optional<ArrayArg>& prob, const std::optional<ArrayArg>& log_prob,
         const std::optional<ArrayArg>& entropy, SPATIALSOFTMAX_CE_PARAMS, int num_threads) {
        CallArrays arrays("cross_entropy_into");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(targets, "targets");
        const CrossEntropyOutputs outputs =
            outputs_of(arrays, loss, prob, log_prob, entropy, std::nullopt);
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        nb::gil_scoped_release release;
        cross_entropy_into(x, t, outputs, options, context_of(num_threads));
      },
      arg("logits"), arg("targets"), nb::kw_only(), arg("loss") = nb::none(),
      arg("prob") = nb::none(), arg("log_prob") = nb::none(), arg("entropy") = nb::none(),
      SPATIALSOFTMAX_CE_ARGS, arg("num_threads") = 0,
      "cross_entropy written into the given outputs (writable, C-contiguous; each one given is "
      "computed): loss () for sum/mean or (N, d1..dk) for none, prob and log_prob the logits' "
      "shape, entropy (N, d1..dk)." SPATIALSOFTMAX_CE_DOC);

  m.def(
      "cross_entropy_backward_into",
      [](const ArrayArg& logits, const ArrayArg& targets, const ArrayArg& grad_logits,
         const std::optional<ArrayArg>& grad_loss, const std::optional<ArrayArg>& grad_prob,
         const std::optional<ArrayArg>& grad_log_prob, const std::optional<ArrayArg>& grad_entropy,
         SPATIALSOFTMAX_CE_PARAMS, int num_threads) {
        CallArrays arrays("cross_entropy_backward_into");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(targets, "targets");
        const MutableTensorView dx = arrays.output(grad_logits, "grad_logits");
        const CrossEntropyGrads grads =
            grads_of(arrays, grad_loss, grad_prob, grad_log_prob, grad_entropy);
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        nb::gil_scoped_release release;
        cross_entropy_backward_into(x, t, grads, dx, options, context_of(num_threads));
      },
      arg("logits"), arg("targets"), arg("grad_logits"), nb::kw_only(),
      arg("grad_loss") = nb::none(), arg("grad_prob") = nb::none(),
      arg("grad_log_prob") = nb::none(), arg("grad_entropy") = nb::none(), SPATIALSOFTMAX_CE_ARGS,
      arg("num_threads") = 0,
      "cross_entropy_backward written into grad_logits." SPATIALSOFTMAX_CE_DOC);

  m.def(
      "cross_entropy_forward_backward_into",
      [](const ArrayArg& logits, const ArrayArg& targets, const std::optional<ArrayArg>& loss,
         const std::optional<ArrayArg>& prob, const std::optional<ArrayArg>& log_prob,
         const std::optional<ArrayArg>& entropy, const std::optional<ArrayArg>& grad_logits,
         const std::optional<ArrayArg>& grad_loss, const std::optional<ArrayArg>& grad_prob,
         const std::optional<ArrayArg>& grad_log_prob, const std::optional<ArrayArg>& grad_entropy,
         SPATIALSOFTMAX_CE_PARAMS, int num_threads) {
        CallArrays arrays("cross_entropy_forward_backward_into");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(targets, "targets");
        const CrossEntropyOutputs outputs =
            outputs_of(arrays, loss, prob, log_prob, entropy, grad_logits);
        const CrossEntropyGrads grads =
            grads_of(arrays, grad_loss, grad_prob, grad_log_prob, grad_entropy);
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        nb::gil_scoped_release release;
        cross_entropy_forward_backward_into(x, t, outputs, options, grads, context_of(num_threads));
      },
      arg("logits"), arg("targets"), nb::kw_only(), arg("loss") = nb::none(),
      arg("prob") = nb::none(), arg("log_prob") = nb::none(), arg("entropy") = nb::none(),
      arg("grad_logits") = nb::none(), arg("grad_loss") = nb::none(), arg("grad_prob") = nb::none(),
      arg("grad_log_prob") = nb::none(), arg("grad_entropy") = nb::none(), SPATIALSOFTMAX_CE_ARGS,
      arg("num_threads") = 0,
      "cross_entropy_forward_backward written into the given outputs. grad_logits may be the "
      "logits array itself (dense): the gradient then replaces the logits in place (log_prob "
      "cannot be asked for then)." SPATIALSOFTMAX_CE_DOC);
}

void def_nll_loss(nb::module_& m) {
  m.def(
      "nll_loss",
      [](const ArrayArg& log_prob, const ArrayArg& labels, SPATIALSOFTMAX_CE_PARAMS,
         int num_threads) {
        CallArrays arrays("nll_loss");
        const TensorView lp = arrays.input(log_prob, "log_prob");
        const TensorView y = arrays.input(labels, "labels");
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        Tensor loss;
        {
          nb::gil_scoped_release release;
          loss = nll_loss(lp, y, options, context_of(num_threads));
        }
        return arrays.result(std::move(loss));
      },
      arg("log_prob"), arg("labels"), nb::kw_only(), SPATIALSOFTMAX_CE_ARGS, arg("num_threads") = 0,
      "Negative log-likelihood -w_y log_prob[y] over given log-probabilities (ONNX "
      "NegativeLogLikelihoodLoss): class weights, ignore_index and the reduction apply; "
      "smoothing, floor and pixel weights do not." SPATIALSOFTMAX_CE_DOC);
  m.def(
      "nll_loss_backward",
      [](const ArrayArg& log_prob, const ArrayArg& labels, const ArrayArg& grad_loss,
         SPATIALSOFTMAX_CE_PARAMS, int num_threads) {
        CallArrays arrays("nll_loss_backward");
        const TensorView lp = arrays.input(log_prob, "log_prob");
        const TensorView y = arrays.input(labels, "labels");
        const TensorView g = arrays.input(grad_loss, "grad_loss");
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        Tensor grad;
        {
          nb::gil_scoped_release release;
          grad = nll_loss_backward(lp, y, g, options, context_of(num_threads));
        }
        return arrays.result(std::move(grad));
      },
      arg("log_prob"), arg("labels"), arg("grad_loss"), nb::kw_only(), SPATIALSOFTMAX_CE_ARGS,
      arg("num_threads") = 0,
      "The gradient of nll_loss with respect to log_prob." SPATIALSOFTMAX_CE_DOC);
  m.def(
      "nll_loss_into",
      [](const ArrayArg& log_prob, const ArrayArg& labels, const ArrayArg& loss,
         SPATIALSOFTMAX_CE_PARAMS, int num_threads) {
        CallArrays arrays("nll_loss_into");
        const TensorView lp = arrays.input(log_prob, "log_prob");
        const TensorView y = arrays.input(labels, "labels");
        const MutableTensorView out = arrays.output(loss, "loss");
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        nb::gil_scoped_release release;
        nll_loss_into(lp, y, out, options, context_of(num_threads));
      },
      arg("log_prob"), arg("labels"), arg("loss"), nb::kw_only(), SPATIALSOFTMAX_CE_ARGS,
      arg("num_threads") = 0, "nll_loss written into loss." SPATIALSOFTMAX_CE_DOC);
  m.def(
      "nll_loss_backward_into",
      [](const ArrayArg& log_prob, const ArrayArg& labels, const ArrayArg& grad_loss,
         const ArrayArg& grad_log_prob, SPATIALSOFTMAX_CE_PARAMS, int num_threads) {
        CallArrays arrays("nll_loss_backward_into");
        const TensorView lp = arrays.input(log_prob, "log_prob");
        const TensorView y = arrays.input(labels, "labels");
        const TensorView g = arrays.input(grad_loss, "grad_loss");
        const MutableTensorView out = arrays.output(grad_log_prob, "grad_log_prob");
        const CrossEntropyOptions options = cross_entropy_options(arrays, SPATIALSOFTMAX_CE_VALUES);
        nb::gil_scoped_release release;
        nll_loss_backward_into(lp, y, g, out, options, context_of(num_threads));
      },
      arg("log_prob"), arg("labels"), arg("grad_loss"), arg("grad_log_prob"), nb::kw_only(),
      SPATIALSOFTMAX_CE_ARGS, arg("num_threads") = 0,
      "nll_loss_backward written into grad_log_prob." SPATIALSOFTMAX_CE_DOC);
}

#define SPATIALSOFTMAX_KL_DOC                                                                   \
  "\n\nlayout 'NCHW' or 'NHWC'; log_target: target holds log-probabilities; reduction 'none', " \
  "'sum', 'mean' (over every element) or 'batchmean' (over N)."

void def_kl_div(nb::module_& m) {
  m.def(
      "kl_div",
      [](const ArrayArg& logits, const ArrayArg& target, const std::string& layout, bool log_target,
         const std::string& reduction, int num_threads) {
        CallArrays arrays("kl_div");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(target, "target");
        const KlDivOptions options = kl_div_options(arrays.op(), layout, log_target, reduction);
        Tensor out;
        {
          nb::gil_scoped_release release;
          out = kl_div(x, t, options, context_of(num_threads));
        }
        return arrays.result(std::move(out));
      },
      arg("logits"), arg("target"), nb::kw_only(), arg("layout") = "NCHW",
      arg("log_target") = false, arg("reduction") = "mean", arg("num_threads") = 0,
      "KL(target || softmax(logits)), as torch.nn.functional.kl_div(log_softmax(logits, class "
      "axis), target)." SPATIALSOFTMAX_KL_DOC);
  m.def(
      "kl_div_backward",
      [](const ArrayArg& logits, const ArrayArg& target, const ArrayArg& grad_output,
         const std::string& layout, bool log_target, const std::string& reduction,
         int num_threads) {
        CallArrays arrays("kl_div_backward");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(target, "target");
        const TensorView g = arrays.input(grad_output, "grad_output");
        const KlDivOptions options = kl_div_options(arrays.op(), layout, log_target, reduction);
        Tensor dx;
        {
          nb::gil_scoped_release release;
          dx = kl_div_backward(x, t, g, options, context_of(num_threads));
        }
        return arrays.result(std::move(dx));
      },
      arg("logits"), arg("target"), arg("grad_output"), nb::kw_only(), arg("layout") = "NCHW",
      arg("log_target") = false, arg("reduction") = "mean", arg("num_threads") = 0,
      "The gradient of kl_div with respect to the logits (grad_output: a scalar, or the logits' "
      "shape for 'none').");
  m.def(
      "kl_div_into",
      [](const ArrayArg& logits, const ArrayArg& target, const ArrayArg& output,
         const std::string& layout, bool log_target, const std::string& reduction,
         int num_threads) {
        CallArrays arrays("kl_div_into");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(target, "target");
        const MutableTensorView out = arrays.output(output, "output");
        const KlDivOptions options = kl_div_options(arrays.op(), layout, log_target, reduction);
        nb::gil_scoped_release release;
        kl_div_into(x, t, out, options, context_of(num_threads));
      },
      arg("logits"), arg("target"), arg("output"), nb::kw_only(), arg("layout") = "NCHW",
      arg("log_target") = false, arg("reduction") = "mean", arg("num_threads") = 0,
      "kl_div written into output.");
  m.def(
      "kl_div_backward_into",
      [](const ArrayArg& logits, const ArrayArg& target, const ArrayArg& grad_output,
         const ArrayArg& grad_logits, const std::string& layout, bool log_target,
         const std::string& reduction, int num_threads) {
        CallArrays arrays("kl_div_backward_into");
        const TensorView x = arrays.input(logits, "logits");
        const TensorView t = arrays.input(target, "target");
        const TensorView g = arrays.input(grad_output, "grad_output");
        const MutableTensorView dx = arrays.output(grad_logits, "grad_logits");
        const KlDivOptions options = kl_div_options(arrays.op(), layout, log_target, reduction);
        nb::gil_scoped_release release;
        kl_div_backward_into(x, t, g, dx, options, context_of(num_threads));
      },
      arg("logits"), arg("target"), arg("grad_output"), arg("grad_logits"), nb::kw_only(),
      arg("layout") = "NCHW", arg("log_target") = false, arg("reduction") = "mean",
      arg("num_threads") = 0, "kl_div_backward written into grad_logits.");
}

}  // namespace

void bind_loss(nb::module_& m) {
  def_softmax_family(m);
  def_cross_entropy(m);
  def_nll_loss(m);
  def_kl_div(m);
}

}  // namespace spatialsoftmax::python
