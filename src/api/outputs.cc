#include "api/outputs.h"

#include "api/device_errors.h"
#include "api/validate.h"
#include "dispatch/backend.h"

namespace spatialsoftmax::api {

Device common_device(std::string_view op, std::initializer_list<NamedView> inputs) {
  const NamedView* first = nullptr;
  for (const NamedView& input : inputs) {
    if (!input.view) continue;
    if (!first) {
      first = &input;
    } else if (input.view->device() != first->view->device()) {
      fail(op, input.name,
           "device: expected " + device_name(first->view->device()) + " (the device of " +
               std::string(first->name) + "), got " + device_name(input.view->device()));
    }
  }
  const Device device = first ? first->view->device() : Device::cpu();
  // An error a device check recorded for an earlier call, if its kernel has
  // finished by now (device_errors.h).
  if (device.type != DeviceType::kCpu) raise_device_error({}, false);
  // Strided inputs are copied densely on the host (Dense): not device memory.
  if (device != Device::cpu()) {
    for (const NamedView& input : inputs) {
      if (input.view && !input.view->is_contiguous()) {
        fail(op, input.name,
             "strides: expected a dense (C-contiguous) view on " + device_name(device) +
                 ", got strides " + shape_string(input.view->strides()) + " for shape " +
                 shape_string(input.view->shape()));
      }
    }
  }
  return device;
}

Footprint::Footprint(std::string_view op, Device device, std::initializer_list<NamedView> inputs,
                     const ExecutionContext& context)
    : op_(op), device_(device), context_(context) {
  for (const NamedView& input : inputs) {
    if (!input.view) continue;
    const auto [begin, end] = input.view->byte_range();
    if (begin != end) ranges_.push_back({std::string(input.name), begin, end});
  }
}

void* Footprint::place(std::string_view arg, const MutableTensorView* given, DType dtype,
                       const Shape& shape, std::string_view shape_what, Tensor* allocated,
                       bool zeroed) {
  return place_impl(arg, given, {}, dtype, shape, shape_what, allocated, zeroed);
}

void* Footprint::place_over(std::string_view arg, const MutableTensorView* given,
                            std::string_view input_name, DType dtype, const Shape& shape,
                            std::string_view shape_what, Tensor* allocated) {
  return place_impl(arg, given, input_name, dtype, shape, shape_what, allocated, false);
}

void* Footprint::place_impl(std::string_view arg, const MutableTensorView* given,
                            std::string_view may_alias, DType dtype, const Shape& shape,
                            std::string_view shape_what, Tensor* allocated, bool zeroed) {
  if (!given) {
    if (device_ != Device::cpu()) {
      *allocated =
          dispatch::memory_backend(device_, op_).allocate(dtype, shape, zeroed, device_, context_);
    } else {
      *allocated = zeroed ? Tensor(dtype, shape) : Tensor::uninitialized(dtype, shape);
    }
    return allocated->data();
  }
  const TensorView view = given->view();
  check_dtype(op_, arg, view, dtype);
  check_shape(op_, arg, view, shape, shape_what);
  if (given->device() != device_) {
    fail(op_, arg,
         "device: expected " + device_name(device_) + " (the inputs' device), got " +
             device_name(given->device()));
  }
  const auto [begin, end] = view.byte_range();
  if (begin == end) return given->data();
  if (!given->data())
    fail(op_, arg,
         "data: expected memory for " + std::to_string(view.numel()) + " elements, got null");
  for (const Range& r : ranges_) {
    if (r.name == may_alias && r.begin == begin && r.end == end) continue;
    if (begin < r.end && r.begin < end) {
      fail(op_, arg, "memory: expected bytes apart from " + r.name + ", got an overlap with it");
    }
  }
  ranges_.push_back({std::string(arg), begin, end});
  return given->data();
}

}  // namespace spatialsoftmax::api
