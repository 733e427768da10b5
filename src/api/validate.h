// Argument checks of the API layer. Every check throws spatialsoftmax::Error
// whose message is "<op>: <argument> ...: expected ..., got ...". They run
// before any kernel, so a throw leaves no partial output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "reference/problems.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/options.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::api {

// A tensor with a class (or channel) axis, analysed.
struct ClassTensor {
  core::Geometry geom;
  Shape map_shape;     // (N, d1..dk): the shape of per-position maps
  Shape spatial_dims;  // d1..dk
};

// class_shape (spatialsoftmax/shapes.h) of a view, as the kernels' geometry
// (allow_no_classes: the spatial softmax has nothing to do at C = 0).
ClassTensor analyze_class_tensor(std::string_view op, std::string_view arg, const TensorView& x,
                                 ClassAxis axis, int min_spatial_rank = 0,
                                 bool allow_no_classes = false);

// Rejects enum values outside the declared enumerators (a cast from an int).
void check_enum(std::string_view op, std::string_view arg, int value, int count);

[[noreturn]] void fail(std::string_view op, std::string_view arg, const std::string& what);
// DTypeError "<op>: <arg> dtype: expected <expected>, got <actual's name>".
[[noreturn]] void fail_dtype(std::string_view op, std::string_view arg, std::string_view expected,
                             DType actual);

void check_dtype(std::string_view op, std::string_view arg, const TensorView& t, DType expected);
void check_index_dtype(std::string_view op, std::string_view arg, const TensorView& t);
// Same shape, naming the first differing dim.
void check_shape(std::string_view op, std::string_view arg, const TensorView& t,
                 const Shape& expected, std::string_view expected_what);
// A view whose values the API reads on the host (weights, scalar upstream
// gradients) must be CPU memory.
void check_host_readable(std::string_view op, std::string_view arg, const TensorView& t);
// Class or pixel weights: shape and dtype (what is checked of device
// weights on the host: their values are checked on the device).
void check_weight_layout(std::string_view op, std::string_view arg, const TensorView& weights,
                         const Shape& expected, std::string_view expected_what, DType dtype);
// The error for a weight that is not finite and >= 0.
[[noreturn]] void fail_weight(std::string_view op, std::string_view arg, std::int64_t flat_index,
                              double value);
// Class or pixel weights in CPU memory: their layout, every value finite and
// >= 0. Returns their sum, in float64 and element order (a mean's denominator).
double check_weights(std::string_view op, std::string_view arg, const TensorView& weights,
                     const Shape& expected, std::string_view expected_what, DType dtype);

// check_weights for weights on the call's `device`; on a device only their
// layout is checked here (the device checks their values), and there is no
// sum.
std::optional<double> check_weights_on(Device device, std::string_view op, std::string_view arg,
                                       const TensorView& weights, const Shape& expected,
                                       std::string_view expected_what, DType dtype);

// A contiguous pointer to a view's data: the view itself when it is dense,
// otherwise a dense copy owned by this object (CPU views only: common_device
// refuses strided views of device memory).
class Dense {
 public:
  Dense() = default;
  explicit Dense(const TensorView& view);
  explicit Dense(const std::optional<TensorView>& view) {
    if (view) *this = Dense(*view);
  }
  template <class T>
  const T* get() const {
    return static_cast<const T*>(data_);
  }
  const void* raw() const { return data_; }
  bool present() const { return data_ != nullptr || present_; }

 private:
  Tensor copy_;
  const void* data_ = nullptr;
  bool present_ = false;
};

// A scalar upstream gradient: a tensor of `dtype` with exactly one element
// (check_scalar_grad); scalar_grad reads it (CPU memory).
void check_scalar_grad(std::string_view op, std::string_view arg, const TensorView& t, DType dtype);
double scalar_grad(std::string_view op, std::string_view arg, const TensorView& t, DType dtype);

// The first element of a float tensor (a scalar upstream gradient).
double first_element(std::string_view op, std::string_view arg, const TensorView& t);

std::string format_value(double v);

// Calls f(T{}) with T the element type of a floating dtype: float,
// double, BFloat16 or Float16.
template <class F>
decltype(auto) visit_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat64:
      return f(double{});
    case DType::kBFloat16:
      return f(BFloat16{});
    case DType::kFloat16:
      return f(Float16{});
    default:
      return f(float{});
  }
}
// The same for the operations without 16-bit kernels (the spatial
// soft-argmax), whose API refuses 16-bit dtypes first.
template <class F>
decltype(auto) visit_float_32_64(DType dtype, F&& f) {
  if (dtype == DType::kFloat64) return f(double{});
  return f(float{});
}

// An element's value as a float64.
template <class T>
double element_value(T v) {
  if constexpr (std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>) {
    return to_float(v);
  } else {
    return static_cast<double>(v);
  }
}

// A value of element type T from a float64 (16-bit types: through float32,
// rounding to nearest even).
template <class T>
T element_from(double v) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    return to_bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, Float16>) {
    return to_float16(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

}  // namespace spatialsoftmax::api
