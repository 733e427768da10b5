// Where a function's inputs are and where its outputs go. Every function has
// an allocating form and an `_into` form writing into the caller's views;
// both validate their inputs once and then place each output here: the
// caller's view, checked (dtype, shape, device, no byte in common with an
// input or another output), or a tensor allocated here. The kernels get a
// dense pointer either way.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::api {

// A named tensor argument, as the caller named it.
struct NamedView {
  std::string_view name;
  const TensorView* view;  // null: absent (an optional argument)
};

// The device every input is on; an Error naming the first input on another.
Device common_device(std::string_view op, std::initializer_list<NamedView> inputs);

// The memory a call reads and has been given to write: the inputs' byte
// ranges, then each output's as it is placed.
class Footprint {
 public:
  // Outputs allocated on a device come from its backend, on the context's
  // stream.
  Footprint(std::string_view op, Device device, std::initializer_list<NamedView> inputs,
            const ExecutionContext& context);

  // The output `arg`: `given` if not null, after checking that it has
  // `dtype` and `shape` (described as `shape_what` in messages) on the
  // call's device and shares no byte with an input or an earlier output;
  // else a new tensor on the call's device, stored in *allocated
  // (zero-filled if `zeroed`).
  // Returns where the kernel writes.
  void* place(std::string_view arg, const MutableTensorView* given, DType dtype, const Shape& shape,
              std::string_view shape_what, Tensor* allocated, bool zeroed = false);
  // As place, for an output that may be exactly the input `input_name` (dX
  // written over the logits): that input's range is then not checked.
  void* place_over(std::string_view arg, const MutableTensorView* given,
                   std::string_view input_name, DType dtype, const Shape& shape,
                   std::string_view shape_what, Tensor* allocated);

  Device device() const { return device_; }

 private:
  struct Range {
    std::string name;
    const std::byte* begin;
    const std::byte* end;
  };
  void* place_impl(std::string_view arg, const MutableTensorView* given, std::string_view may_alias,
                   DType dtype, const Shape& shape, std::string_view shape_what, Tensor* allocated,
                   bool zeroed);

  std::string_view op_;
  Device device_;
  ExecutionContext context_;
  std::vector<Range> ranges_;
};

// The optional output view of a struct of views, as a pointer for place().
inline const MutableTensorView* given(const std::optional<MutableTensorView>& view) {
  return view ? &*view : nullptr;
}

}  // namespace spatialsoftmax::api
