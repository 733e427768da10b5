// spatialsoftmax._core: the C++ library for Python (python/spatialsoftmax
// re-exports it). Errors: spatialsoftmax::DTypeError becomes TypeError, every
// other spatialsoftmax::Error ValueError, both with the library's message.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "keywords.h"
#include "spatialsoftmax/device.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/threads.h"

namespace nb = nanobind;
namespace ss = spatialsoftmax;

NB_MODULE(_core, m) {
  m.doc() =
      "Per-pixel softmax and cross-entropy (Caffe2's SpatialSoftmaxWithLoss and the loss family "
      "around it) over NumPy arrays or any DLPack producer, without copies.";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ss::DTypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const ss::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("num_threads", &ss::num_threads,
        "The CPU threads a call uses unless it says otherwise (SPATIALSOFTMAX_NUM_THREADS, else "
        "the hardware threads).");
  m.def("set_num_threads", &ss::set_num_threads, nb::arg("n"),
        "Sets the default thread count, n in [1, 256]. Results do not depend on it.");
  m.def("backend_names", &ss::backend_names,
        "The compiled-in backends, best first, as 'name (device type)'.");
  m.def(
      "_view_of",
      [](const ss::python::ArrayArg& array) {
        ss::python::CallArrays arrays("_view_of");
        const ss::TensorView view = arrays.input(array, "array");
        nb::dict d;
        d["data"] = reinterpret_cast<std::uintptr_t>(view.data());
        d["dtype"] = std::string(ss::dtype_name(view.dtype()));
        d["shape"] = view.shape();
        d["strides"] = view.strides();
        d["device"] = ss::device_name(view.device());
        return d;
      },
      nb::arg("array"),
      "The view the functions see of `array` (data address, dtype, shape, strides in elements, "
      "device): for tests of the zero-copy conversion.");

  m.def(
      "_set_cuda_stream",
      [](std::uintptr_t stream) { return std::exchange(ss::python::thread_cuda_stream(), stream); },
      nb::arg("stream"),
      "Sets the CUDA stream (a cudaStream_t as an integer, 0: the default stream) that calls on "
      "this thread run on; returns the previous one. spatialsoftmax.cuda_stream is the context "
      "manager over it.");
  m.def(
      "check_device_errors", [] { ss::check_device_errors(ss::python::context_of(0)); },
      "Waits for this thread's CUDA stream and raises, as ValueError, the first bad label or "
      "weight a device kernel found since the last check (device calls never wait for the "
      "device, so they cannot raise it themselves). Returns at once without a CUDA backend.");
  m.def(
      "_empty",
      [](const ss::python::ArrayArg& like, const std::vector<std::int64_t>& shape) {
        ss::python::CallArrays arrays("_empty");
        const ss::TensorView view = arrays.input(like, "like");
        if (view.device() != ss::Device::cpu()) {
          throw ss::Error("_empty: like device: expected cpu, got " +
                          ss::device_name(view.device()));
        }
        return arrays.result(ss::Tensor::uninitialized(view.dtype(), shape));
      },
      nb::arg("like"), nb::arg("shape"),
      "An uninitialized array of like's dtype and framework in the library's reused CPU memory "
      "(what the functions return): the torch front's CPU outputs.");

  ss::python::bind_loss(m);
  ss::python::bind_spatial(m);
  ss::python::bind_caffe2(m);
}
