// spatialsoftmax.caffe2: Caffe2's SpatialSoftmaxWithLoss and SoftmaxWithLoss
// with their gradients (spatialsoftmax/caffe2.h, docs/semantics.md 2).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <string>
#include <utility>

#include "arrays.h"
#include "bindings.h"
#include "keywords.h"
#include "spatialsoftmax/caffe2.h"

namespace spatialsoftmax::python {
namespace {

using nb::arg;
namespace c2 = spatialsoftmax::caffe2;

#define SPATIALSOFTMAX_C2_DOC                                                              \
  "\n\nX (N, D, H, W) float ((N, H, W, D) with order 'NHWC', an extension), T (N, H, W) "  \
  "int32 with -1 = ignore, weight (N, H, W) one per pixel. scale >= 0 (the CPU variant's " \
  "forward does not apply it, as in Caffe2); order 'NCHW' or 'NHWC'; variant 'cpu' or "    \
  "'cuda': whose semantics (docs/semantics.md 2.4)."
#define SPATIALSOFTMAX_C2_SOFTMAX_DOC                                                       \
  "\n\nX is coerced to 2-D (N, D) at `axis`; T (N,) int32 labels or, with label_prob = 1, " \
  "(N, D) probabilities; weight (N,); average_by_batch_size = 1 divides by N (CPU); order " \
  "'NCHW' only; scale and variant as for SpatialSoftmaxWithLoss."

struct PyLossOutputs {
  nb::object prob, loss;
};

c2::SpatialSoftmaxWithLossArgs spatial_args(const std::string& op, float scale,
                                            const std::string& order, const std::string& variant) {
  return {scale, order, c2::parse_variant(variant, op + ": variant")};
}

c2::SoftmaxWithLossArgs softmax_args(const std::string& op, float scale, const std::string& order,
                                     int label_prob, int axis, int average_by_batch_size,
                                     const std::string& variant) {
  return {scale,
          order,
          label_prob,
          axis,
          average_by_batch_size,
          c2::parse_variant(variant, op + ": variant")};
}

// The operators' inputs: X, T and the optional per-pixel weight; the
// gradients add the forward's P and the upstream d_avg_loss.
struct Inputs {
  TensorView x, t;
  std::optional<TensorView> weight;
};
Inputs forward_inputs(CallArrays& arrays, const ArrayArg& X, const ArrayArg& T,
                      const std::optional<ArrayArg>& weight) {
  Inputs in{arrays.input(X, "X"), arrays.input(T, "T"), std::nullopt};
  in.weight = arrays.optional_input(weight, "weight");
  return in;
}
struct GradientInputs : Inputs {
  TensorView p, d_loss;
};
GradientInputs gradient_inputs(CallArrays& arrays, const ArrayArg& X, const ArrayArg& T,
                               const ArrayArg& P, const ArrayArg& d_loss,
                               const std::optional<ArrayArg>& weight) {
  GradientInputs in;
  in.x = arrays.input(X, "X");
  in.t = arrays.input(T, "T");
  in.p = arrays.input(P, "P");
  in.d_loss = arrays.input(d_loss, "d_avg_loss");
  in.weight = arrays.optional_input(weight, "weight");
  return in;
}

void def_spatial(nb::module_& m) {
  m.def(
      "spatial_softmax_with_loss",
      [](const ArrayArg& X, const ArrayArg& T, const std::optional<ArrayArg>& weight, float scale,
         const std::string& order, const std::string& variant, int num_threads) {
        CallArrays arrays("SpatialSoftmaxWithLoss");
        const Inputs in = forward_inputs(arrays, X, T, weight);
        const auto args = spatial_args(arrays.op(), scale, order, variant);
        c2::LossOutputs r;
        {
          nb::gil_scoped_release release;
          r = c2::spatial_softmax_with_loss(in.x, in.t, in.weight, args, context_of(num_threads));
        }
        return PyLossOutputs{arrays.result(std::move(r.prob)), arrays.result(std::move(r.loss))};
      },
      arg("X"), arg("T"), arg("weight") = nb::none(), nb::kw_only(), arg("scale") = 1.0f,
      arg("order") = "NCHW", arg("variant") = "cpu", arg("num_threads") = 0,
      "Caffe2's SpatialSoftmaxWithLoss: LossOutputs (prob P, loss "
      "avg_loss)." SPATIALSOFTMAX_C2_DOC);
  m.def(
      "spatial_softmax_with_loss_gradient",
      [](const ArrayArg& X, const ArrayArg& T, const ArrayArg& P, const ArrayArg& d_loss,
         const std::optional<ArrayArg>& weight, float scale, const std::string& order,
         const std::string& variant, int num_threads) {
        CallArrays arrays("SpatialSoftmaxWithLossGradient");
        const GradientInputs in = gradient_inputs(arrays, X, T, P, d_loss, weight);
        const auto args = spatial_args(arrays.op(), scale, order, variant);
        Tensor dx;
        {
          nb::gil_scoped_release release;
          dx = c2::spatial_softmax_with_loss_gradient(in.x, in.t, in.weight, in.p, in.d_loss, args,
                                                      context_of(num_threads));
        }
        return arrays.result(std::move(dx));
      },
      arg("X"), arg("T"), arg("P"), arg("d_loss"), nb::kw_only(), arg("weight") = nb::none(),
      arg("scale") = 1.0f, arg("order") = "NCHW", arg("variant") = "cpu", arg("num_threads") = 0,
      "Caffe2's SpatialSoftmaxWithLossGradient from the forward's P (X gives the shape; the "
      "first element of d_loss is the upstream gradient): dX." SPATIALSOFTMAX_C2_DOC);
  m.def(
      "spatial_softmax_with_loss_into",
      [](const ArrayArg& X, const ArrayArg& T, const ArrayArg& prob, const ArrayArg& loss,
         const std::optional<ArrayArg>& weight, float scale, const std::string& order,
         const std::string& variant, int num_threads) {
        CallArrays arrays("SpatialSoftmaxWithLoss");
        const Inputs in = forward_inputs(arrays, X, T, weight);
        const c2::LossOutputViews outputs{arrays.output(prob, "P"),
                                          arrays.output(loss, "avg_loss")};
        const auto args = spatial_args(arrays.op(), scale, order, variant);
        nb::gil_scoped_release release;
        c2::spatial_softmax_with_loss_into(in.x, in.t, in.weight, outputs, args,
                                           context_of(num_threads));
      },
      arg("X"), arg("T"), arg("prob"), arg("loss"), nb::kw_only(), arg("weight") = nb::none(),
      arg("scale") = 1.0f, arg("order") = "NCHW", arg("variant") = "cpu", arg("num_threads") = 0,
      "spatial_softmax_with_loss written into prob (X's shape) and loss (a scalar).");
  m.def(
      "spatial_softmax_with_loss_gradient_into",
      [](const ArrayArg& X, const ArrayArg& T, const ArrayArg& P, const ArrayArg& d_loss,
         const ArrayArg& dX, const std::optional<ArrayArg>& weight, float scale,
         const std::string& order, const std::string& variant, int num_threads) {
        CallArrays arrays("SpatialSoftmaxWithLossGradient");
        const GradientInputs in = gradient_inputs(arrays, X, T, P, d_loss, weight);
        const MutableTensorView dx = arrays.output(dX, "dX");
        const auto args = spatial_args(arrays.op(), scale, order, variant);
        nb::gil_scoped_release release;
        c2::spatial_softmax_with_loss_gradient_into(in.x, in.t, in.weight, in.p, in.d_loss, dx,
                                                    args, context_of(num_threads));
      },
      arg("X"), arg("T"), arg("P"), arg("d_loss"), arg("dX"), nb::kw_only(),
      arg("weight") = nb::none(), arg("scale") = 1.0f, arg("order") = "NCHW",
      arg("variant") = "cpu", arg("num_threads") = 0,
      "spatial_softmax_with_loss_gradient written into dX (which may be P itself, as Caffe2 "
      "runs it in place).");
}

void def_softmax(nb::module_& m) {
  m.def(
      "softmax_with_loss",
      [](const ArrayArg& X, const ArrayArg& T, const std::optional<ArrayArg>& weight, float scale,
         const std::string& order, int label_prob, int axis, int average_by_batch_size,
         const std::string& variant, int num_threads) {
        CallArrays arrays("SoftmaxWithLoss");
        const Inputs in = forward_inputs(arrays, X, T, weight);
        const auto args = softmax_args(arrays.op(), scale, order, label_prob, axis,
                                       average_by_batch_size, variant);
        c2::LossOutputs r;
        {
          nb::gil_scoped_release release;
          r = c2::softmax_with_loss(in.x, in.t, in.weight, args, context_of(num_threads));
        }
        return PyLossOutputs{arrays.result(std::move(r.prob)), arrays.result(std::move(r.loss))};
      },
      arg("X"), arg("T"), arg("weight") = nb::none(), nb::kw_only(), arg("scale") = 1.0f,
      arg("order") = "NCHW", arg("label_prob") = 0, arg("axis") = 1,
      arg("average_by_batch_size") = 0, arg("variant") = "cpu", arg("num_threads") = 0,
      "Caffe2's SoftmaxWithLoss: LossOutputs (prob P, loss "
      "avg_loss)." SPATIALSOFTMAX_C2_SOFTMAX_DOC);
  m.def(
      "softmax_with_loss_gradient",
      [](const ArrayArg& X, const ArrayArg& T, const ArrayArg& P, const ArrayArg& d_loss,
         const std::optional<ArrayArg>& weight, float scale, const std::string& order,
         int label_prob, int axis, int average_by_batch_size, const std::string& variant,
         int num_threads) {
        CallArrays arrays("SoftmaxWithLossGradient");
        const GradientInputs in = gradient_inputs(arrays, X, T, P, d_loss, weight);
        const auto args = softmax_args(arrays.op(), scale, order, label_prob, axis,
                                       average_by_batch_size, variant);
        Tensor dx;
        {
          nb::gil_scoped_release release;
          dx = c2::softmax_with_loss_gradient(in.x, in.t, in.weight, in.p, in.d_loss, args,
                                              context_of(num_threads));
        }
        return arrays.result(std::move(dx));
      },
      arg("X"), arg("T"), arg("P"), arg("d_loss"), nb::kw_only(), arg("weight") = nb::none(),
      arg("scale") = 1.0f, arg("order") = "NCHW", arg("label_prob") = 0, arg("axis") = 1,
      arg("average_by_batch_size") = 0, arg("variant") = "cpu", arg("num_threads") = 0,
      "Caffe2's SoftmaxWithLossGradient from the forward's P: dX." SPATIALSOFTMAX_C2_SOFTMAX_DOC);
  m.def(
      "softmax_with_loss_into",
      [](const ArrayArg& X, const ArrayArg& T, const ArrayArg& prob, const ArrayArg& loss,
         const std::optional<ArrayArg>& weight, float scale, const std::string& order,
         int label_prob, int axis, int average_by_batch_size, const std::string& variant,
         int num_threads) {
        CallArrays arrays("SoftmaxWithLoss");
        const Inputs in = forward_inputs(arrays, X, T, weight);
        const c2::LossOutputViews outputs{arrays.output(prob, "P"),
                                          arrays.output(loss, "avg_loss")};
        const auto args = softmax_args(arrays.op(), scale, order, label_prob, axis,
                                       average_by_batch_size, variant);
        nb::gil_scoped_release release;
        c2::softmax_with_loss_into(in.x, in.t, in.weight, outputs, args, context_of(num_threads));
      },
      arg("X"), arg("T"), arg("prob"), arg("loss"), nb::kw_only(), arg("weight") = nb::none(),
      arg("scale") = 1.0f, arg("order") = "NCHW", arg("label_prob") = 0, arg("axis") = 1,
      arg("average_by_batch_size") = 0, arg("variant") = "cpu", arg("num_threads") = 0,
      "softmax_with_loss written into prob and loss.");
  m.def(
      "softmax_with_loss_gradient_into",
      [](const ArrayArg& X, const ArrayArg& T, const ArrayArg& P, const ArrayArg& d_loss,
         const ArrayArg& dX, const std::optional<ArrayArg>& weight, float scale,
         const std::string& order, int label_prob, int axis, int average_by_batch_size,
         const std::string& variant, int num_threads) {
        CallArrays arrays("SoftmaxWithLossGradient");
        const GradientInputs in = gradient_inputs(arrays, X, T, P, d_loss, weight);
        const MutableTensorView dx = arrays.output(dX, "dX");
        const auto args = softmax_args(arrays.op(), scale, order, label_prob, axis,
                                       average_by_batch_size, variant);
        nb::gil_scoped_release release;
        c2::softmax_with_loss_gradient_into(in.x, in.t, in.weight, in.p, in.d_loss, dx, args,
                                            context_of(num_threads));
      },
      arg("X"), arg("T"), arg("P"), arg("d_loss"), arg("dX"), nb::kw_only(),
      arg("weight") = nb::none(), arg("scale") = 1.0f, arg("order") = "NCHW", arg("label_prob") = 0,
      arg("axis") = 1, arg("average_by_batch_size") = 0, arg("variant") = "cpu",
      arg("num_threads") = 0,
      "softmax_with_loss_gradient written into dX (which may be P itself).");
}

}  // namespace

void bind_caffe2(nb::module_& m) {
  nb::module_ c2m = m.def_submodule(
      "caffe2", "Caffe2's SpatialSoftmaxWithLoss and SoftmaxWithLoss operators, exact semantics.");
  nb::class_<PyLossOutputs>(c2m, "LossOutputs", "P (X's shape) and avg_loss (a scalar).")
      .def_ro("prob", &PyLossOutputs::prob)
      .def_ro("loss", &PyLossOutputs::loss);
  def_spatial(c2m);
  def_softmax(c2m);
}

}  // namespace spatialsoftmax::python
