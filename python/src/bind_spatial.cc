// The spatial softmax and soft-argmax keypoints (docs/semantics.md 4) with
// their gradient and `_into` forms.
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

#define SPATIALSOFTMAX_SSA_DOC                                                               \
  "\n\nOptions: layout 'NCHW' (channels at axis 1) or 'NHWC' (channels last), k >= 1 "       \
  "spatial axes; temperature > 0; temperature_mode 'divide' (softmax(x / T)) or 'multiply' " \
  "(softmax(x * T)); coordinates 'normalized' (linspace(-1, 1, L)) or 'pixel' (0..L-1); "    \
  "singleton_coordinate 'center' (0) or 'minus_one' for an axis of length 1."

struct PySpatialSoftArgmaxResult {
  nb::object keypoints, softmax, covariance;
};
struct PySpatialSoftArgmaxBackward {
  nb::object grad_input;
  double grad_temperature = 0;
};

SpatialSoftArgmaxGrads grads_of(CallArrays& arrays, const std::optional<ArrayArg>& keypoints,
                                const std::optional<ArrayArg>& softmax,
                                const std::optional<ArrayArg>& covariance) {
  return {arrays.optional_input(keypoints, "grad_keypoints"),
          arrays.optional_input(softmax, "grad_softmax"),
          arrays.optional_input(covariance, "grad_covariance")};
}

}  // namespace

void bind_spatial(nb::module_& m) {
  nb::class_<PySpatialSoftArgmaxResult>(m, "SpatialSoftArgmaxResult",
                                        "keypoints (N, C, k), fastest spatial axis first; "
                                        "softmax and covariance (N, C, k, k) where asked for.")
      .def_ro("keypoints", &PySpatialSoftArgmaxResult::keypoints)
      .def_ro("softmax", &PySpatialSoftArgmaxResult::softmax)
      .def_ro("covariance", &PySpatialSoftArgmaxResult::covariance);
  nb::class_<PySpatialSoftArgmaxBackward>(m, "SpatialSoftArgmaxBackward",
                                          "grad_input (the input's shape) and dL/dT (divide "
                                          "mode) or dL/d(multiplier).")
      .def_ro("grad_input", &PySpatialSoftArgmaxBackward::grad_input)
      .def_ro("grad_temperature", &PySpatialSoftArgmaxBackward::grad_temperature);

  m.def(
      "spatial_softmax",
      [](const ArrayArg& input, SPATIALSOFTMAX_SSA_PARAMS, int num_threads) {
        CallArrays arrays("spatial_softmax");
        const TensorView x = arrays.input(input, "input");
        const SpatialSoftArgmaxOptions options =
            spatial_soft_argmax_options(arrays.op(), SPATIALSOFTMAX_SSA_VALUES);
        Tensor out;
        {
          nb::gil_scoped_release release;
          out = spatial_softmax(x, options, context_of(num_threads));
        }
        return arrays.result(std::move(out));
      },
      arg("input"), nb::kw_only(), SPATIALSOFTMAX_SSA_ARGS, arg("num_threads") = 0,
      "Softmax over the spatial axes of each channel (the input's shape and "
      "layout)." SPATIALSOFTMAX_SSA_DOC);

  m.def(
      "spatial_soft_argmax",
      [](const ArrayArg& input, SPATIALSOFTMAX_SSA_PARAMS, bool want_softmax, bool want_covariance,
         int num_threads) {
        CallArrays arrays("spatial_soft_argmax");
        const TensorView x = arrays.input(input, "input");
        SpatialSoftArgmaxOptions options =
            spatial_soft_argmax_options(arrays.op(), SPATIALSOFTMAX_SSA_VALUES);
        options.want_softmax = want_softmax;
        options.want_covariance = want_covariance;
        SpatialSoftArgmaxResult r;
        {
          nb::gil_scoped_release release;
          r = spatial_soft_argmax(x, options, context_of(num_threads));
        }
        return PySpatialSoftArgmaxResult{arrays.result(std::move(r.keypoints)),
                                         arrays.result(std::move(r.softmax)),
                                         arrays.result(std::move(r.covariance))};
      },
      arg("input"), nb::kw_only(), SPATIALSOFTMAX_SSA_ARGS, arg("want_softmax") = false,
      arg("want_covariance") = false, arg("num_threads") = 0,
      "Expected keypoints under the spatial softmax of each channel (Levine et al. 2016): a "
      "SpatialSoftArgmaxResult." SPATIALSOFTMAX_SSA_DOC);

  m.def(
      "spatial_soft_argmax_backward",
      [](const ArrayArg& input, const std::optional<ArrayArg>& grad_keypoints,
         const std::optional<ArrayArg>& grad_softmax,
         const std::optional<ArrayArg>& grad_covariance, SPATIALSOFTMAX_SSA_PARAMS,
         int num_threads) {
        CallArrays arrays("spatial_soft_argmax_backward");
        const TensorView x = arrays.input(input, "input");
        const SpatialSoftArgmaxGrads grads =
            grads_of(arrays, grad_keypoints, grad_softmax, grad_covariance);
        const SpatialSoftArgmaxOptions options =
            spatial_soft_argmax_options(arrays.op(), SPATIALSOFTMAX_SSA_VALUES);
        SpatialSoftArgmaxBackward r;
        {
          nb::gil_scoped_release release;
          r = spatial_soft_argmax_backward(x, grads, options, context_of(num_threads));
        }
        return PySpatialSoftArgmaxBackward{arrays.result(std::move(r.grad_input)),
                                           r.grad_temperature};
      },
      arg("input"), nb::kw_only(), arg("grad_keypoints") = nb::none(),
      arg("grad_softmax") = nb::none(), arg("grad_covariance") = nb::none(),
      SPATIALSOFTMAX_SSA_ARGS, arg("num_threads") = 0,
      "The gradient of spatial_soft_argmax's outputs (absent upstream gradients are zero): a "
      "SpatialSoftArgmaxBackward." SPATIALSOFTMAX_SSA_DOC);

  m.def(
      "spatial_softmax_into",
      [](const ArrayArg& input, const ArrayArg& softmax, SPATIALSOFTMAX_SSA_PARAMS,
         int num_threads) {
        CallArrays arrays("spatial_softmax_into");
        const TensorView x = arrays.input(input, "input");
        const MutableTensorView out = arrays.output(softmax, "softmax");
        const SpatialSoftArgmaxOptions options =
            spatial_soft_argmax_options(arrays.op(), SPATIALSOFTMAX_SSA_VALUES);
        nb::gil_scoped_release release;
        spatial_softmax_into(x, out, options, context_of(num_threads));
      },
      arg("input"), arg("softmax"), nb::kw_only(), SPATIALSOFTMAX_SSA_ARGS, arg("num_threads") = 0,
      "spatial_softmax written into softmax.");

  m.def(
      "spatial_soft_argmax_into",
      [](const ArrayArg& input, const ArrayArg& keypoints, const std::optional<ArrayArg>& softmax,
         const std::optional<ArrayArg>& covariance, SPATIALSOFTMAX_SSA_PARAMS, int num_threads) {
        CallArrays arrays("spatial_soft_argmax_into");
        const TensorView x = arrays.input(input, "input");
        const SpatialSoftArgmaxOutputs outputs{arrays.output(keypoints, "keypoints"),
                                               arrays.optional_output(softmax, "softmax"),
                                               arrays.optional_output(covariance, "covariance")};
        const SpatialSoftArgmaxOptions options =
            spatial_soft_argmax_options(arrays.op(), SPATIALSOFTMAX_SSA_VALUES);
        nb::gil_scoped_release release;
        spatial_soft_argmax_into(x, outputs, options, context_of(num_threads));
      },
      arg("input"), arg("keypoints"), nb::kw_only(), arg("softmax") = nb::none(),
      arg("covariance") = nb::none(), SPATIALSOFTMAX_SSA_ARGS, arg("num_threads") = 0,
      "spatial_soft_argmax written into keypoints (N, C, k) and, where given, softmax and "
      "covariance.");

  m.def(
      "spatial_soft_argmax_backward_into",
      [](const ArrayArg& input, const ArrayArg& grad_input,
         const std::optional<ArrayArg>& grad_keypoints, const std::optional<ArrayArg>& grad_softmax,
         const std::optional<ArrayArg>& grad_covariance, SPATIALSOFTMAX_SSA_PARAMS,
         int num_threads) {
        CallArrays arrays("spatial_soft_argmax_backward_into");
        const TensorView x = arrays.input(input, "input");
        const MutableTensorView dx = arrays.output(grad_input, "grad_input");
        const SpatialSoftArgmaxGrads grads =
            grads_of(arrays, grad_keypoints, grad_softmax, grad_covariance);
        const SpatialSoftArgmaxOptions options =
            spatial_soft_argmax_options(arrays.op(), SPATIALSOFTMAX_SSA_VALUES);
        nb::gil_scoped_release release;
        return spatial_soft_argmax_backward_into(x, grads, dx, options, context_of(num_threads));
      },
      arg("input"), arg("grad_input"), nb::kw_only(), arg("grad_keypoints") = nb::none(),
      arg("grad_softmax") = nb::none(), arg("grad_covariance") = nb::none(),
      SPATIALSOFTMAX_SSA_ARGS, arg("num_threads") = 0,
      "spatial_soft_argmax_backward written into grad_input; returns the temperature's "
      "gradient.");
}

}  // namespace spatialsoftmax::python
