// The one place where Python arrays become the library's views and the
// library's tensors become Python arrays, both without copying.
//
// Inputs come from any DLPack or buffer-protocol producer (NumPy, PyTorch,
// ...) with their own strides; outputs of the `_into` forms must be writable
// and C-contiguous (MutableTensorView is dense). Results are the library's
// own Tensor storage handed to NumPy (or, when the call's first array
// argument is a torch.Tensor, to torch) through a capsule that frees it.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::python {

namespace nb = nanobind;

// A parameter that takes any array-like object. It is converted inside the
// call (CallArrays), so that a conversion error can name the argument.
struct ArrayArg {
  nb::object object;
};

// The arrays of one call: converts the arguments, keeps their producers'
// buffers referenced while the call runs, and wraps its results.
class CallArrays {
 public:
  explicit CallArrays(std::string_view op) : op_(op) {}

  // Any strides; float32, float64, int32, int64. Errors name `name`.
  TensorView input(const ArrayArg& array, std::string_view name);
  std::optional<TensorView> optional_input(const std::optional<ArrayArg>& array,
                                           std::string_view name);
  // A writable, C-contiguous array that the call writes into.
  MutableTensorView output(const ArrayArg& array, std::string_view name);
  std::optional<MutableTensorView> optional_output(const std::optional<ArrayArg>& array,
                                                   std::string_view name);

  // A NumPy array (a torch.Tensor when the first array argument was one)
  // owning `tensor`'s storage; None for an undefined tensor.
  nb::object result(Tensor&& tensor);

  const std::string& op() const { return op_; }

 private:
  // Sets the framework of the results from the first array argument.
  void note_framework(const nb::handle& object);
  [[noreturn]] void not_an_array(const nb::handle& object, std::string_view name) const;
  // The library's device of an array's DLPack device (CPU, CUDA host memory
  // as CPU, CUDA); other device types are an Error.
  Device device_of(int device_type, int device_id, std::string_view name) const;

  std::string op_;
  std::vector<nb::ndarray<nb::ro>> held_inputs_;
  std::vector<nb::ndarray<>> held_outputs_;
  bool framework_known_ = false;
  bool torch_ = false;
};

// The library's dtype of a DLPack dtype, or DTypeError "<op>: <name> dtype:
// expected float32, float64, int32 or int64, got float16".
DType dtype_from_dlpack(nb::dlpack::dtype dtype, std::string_view op, std::string_view name);

}  // namespace spatialsoftmax::python

// Every object converts to an ArrayArg (CallArrays checks it), and stubs
// show the parameter as numpy.typing.ArrayLike.
namespace nanobind::detail {
template <>
struct type_caster<spatialsoftmax::python::ArrayArg> {
  NB_TYPE_CASTER(spatialsoftmax::python::ArrayArg, const_name("numpy.typing.ArrayLike"))
  bool from_python(handle src, uint8_t, cleanup_list*) noexcept {
    value.object = borrow(src);
    return true;
  }
  static handle from_cpp(const spatialsoftmax::python::ArrayArg& array, rv_policy,
                         cleanup_list*) noexcept {
    return array.object.inc_ref();
  }
};
}  // namespace nanobind::detail
