#include "api/validate.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "spatialsoftmax/shapes.h"

namespace spatialsoftmax::api {

void fail(std::string_view op, std::string_view arg, const std::string& what) {
  throw Error(std::string(op) + ": " + std::string(arg) + " " + what);
}

void fail_dtype(std::string_view op, std::string_view arg, std::string_view expected,
                DType actual) {
  throw DTypeError(std::string(op) + ": " + std::string(arg) + " dtype: expected " +
                   std::string(expected) + ", got " + std::string(dtype_name(actual)));
}

void check_enum(std::string_view op, std::string_view arg, int value, int count) {
  if (value < 0 || value >= count) {
    fail(op, arg,
         "= " + std::to_string(value) + " (as int), expected one of the " + std::to_string(count) +
             " enumerators");
  }
}

std::string format_value(double v) {
  std::ostringstream out;
  out.precision(9);
  out << v;
  return out.str();
}

ClassTensor analyze_class_tensor(std::string_view op, std::string_view arg, const TensorView& x,
                                 ClassAxis axis, int min_spatial_rank, bool allow_no_classes) {
  ClassShape shape =
      class_shape(op, arg, x.dtype(), x.shape(), axis, min_spatial_rank, allow_no_classes);
  ClassTensor info;
  info.geom = {shape.batch, shape.classes, shape.pixels, axis == ClassAxis::kLast};
  info.map_shape = std::move(shape.map_shape);
  info.spatial_dims = std::move(shape.spatial_dims);
  return info;
}

void check_dtype(std::string_view op, std::string_view arg, const TensorView& t, DType expected) {
  if (t.dtype() != expected) {
    fail_dtype(op, arg, std::string(dtype_name(expected)) + " (the logits' dtype)", t.dtype());
  }
}

void check_index_dtype(std::string_view op, std::string_view arg, const TensorView& t) {
  if (t.dtype() != DType::kInt32 && t.dtype() != DType::kInt64) {
    fail_dtype(op, arg, "int32 or int64", t.dtype());
  }
}

void check_shape(std::string_view op, std::string_view arg, const TensorView& t,
                 const Shape& expected, std::string_view expected_what) {
  if (t.shape() == expected) return;
  std::string detail;
  if (t.rank() != static_cast<int>(expected.size())) {
    detail = "rank " + std::to_string(t.rank()) + " vs " + std::to_string(expected.size());
  } else {
    for (std::size_t d = 0; d < expected.size(); ++d) {
      if (t.shape()[d] != expected[d]) {
        detail = "dim " + std::to_string(d) + " is " + std::to_string(t.shape()[d]) +
                 ", expected " + std::to_string(expected[d]);
        break;
      }
    }
  }
  fail(op, arg,
       "shape: expected " + shape_string(expected) + " " + std::string(expected_what) + ", got " +
           shape_string(t.shape()) + " (" + detail + ")");
}

void check_host_readable(std::string_view op, std::string_view arg, const TensorView& t) {
  if (t.device() == Device::cpu()) return;
  fail(op, arg,
       "device: expected cpu memory, as its values are read on the host (not yet for device "
       "memory), got " +
           device_name(t.device()));
}

void check_weight_layout(std::string_view op, std::string_view arg, const TensorView& weights,
                         const Shape& expected, std::string_view expected_what, DType dtype) {
  check_shape(op, arg, weights, expected, expected_what);
  check_dtype(op, arg, weights, dtype);
}

void fail_weight(std::string_view op, std::string_view arg, std::int64_t flat_index, double value) {
  fail(op, std::string(arg) + "[flat index " + std::to_string(flat_index) + "]",
       "= " + format_value(value) + ", expected finite and >= 0");
}

double check_weights(std::string_view op, std::string_view arg, const TensorView& weights,
                     const Shape& expected, std::string_view expected_what, DType dtype) {
  check_weight_layout(op, arg, weights, expected, expected_what, dtype);
  check_host_readable(op, arg, weights);
  const std::int64_t n = weights.numel();
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double w = weights.at(i);
    if (!std::isfinite(w) || w < 0) fail_weight(op, arg, i, w);
    sum += w;
  }
  return sum;
}

std::optional<double> check_weights_on(Device device, std::string_view op, std::string_view arg,
                                       const TensorView& weights, const Shape& expected,
                                       std::string_view expected_what, DType dtype) {
  if (device.type == DeviceType::kCpu) {
    return check_weights(op, arg, weights, expected, expected_what, dtype);
  }
  check_weight_layout(op, arg, weights, expected, expected_what, dtype);
  return std::nullopt;
}

Dense::Dense(const TensorView& view) : present_(true) {
  if (view.is_contiguous()) {
    data_ = view.data();
  } else {
    copy_ = Tensor::copy_of(view);
    data_ = copy_.data();
  }
}

double first_element(std::string_view op, std::string_view arg, const TensorView& t) {
  if (!is_floating(t.dtype())) {
    fail_dtype(op, arg, "float32, float64, bfloat16 or float16", t.dtype());
  }
  if (checked_numel(t.shape(), arg) < 1) {
    fail(op, arg, "shape: expected at least one element, got " + shape_string(t.shape()));
  }
  check_host_readable(op, arg, t);
  return t.at(0);
}

void check_scalar_grad(std::string_view op, std::string_view arg, const TensorView& t,
                       DType dtype) {
  check_dtype(op, arg, t, dtype);
  if (checked_numel(t.shape(), arg) != 1) {
    fail(op, arg, "shape: expected a scalar (one element), got " + shape_string(t.shape()));
  }
}

double scalar_grad(std::string_view op, std::string_view arg, const TensorView& t, DType dtype) {
  check_scalar_grad(op, arg, t, dtype);
  check_host_readable(op, arg, t);
  return t.at(0);
}

}  // namespace spatialsoftmax::api
