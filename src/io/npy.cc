// .npy reader and writer (the format: numpy/lib/format.py's docstring).
// Every size a file declares is checked against the bytes it holds before
// anything is allocated, so a crafted header costs neither memory nor time.
#include "spatialsoftmax/npy.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <string>

#include "io/npy_format.h"
#include "io/staged_file.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = 6;

[[noreturn]] void fail(std::string_view source, const std::string& what) {
  throw Error("npy file " + std::string(source) + ": " + what);
}

DType parse_descr(std::string_view source, const std::string& descr) {
  if (descr == "<f4") return DType::kFloat32;
  if (descr == "<f8") return DType::kFloat64;
  if (descr == "<f2") return DType::kFloat16;
  if (descr == "<i4") return DType::kInt32;
  if (descr == "<i8") return DType::kInt64;
  std::string shown = descr.substr(0, 32) + (descr.size() > 32 ? "..." : "");
  fail(source, "header key 'descr': expected one of '<f4', '<f8', '<f2', '<i4', '<i8', got '" +
                   shown + "'");
}

std::string descr_of(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "<f4";
    case DType::kFloat64:
      return "<f8";
    case DType::kInt32:
      return "<i4";
    case DType::kInt64:
      return "<i8";
    case DType::kFloat16:
      return "<f2";
    case DType::kBFloat16:
      break;
  }
  throw Error(std::string("npy: ") + std::string(dtype_name(dtype)) +
              " has no .npy type (NumPy has no bfloat16): convert to float32 first");
}

std::uint32_t read_le(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// NumPy's rule for what an array may declare: the product of its non-zero
// dims times the item size fits a signed 64-bit count ("array is too big"),
// even when another dim is 0.
std::int64_t checked_data_bytes(std::string_view source, const Shape& shape, DType dtype) {
  std::int64_t bytes = static_cast<std::int64_t>(dtype_size(dtype));
  bool empty = false;
  for (std::int64_t d : shape) {
    if (d == 0) {
      empty = true;
    } else if (__builtin_mul_overflow(bytes, d, &bytes)) {
      fail(source, "header key 'shape': " + shape_string(shape) + " of " +
                       std::string(dtype_name(dtype)) +
                       " is too big: its byte count overflows int64 (NumPy refuses it too)");
    }
  }
  return empty ? 0 : bytes;
}

// The bytes left in `in` after its read position, or -1 if it cannot seek.
std::int64_t remaining_bytes(std::istream& in) {
  const std::istream::pos_type here = in.tellg();
  if (here == std::istream::pos_type(-1)) return -1;
  in.seekg(0, std::ios::end);
  const std::istream::pos_type end = in.tellg();
  in.seekg(here);
  if (end == std::istream::pos_type(-1) || !in) {
    in.clear();
    in.seekg(here);
    return -1;
  }
  return static_cast<std::int64_t>(end - here);
}

// Fortran-ordered data: read as the C-order array of the reversed shape,
// then copied into C order.
Tensor to_c_order(const Tensor& reversed, const Shape& shape) {
  Shape strides(shape.size());
  std::int64_t stride = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    strides[i] = stride;
    stride *= std::max<std::int64_t>(shape[i], 1);
  }
  return Tensor::copy_of(TensorView(reversed.data(), reversed.dtype(), shape, strides));
}

}  // namespace

Tensor read_npy(std::istream& in, std::string_view source) {
  unsigned char prefix[12] = {};
  in.read(reinterpret_cast<char*>(prefix), 8);
  if (in.gcount() != 8 || std::memcmp(prefix, kMagic, kMagicSize) != 0) {
    fail(source, "missing the \\x93NUMPY magic");
  }
  const int major = prefix[6];
  const int length_bytes = major == 1 ? 2 : 4;
  if (major < 1 || major > 3 || prefix[7] != 0) {
    fail(source, "format version " + std::to_string(major) + "." + std::to_string(prefix[7]) +
                     ", expected 1.0, 2.0 or 3.0");
  }
  in.read(reinterpret_cast<char*>(prefix + 8), length_bytes);
  if (in.gcount() != length_bytes) fail(source, "truncated before the header length");
  const std::uint32_t header_len = read_le(prefix + 8, length_bytes);
  if (header_len > io::kMaxNpyHeaderBytes) {
    fail(source, "header of " + std::to_string(header_len) + " bytes, expected at most " +
                     std::to_string(io::kMaxNpyHeaderBytes));
  }
  const std::int64_t after_length = remaining_bytes(in);
  if (after_length >= 0 && after_length < header_len) {
    fail(source, "header of " + std::to_string(header_len) + " bytes, but the file holds " +
                     std::to_string(after_length) + " more");
  }
  std::string text(header_len, '\0');
  in.read(text.data(), header_len);
  if (static_cast<std::uint32_t>(in.gcount()) != header_len) fail(source, "truncated header");

  const io::NpyHeader header = io::parse_npy_header(text, source);
  const DType dtype = parse_descr(source, header.descr);
  const std::int64_t data_bytes = checked_data_bytes(source, header.shape, dtype);
  const std::int64_t available = remaining_bytes(in);
  const auto too_short = [&](std::int64_t held) {
    fail(source, "data holds " + std::to_string(held) + " bytes, expected " +
                     std::to_string(data_bytes) + " for shape " + shape_string(header.shape) +
                     " of " + std::string(dtype_name(dtype)));
  };
  if (available >= 0 && available < data_bytes) too_short(available);

  Shape stored = header.shape;
  if (header.fortran_order) stored.assign(header.shape.rbegin(), header.shape.rend());
  Tensor t = Tensor::uninitialized(dtype, stored);
  in.read(static_cast<char*>(t.data()), static_cast<std::streamsize>(data_bytes));
  if (in.gcount() != data_bytes) too_short(in.gcount());
  if (header.fortran_order) return to_c_order(t, header.shape);
  return t;
}

Tensor read_npy(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path.string(), "is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), std::string("cannot open for reading: ") + std::strerror(errno));
  return read_npy(in, path.string());
}

namespace io {

StagedFile stage_npy(const std::filesystem::path& path, const TensorView& tensor) {
  const std::int64_t numel = checked_numel(tensor.shape(), "write_npy: tensor");
  std::string header = "{'descr': '" + descr_of(tensor.dtype()) +
                       "', 'fortran_order': False, 'shape': " + shape_string(tensor.shape()) +
                       ", }";
  // Pad with spaces so that magic + version + length + header + '\n' is a
  // multiple of 64 (NumPy aligns the data so); version 2.0's length field
  // is 4 bytes where 1.0's 2 bytes wrap past 65535.
  const auto padded = [&](std::size_t length_bytes) {
    const std::size_t unpadded = kMagicSize + 2 + length_bytes + header.size() + 1;
    return header.size() + (64 - unpadded % 64) % 64 + 1;
  };
  const bool version2 = padded(2) > 0xffff;
  const std::size_t length_bytes = version2 ? 4 : 2;
  const std::size_t header_len = padded(length_bytes);
  if (header_len > kMaxNpyHeaderBytes) {
    throw Error("write_npy: " + path.string() + ": header of " + std::to_string(header_len) +
                " bytes for a rank-" + std::to_string(tensor.rank()) +
                " tensor, more than read_npy's limit of " + std::to_string(kMaxNpyHeaderBytes));
  }
  header.resize(header_len - 1, ' ');
  header += '\n';

  std::string prefix(kMagic, kMagicSize);
  prefix += static_cast<char>(version2 ? 2 : 1);
  prefix += '\0';
  for (std::size_t i = 0; i < length_bytes; ++i) {
    prefix += static_cast<char>((header_len >> (8 * i)) & 0xff);
  }

  StagedFile file(path);
  file.write(prefix + header);
  const std::size_t bytes = static_cast<std::size_t>(numel) * dtype_size(tensor.dtype());
  if (tensor.is_contiguous()) {
    if (bytes > 0) file.write(tensor.data(), bytes);
  } else {
    const Tensor dense = Tensor::copy_of(tensor);
    file.write(dense.data(), bytes);
  }
  file.sync();
  return file;
}

}  // namespace io

void write_npy(const std::filesystem::path& path, const TensorView& tensor) {
  io::stage_npy(path, tensor).commit();
}

}  // namespace spatialsoftmax
