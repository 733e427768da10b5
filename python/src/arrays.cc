#include "arrays.h"

#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "spatialsoftmax/device.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::python {
namespace {

std::string dlpack_dtype_name(nb::dlpack::dtype dtype) {
  std::string kind;
  switch (static_cast<nb::dlpack::dtype_code>(dtype.code)) {
    case nb::dlpack::dtype_code::Int:
      kind = "int";
      break;
    case nb::dlpack::dtype_code::UInt:
      kind = "uint";
      break;
    case nb::dlpack::dtype_code::Float:
      kind = "float";
      break;
    case nb::dlpack::dtype_code::Bfloat:
      kind = "bfloat";
      break;
    case nb::dlpack::dtype_code::Complex:
      kind = "complex";
      break;
    case nb::dlpack::dtype_code::Bool:
      return "bool";
    default:
      kind = "dlpack type code " + std::to_string(dtype.code) + " of bits ";
  }
  std::string name = kind + std::to_string(dtype.bits);
  if (dtype.lanes != 1) name += " x" + std::to_string(dtype.lanes);
  return name;
}

nb::dlpack::dtype dlpack_of(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return nb::dtype<float>();
    case DType::kFloat64:
      return nb::dtype<double>();
    case DType::kInt32:
      return nb::dtype<std::int32_t>();
    case DType::kInt64:
      return nb::dtype<std::int64_t>();
    case DType::kBFloat16:
      return {static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
    case DType::kFloat16:
      return {static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
  }
  return nb::dtype<float>();
}

}  // namespace

DType dtype_from_dlpack(nb::dlpack::dtype dtype, std::string_view op, std::string_view name) {
  if (dtype.lanes == 1) {
    if (dtype == nb::dtype<float>()) return DType::kFloat32;
    if (dtype == nb::dtype<double>()) return DType::kFloat64;
    if (dtype == nb::dtype<std::int32_t>()) return DType::kInt32;
    if (dtype == nb::dtype<std::int64_t>()) return DType::kInt64;
    if (dtype == dlpack_of(DType::kBFloat16)) return DType::kBFloat16;
    if (dtype == dlpack_of(DType::kFloat16)) return DType::kFloat16;
  }
  throw DTypeError(std::string(op) + ": " + std::string(name) +
                   " dtype: expected float32, float64, bfloat16, float16, int32 or int64, got " +
                   dlpack_dtype_name(dtype));
}

void CallArrays::note_framework(const nb::handle& object) {
  if (framework_known_) return;
  framework_known_ = true;
  const nb::handle type = object.type();
  const std::string module = nb::cast<std::string>(nb::getattr(type, "__module__", nb::str("")));
  torch_ = module == "torch";
}

void CallArrays::not_an_array(const nb::handle& object, std::string_view name) const {
  const std::string type = nb::cast<std::string>(nb::getattr(object.type(), "__name__"));
  throw nb::type_error((op_ + ": " + std::string(name) +
                        ": expected an array (NumPy, PyTorch or another DLPack or buffer "
                        "producer), got " +
                        type)
                           .c_str());
}

Device CallArrays::device_of(int device_type, int device_id, std::string_view name) const {
  // A device no backend serves is refused by dispatch, and the API reads no
  // device memory on the host (src/api/validate.h): views go on as they are.
  if (device_type == nb::device::cpu::value || device_type == nb::device::cuda_host::value)
    return Device::cpu();
  if (device_type == nb::device::cuda::value) return Device::cuda(device_id);
  throw Error(op_ + ": " + std::string(name) +
              " device: expected cpu or cuda, got DLPack device type " +
              std::to_string(device_type));
}

TensorView CallArrays::input(const ArrayArg& array, std::string_view name) {
  note_framework(array.object);
  nb::ndarray<nb::ro> converted;
  if (!nb::try_cast(array.object, converted)) not_an_array(array.object, name);
  const DType dtype = dtype_from_dlpack(converted.dtype(), op_, name);
  const Device device = device_of(converted.device_type(), converted.device_id(), name);
  Shape shape(converted.ndim());
  Shape strides(converted.ndim());
  for (std::size_t d = 0; d < converted.ndim(); ++d) {
    shape[d] = static_cast<std::int64_t>(converted.shape(d));
    strides[d] = converted.stride(d);
  }
  TensorView view(converted.data(), dtype, std::move(shape), std::move(strides), device);
  held_inputs_.push_back(std::move(converted));
  return view;
}

std::optional<TensorView> CallArrays::optional_input(const std::optional<ArrayArg>& array,
                                                     std::string_view name) {
  if (!array) return std::nullopt;
  return input(*array, name);
}

MutableTensorView CallArrays::output(const ArrayArg& array, std::string_view name) {
  note_framework(array.object);
  nb::ndarray<> converted;
  if (!nb::try_cast(array.object, converted)) {
    nb::ndarray<nb::ro> readonly;
    if (nb::try_cast(array.object, readonly)) {
      throw Error(op_ + ": " + std::string(name) +
                  ": expected a writable array, got a read-only one");
    }
    not_an_array(array.object, name);
  }
  const DType dtype = dtype_from_dlpack(converted.dtype(), op_, name);
  const Device device = device_of(converted.device_type(), converted.device_id(), name);
  Shape shape(converted.ndim());
  std::int64_t expected_stride = 1;
  for (std::size_t d = converted.ndim(); d-- > 0;) {
    shape[d] = static_cast<std::int64_t>(converted.shape(d));
    if (shape[d] != 1 && converted.stride(d) != expected_stride) {
      throw Error(op_ + ": " + std::string(name) +
                  " strides: expected a C-contiguous array (outputs are written densely), got " +
                  "stride " + std::to_string(converted.stride(d)) + " on dim " + std::to_string(d) +
                  " where " + std::to_string(expected_stride) + " is dense");
    }
    expected_stride *= std::max<std::int64_t>(shape[d], 1);
  }
  MutableTensorView view(converted.data(), dtype, std::move(shape), device);
  held_outputs_.push_back(std::move(converted));
  return view;
}

std::optional<MutableTensorView> CallArrays::optional_output(const std::optional<ArrayArg>& array,
                                                             std::string_view name) {
  if (!array) return std::nullopt;
  return output(*array, name);
}

nb::object CallArrays::result(Tensor&& tensor) {
  if (!tensor.defined()) return nb::none();
  auto* owned = new Tensor(std::move(tensor));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  std::vector<std::size_t> shape(owned->shape().begin(), owned->shape().end());
  const std::size_t zero_dims[1] = {0};
  const std::size_t* shape_data = shape.empty() ? zero_dims : shape.data();
  // An empty tensor may have no storage; DLPack wants a pointer all the same.
  static std::max_align_t empty_storage;
  void* data = owned->data() ? owned->data() : &empty_storage;
  const bool on_cuda = owned->device().type == DeviceType::kCuda;
  if (torch_) {
    return nb::ndarray<nb::pytorch>(data, shape.size(), shape_data, owner, nullptr,
                                    dlpack_of(owned->dtype()),
                                    on_cuda ? nb::device::cuda::value : nb::device::cpu::value,
                                    on_cuda ? owned->device().index : 0)
        .cast();
  }
  if (on_cuda) {
    throw Error(op_ + ": the result is in " + device_name(owned->device()) +
                " memory, which a NumPy array cannot hold: pass torch tensors, or call the "
                "_into form with outputs of your own");
  }
  return nb::ndarray<nb::numpy>(data, shape.size(), shape_data, owner, nullptr,
                                dlpack_of(owned->dtype()))
      .cast();
}

}  // namespace spatialsoftmax::python
