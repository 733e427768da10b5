#include "spatialsoftmax/tensor.h"

#include <sys/mman.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>

#include "spatialsoftmax/error.h"

namespace spatialsoftmax {

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kFloat16:
      return "float16";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kBFloat16:
    case DType::kFloat16:
      return 2;
  }
  return 0;
}

bool is_floating(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || is_16_bit(dtype);
}
bool is_16_bit(DType dtype) { return dtype == DType::kBFloat16 || dtype == DType::kFloat16; }

float to_float(BFloat16 v) { return std::bit_cast<float>(std::uint32_t{v.bits} << 16); }

float to_float(Float16 v) {
  const std::uint32_t sign = std::uint32_t{v.bits & 0x8000u} << 16;
  const std::uint32_t exponent = (v.bits >> 10) & 0x1Fu;
  const std::uint32_t mantissa = v.bits & 0x3FFu;
  if (exponent == 0x1F) {  // a NaN comes back quiet, as the F16C instruction gives it
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa != 0 ? 0x400000u : 0u) |
                                mantissa << 13);
  }
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    return std::bit_cast<float>(
        sign | std::bit_cast<std::uint32_t>(static_cast<float>(mantissa) * 0x1p-24f));
  }
  return std::bit_cast<float>(sign | (exponent + 112) << 23 | mantissa << 13);
}

BFloat16 to_bfloat16(float v) {
  const auto bits = std::bit_cast<std::uint32_t>(v);
  if (v != v) return {static_cast<std::uint16_t>(bits >> 16 | 0x40u)};
  // Adding 0x7FFF plus the kept part's lowest bit rounds half to even.
  return {static_cast<std::uint16_t>((bits + 0x7FFFu + (bits >> 16 & 1u)) >> 16)};
}

Float16 to_float16(float v) {
  const auto bits = std::bit_cast<std::uint32_t>(v);
  const auto sign = static_cast<std::uint16_t>(bits >> 16 & 0x8000u);
  std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) {
    return {static_cast<std::uint16_t>(sign | 0x7E00u | (magnitude >> 13 & 0x3FFu))};
  }
  // From 65520 (halfway between the largest half, 65504, and 2^16) up.
  if (magnitude >= 0x477FF000u) return {static_cast<std::uint16_t>(sign | 0x7C00u)};
  if (magnitude < 0x38800000u) {
    // Below 2^-14: a subnormal half, a multiple of 2^-24. In [0.5, 1) a
    // float's step is 2^-24, so the addition rounds it (to nearest even).
    const float rounded = std::bit_cast<float>(magnitude) + 0.5f;
    return {
        static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(rounded) - 0x3F000000u))};
  }
  // Rebias the exponent (127 -> 15) and round the 13 dropped bits half to even.
  magnitude += 0xC8000FFFu + (magnitude >> 13 & 1u);
  return {static_cast<std::uint16_t>(sign | magnitude >> 13)};
}

std::int64_t checked_numel(std::span<const std::int64_t> shape, std::string_view what) {
  std::int64_t n = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      std::ostringstream msg;
      msg << what << ": dim " << i << " = " << shape[i] << ", expected >= 0 (shape "
          << shape_string(shape) << ")";
      throw Error(msg.str());
    }
  }
  // The product of the non-zero dims must fit too, as NumPy requires even
  // of an empty array: every product of dims taken later (pixel counts,
  // strides, contiguity checks) is then bounded by it.
  bool empty = false;
  for (std::int64_t d : shape) {
    if (d == 0) {
      empty = true;
    } else if (__builtin_mul_overflow(n, d, &n)) {
      throw Error(std::string(what) + ": element count of shape " + shape_string(shape) +
                  " overflows int64 (counting only its non-zero dims), expected at most 2^63-1");
    }
  }
  return empty ? 0 : n;
}

Shape contiguous_strides(std::span<const std::int64_t> shape) {
  // Saturates instead of overflowing: such a shape is rejected by
  // checked_numel before any stride is used, and a view must be constructible
  // first so that the error can name the argument.
  Shape strides(shape.size());
  std::int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    if (__builtin_mul_overflow(s, std::max<std::int64_t>(shape[i], 1), &s)) {
      s = std::numeric_limits<std::int64_t>::max();
    }
  }
  return strides;
}

std::string shape_string(std::span<const std::int64_t> shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

std::string device_name(const Device& device) {
  switch (device.type) {
    case DeviceType::kCpu:
      return "cpu";
    case DeviceType::kCuda:
      return "cuda:" + std::to_string(device.index);
  }
  return "device type " + std::to_string(static_cast<int>(device.type));
}

TensorView::TensorView(const void* data, DType dtype, Shape shape, Device device)
    : data_(data),
      dtype_(dtype),
      shape_(std::move(shape)),
      strides_(contiguous_strides(shape_)),
      device_(device) {}

TensorView::TensorView(const void* data, DType dtype, Shape shape, Shape strides, Device device)
    : data_(data),
      dtype_(dtype),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      device_(device) {
  if (strides_.size() != shape_.size()) {
    throw Error("TensorView: strides has " + std::to_string(strides_.size()) +
                " entries, expected one per dim (" + std::to_string(shape_.size()) + ")");
  }
}

std::int64_t TensorView::numel() const { return checked_numel(shape_, "tensor"); }

bool TensorView::is_contiguous() const {
  // Saturating products, as in contiguous_strides: the shape may not have
  // been checked yet. An empty view has nothing to lay out.
  std::int64_t expected = 1;
  for (std::size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 0) return true;
  }
  for (std::size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    if (__builtin_mul_overflow(expected, shape_[i], &expected)) return false;
  }
  return true;
}

std::pair<const std::byte*, const std::byte*> TensorView::byte_range() const {
  const auto* base = static_cast<const std::byte*>(data_);
  for (std::int64_t d : shape_) {
    if (d <= 0) return {base, base};
  }
  // Element offsets of the lowest and highest element; saturated, since a
  // view may not have been checked yet (a range that saturates covers
  // everything, so it overlaps whatever it is compared with).
  std::int64_t low = 0, high = 0;
  bool saturated = false;
  for (std::size_t i = 0; i < shape_.size(); ++i) {
    std::int64_t extent = 0;
    saturated |= __builtin_mul_overflow(shape_[i] - 1, strides_[i], &extent);
    saturated |= __builtin_add_overflow(extent < 0 ? low : high, extent, extent < 0 ? &low : &high);
  }
  const auto size = static_cast<std::int64_t>(dtype_size(dtype_));
  const auto address = reinterpret_cast<std::uintptr_t>(base);
  std::int64_t low_bytes = 0, high_bytes = 0;
  saturated |= __builtin_mul_overflow(low, size, &low_bytes);
  saturated |= __builtin_mul_overflow(high + 1, size, &high_bytes);
  const std::uintptr_t below =
      std::uintptr_t{0} - static_cast<std::uintptr_t>(low_bytes);  // low <= 0
  const auto above = static_cast<std::uintptr_t>(high_bytes);
  if (saturated || below > address || above > UINTPTR_MAX - address) {
    return {nullptr, reinterpret_cast<const std::byte*>(UINTPTR_MAX)};
  }
  return {reinterpret_cast<const std::byte*>(address - below),
          reinterpret_cast<const std::byte*>(address + above)};
}

MutableTensorView::MutableTensorView(void* data, DType dtype, Shape shape, Device device)
    : data_(data), dtype_(dtype), shape_(std::move(shape)), device_(device) {}

std::int64_t MutableTensorView::numel() const { return checked_numel(shape_, "tensor"); }

std::int64_t TensorView::offset_of(std::int64_t flat) const {
  std::int64_t offset = 0;
  for (std::size_t i = shape_.size(); i-- > 0;) {
    const std::int64_t d = shape_[i];
    offset += (flat % d) * strides_[i];
    flat /= d;
  }
  return offset;
}

namespace {

// Host reads and copies of device memory would fault: every host access
// path checks first.
void require_host(const Device& device, const char* what) {
  if (device != Device::cpu()) {
    throw Error(std::string(what) + ": the data is in " + device_name(device) +
                " memory, not readable on the host (copy_to(view, Device::cpu()) copies it)");
  }
}

}  // namespace

double TensorView::at(std::int64_t flat) const {
  require_host(device_, "TensorView::at");
  const std::int64_t o = offset_of(flat);
  switch (dtype_) {
    case DType::kFloat32:
      return static_cast<const float*>(data_)[o];
    case DType::kFloat64:
      return static_cast<const double*>(data_)[o];
    case DType::kInt32:
      return static_cast<const std::int32_t*>(data_)[o];
    case DType::kInt64:
      return static_cast<double>(static_cast<const std::int64_t*>(data_)[o]);
    case DType::kBFloat16:
      return to_float(static_cast<const BFloat16*>(data_)[o]);
    case DType::kFloat16:
      return to_float(static_cast<const Float16*>(data_)[o]);
  }
  return 0;
}

namespace {

// Blocks of 2 MiB and more are kept after use and handed out again for the
// same size, up to a total of kCacheLimit: a fresh block costs its first-touch
// page faults and the kernel zeroing each page, as much as a pass over the
// data, every time a large output is allocated.
constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::size_t kCacheLimit = std::size_t{4} << 30;

struct BlockCache {
  std::mutex mutex;
  std::multimap<std::size_t, void*> free_blocks;
  std::size_t cached_bytes = 0;

  ~BlockCache() {
    for (auto& [bytes, p] : free_blocks) std::free(p);
  }
  void* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = free_blocks.find(bytes);
    if (it == free_blocks.end()) return nullptr;
    void* p = it->second;
    free_blocks.erase(it);
    cached_bytes -= bytes;
    return p;
  }
  bool keep(void* p, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    if (cached_bytes + bytes > kCacheLimit) return false;
    free_blocks.emplace(bytes, p);
    cached_bytes += bytes;
    return true;
  }
};

BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache;  // outlives static tensors
  return *cache;
}

}  // namespace

void Tensor::AlignedFree::operator()(void* p) const {
  if (release) return release(p);
  if (bytes >= kHugePage && block_cache().keep(p, bytes)) return;
  std::free(p);
}

Tensor::Tensor(DType dtype, Shape shape) : Tensor(dtype, std::move(shape), Uninitialized{}) {
  std::memset(storage_.get(), 0, std::max<std::size_t>(nbytes(), 1));
}

Tensor::Tensor(DType dtype, Shape shape, Uninitialized)
    : dtype_(dtype),
      shape_(std::move(shape)),
      numel_(checked_numel(shape_, "tensor")),
      defined_(true) {
  const std::size_t elem = dtype_size(dtype_);
  if (static_cast<std::uint64_t>(numel_) > std::numeric_limits<std::size_t>::max() / elem / 2) {
    throw Error("tensor: byte size of shape " + shape_string(shape_) + " overflows");
  }
  // Large buffers are aligned to 2 MiB, offered transparent huge pages and
  // reused (see BlockCache).
  const std::size_t align = nbytes() >= kHugePage ? kHugePage : 64;
  std::size_t bytes = std::max<std::size_t>(nbytes(), 1);
  bytes = (bytes + align - 1) / align * align;
  void* p = align == kHugePage ? block_cache().take(bytes) : nullptr;
  if (!p) {
    p = std::aligned_alloc(align, bytes);
    if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (align == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  }
  storage_ = std::unique_ptr<void, AlignedFree>(p, AlignedFree{bytes, nullptr});
}

Tensor Tensor::adopt(void* data, DType dtype, Shape shape, Device device, void (*release)(void*)) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = checked_numel(t.shape_, "tensor");
  t.defined_ = true;
  t.device_ = device;
  t.storage_ = std::unique_ptr<void, AlignedFree>(data, AlignedFree{t.nbytes(), release});
  return t;
}

Tensor Tensor::uninitialized(DType dtype, Shape shape) {
  return Tensor(dtype, std::move(shape), Uninitialized{});
}

Tensor Tensor::copy_of(const TensorView& view) {
  require_host(view.device(), "Tensor::copy_of");
  Tensor t = uninitialized(view.dtype(), view.shape());
  const std::size_t elem = dtype_size(view.dtype());
  if (view.is_contiguous()) {
    if (t.numel_ > 0) std::memcpy(t.data(), view.data(), t.nbytes());
    return t;
  }
  auto* dst = static_cast<std::byte*>(t.data());
  const auto* src = static_cast<const std::byte*>(view.data());
  for (std::int64_t i = 0; i < t.numel_; ++i) {
    std::memcpy(dst + static_cast<std::size_t>(i) * elem,
                src + view.offset_of(i) * static_cast<std::int64_t>(elem), elem);
  }
  return t;
}

Tensor Tensor::scalar(DType dtype, double value) {
  Tensor t(dtype, {});
  switch (dtype) {
    case DType::kFloat32:
      *t.data_as<float>() = static_cast<float>(value);
      break;
    case DType::kFloat64:
      *t.data_as<double>() = value;
      break;
    case DType::kInt32:
      *t.data_as<std::int32_t>() = static_cast<std::int32_t>(value);
      break;
    case DType::kInt64:
      *t.data_as<std::int64_t>() = static_cast<std::int64_t>(value);
      break;
    case DType::kBFloat16:
      *t.data_as<BFloat16>() = to_bfloat16(static_cast<float>(value));
      break;
    case DType::kFloat16:
      *t.data_as<Float16>() = to_float16(static_cast<float>(value));
      break;
  }
  return t;
}

Tensor Tensor::to(DType dtype) const {
  require_host(device_, "Tensor::to");
  if (dtype == dtype_) return copy_of(view());
  Tensor t = uninitialized(dtype, shape_);
  const TensorView source = view();
  for (std::int64_t i = 0; i < numel_; ++i) {
    const double v = source.at(i);
    switch (dtype) {
      case DType::kFloat32:
        t.data_as<float>()[i] = static_cast<float>(v);
        break;
      case DType::kFloat64:
        t.data_as<double>()[i] = v;
        break;
      case DType::kInt32:
        t.data_as<std::int32_t>()[i] = static_cast<std::int32_t>(v);
        break;
      case DType::kInt64:
        t.data_as<std::int64_t>()[i] = static_cast<std::int64_t>(v);
        break;
      case DType::kBFloat16:
        t.data_as<BFloat16>()[i] = to_bfloat16(static_cast<float>(v));
        break;
      case DType::kFloat16:
        t.data_as<Float16>()[i] = to_float16(static_cast<float>(v));
        break;
    }
  }
  return t;
}

void Tensor::reshape(Shape shape) {
  if (checked_numel(shape, "Tensor::reshape") != numel_) {
    throw Error("Tensor::reshape: shape " + shape_string(shape) + " has " +
                std::to_string(checked_numel(shape, "Tensor::reshape")) + " elements, expected " +
                std::to_string(numel_) + " (the shape " + shape_string(shape_) + ")");
  }
  shape_ = std::move(shape);
}

}  // namespace spatialsoftmax
