// Tensor views (non-owning) and tensors (owning) with plain C++ types only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spatialsoftmax/device.h"

namespace spatialsoftmax {

// The spatial rank k of the library's (N, C, d1..dk) tensors is at most
// this: the one limit that the API, the operators' shape inference and the
// kernels' per-axis arrays all use.
inline constexpr int kMaxSpatialRank = 8;

// bfloat16 and float16 are storage types: the kernels compute in float32
// and sum losses in float64, reading and writing the 16-bit values.
enum class DType { kFloat32, kFloat64, kInt32, kInt64, kBFloat16, kFloat16 };

std::string_view dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);
// float32, float64, bfloat16 or float16.
bool is_floating(DType dtype);
// bfloat16 or float16.
bool is_16_bit(DType dtype);

// The 16-bit floating types' bits. Conversions from float round to nearest,
// ties to even (as PyTorch, NumPy and the hardware instructions do); a NaN
// stays a NaN (quiet), an overflow becomes an infinity. Widening is exact.
struct BFloat16 {
  std::uint16_t bits = 0;
};
struct Float16 {
  std::uint16_t bits = 0;
};
float to_float(BFloat16 v);
float to_float(Float16 v);
BFloat16 to_bfloat16(float v);
Float16 to_float16(float v);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kFloat32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::kFloat64;
}
template <>
constexpr DType dtype_of<BFloat16>() {
  return DType::kBFloat16;
}
template <>
constexpr DType dtype_of<Float16>() {
  return DType::kFloat16;
}
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::kInt32;
}
template <>
constexpr DType dtype_of<std::int64_t>() {
  return DType::kInt64;
}

using Shape = std::vector<std::int64_t>;

// Number of elements of `shape`; throws Error if a dim is negative or the
// product overflows int64. `what` names the tensor in the message.
std::int64_t checked_numel(std::span<const std::int64_t> shape, std::string_view what);
// Row-major (C order) strides, in elements.
Shape contiguous_strides(std::span<const std::int64_t> shape);
std::string shape_string(std::span<const std::int64_t> shape);

// A read-only, non-owning view: data pointer, dtype, shape, strides in
// elements (any strides, including negative or zero) and the device the
// memory is on (the CPU unless said otherwise). The caller keeps the memory
// alive while the view is in use. Functions never write through it.
class TensorView {
 public:
  TensorView() = default;
  // Dense C-order view.
  TensorView(const void* data, DType dtype, Shape shape, Device device = Device::cpu());
  TensorView(const void* data, DType dtype, Shape shape, Shape strides,
             Device device = Device::cpu());

  template <class T>
  static TensorView of(const T* data, Shape shape) {
    return TensorView(data, dtype_of<T>(), std::move(shape));
  }
  template <class T>
  static TensorView of(std::span<const T> data, Shape shape) {
    return TensorView(data.data(), dtype_of<T>(), std::move(shape));
  }

  const void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  Device device() const { return device_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  std::int64_t dim(int i) const { return shape_.at(static_cast<std::size_t>(i)); }
  std::int64_t numel() const;
  bool is_contiguous() const;
  // The bytes from the lowest to one past the highest element the view
  // reaches ({data, data} if it has no element): what an output must not
  // overlap.
  std::pair<const std::byte*, const std::byte*> byte_range() const;

  // Reads element `flat` (C-order index over the shape) as double; for tests
  // and diagnostics, not for hot loops, and for CPU memory only.
  double at(std::int64_t flat) const;
  std::int64_t offset_of(std::int64_t flat) const;

 private:
  const void* data_ = nullptr;
  DType dtype_ = DType::kFloat32;
  Shape shape_;
  Shape strides_;
  Device device_;
};

// A writable, non-owning, dense C-order view: where a function writes an
// output the caller allocated (a framework's allocator, device memory). The
// functions' `_into` forms check its dtype, shape and device, and that it
// overlaps neither an input nor another output.
class MutableTensorView {
 public:
  MutableTensorView() = default;
  MutableTensorView(void* data, DType dtype, Shape shape, Device device = Device::cpu());

  template <class T>
  static MutableTensorView of(T* data, Shape shape) {
    return MutableTensorView(data, dtype_of<T>(), std::move(shape));
  }

  void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  Device device() const { return device_; }
  std::int64_t numel() const;
  TensorView view() const { return TensorView(data_, dtype_, shape_, device_); }

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kFloat32;
  Shape shape_;
  Device device_;
};

// An owning, dense, C-order tensor. CPU storage is 64-byte aligned so that
// SIMD kernels can use aligned loads on the first element. A tensor may also
// own device memory (adopt): the functions' allocating forms return such
// tensors for device inputs, and copy_to (device.h) moves data between
// devices; its elements are not readable on the host (at, copy_of and to
// refuse it).
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // zero-initialised
  // Contents unspecified: for outputs that are written in full.
  static Tensor uninitialized(DType dtype, Shape shape);
  // Takes ownership of `data`, dense memory of `shape` on `device`, which
  // `release(data)` frees when the tensor is destroyed.
  static Tensor adopt(void* data, DType dtype, Shape shape, Device device, void (*release)(void*));

  // Copies any view (strided or not) into a new dense tensor.
  static Tensor copy_of(const TensorView& view);
  template <class T>
  static Tensor from(std::span<const T> values, Shape shape) {
    return copy_of(TensorView::of(values, std::move(shape)));
  }
  static Tensor scalar(DType dtype, double value);

  // False for a default-constructed tensor (an output that was not asked for).
  bool defined() const { return defined_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  std::int64_t numel() const { return numel_; }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }

  void* data() { return storage_.get(); }
  const void* data() const { return storage_.get(); }
  template <class T>
  T* data_as() {
    return static_cast<T*>(data());
  }
  template <class T>
  const T* data_as() const {
    return static_cast<const T*>(data());
  }

  TensorView view() const { return TensorView(data(), dtype_, shape_, device_); }
  operator TensorView() const { return view(); }  // NOLINT: views are cheap
  MutableTensorView mutable_view() { return MutableTensorView(data(), dtype_, shape_, device_); }
  Device device() const { return device_; }
  double at(std::int64_t flat) const { return view().at(flat); }
  // Returns a copy converted to `dtype` (float <-> double, int32 <-> int64).
  Tensor to(DType dtype) const;
  // Gives the same elements a new shape with the same element count (throws
  // Error otherwise); nothing is copied.
  void reshape(Shape shape);

 private:
  // Returns the storage to the allocator; large blocks are kept for reuse
  // (src/base/tensor.cc).
  struct AlignedFree {
    std::size_t bytes;       // no initializer: it would keep this nested type from
                             // being default-constructible inside Tensor
    void (*release)(void*);  // adopted memory's release; null: CPU storage
    void operator()(void* p) const;
  };
  struct Uninitialized {};
  Tensor(DType dtype, Shape shape, Uninitialized);

  DType dtype_ = DType::kFloat32;
  Shape shape_;
  std::int64_t numel_ = 0;
  bool defined_ = false;
  Device device_;
  std::unique_ptr<void, AlignedFree> storage_;
};

}  // namespace spatialsoftmax
