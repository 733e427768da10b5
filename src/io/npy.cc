// .npy reader and writer. The header is a Python dict literal; we accept the
// exact subset NumPy writes: 'descr', 'fortran_order' and 'shape' keys.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <system_error>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/npy.h"

namespace spatialsoftmax {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = 6;

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw Error("npy file " + path.string() + ": " + what);
}

DType parse_descr(const std::filesystem::path& path, const std::string& descr) {
  if (descr == "<f4") return DType::kFloat32;
  if (descr == "<f8") return DType::kFloat64;
  if (descr == "<i4") return DType::kInt32;
  if (descr == "<i8") return DType::kInt64;
  fail(path, "descr '" + descr + "', expected one of '<f4', '<f8', '<i4', '<i8'");
}

std::string descr_of(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "<f4";
    case DType::kFloat64: return "<f8";
    case DType::kInt32: return "<i4";
    case DType::kInt64: return "<i8";
  }
  return "";
}

Shape parse_shape(const std::filesystem::path& path, const std::string& text) {
  Shape shape;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i == text.size()) break;
    std::size_t end = i;
    while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
    if (end == i || end - i > 18) fail(path, "shape '(" + text + ")' is not a tuple of dims");
    shape.push_back(std::stoll(text.substr(i, end - i)));
    i = end;
  }
  return shape;
}

std::uint32_t read_le(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

Tensor read_npy(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  unsigned char prefix[12] = {};
  in.read(reinterpret_cast<char*>(prefix), 8);
  if (in.gcount() != 8 || std::memcmp(prefix, kMagic, kMagicSize) != 0) {
    fail(path, "missing the \\x93NUMPY magic");
  }
  const int major = prefix[6];
  std::uint32_t header_len;
  if (major == 1) {
    in.read(reinterpret_cast<char*>(prefix + 8), 2);
    header_len = read_le(prefix + 8, 2);
  } else if (major == 2 || major == 3) {
    in.read(reinterpret_cast<char*>(prefix + 8), 4);
    header_len = read_le(prefix + 8, 4);
  } else {
    fail(path, "format version " + std::to_string(major) + ", expected 1, 2 or 3");
  }
  if (!in || header_len > (1u << 20)) fail(path, "truncated or oversized header");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (static_cast<std::uint32_t>(in.gcount()) != header_len) fail(path, "truncated header");

  static const std::regex descr_re(R"('descr'\s*:\s*'([^']*)')");
  static const std::regex fortran_re(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex shape_re(R"('shape'\s*:\s*\(([^)]*)\))");
  std::smatch m;
  if (!std::regex_search(header, m, descr_re)) fail(path, "header has no 'descr'");
  const DType dtype = parse_descr(path, m[1]);
  if (!std::regex_search(header, m, fortran_re)) fail(path, "header has no 'fortran_order'");
  if (m[1] == "True") fail(path, "fortran_order True, expected False (C order)");
  if (!std::regex_search(header, m, shape_re)) fail(path, "header has no 'shape'");
  Shape shape = parse_shape(path, m[1]);

  Tensor t(dtype, shape);
  in.read(static_cast<char*>(t.data()), static_cast<std::streamsize>(t.nbytes()));
  if (static_cast<std::size_t>(in.gcount()) != t.nbytes()) {
    fail(path, "data holds " + std::to_string(in.gcount()) + " bytes, expected " +
                   std::to_string(t.nbytes()) + " for shape " + shape_string(shape));
  }
  return t;
}

void write_npy(const std::filesystem::path& path, const TensorView& tensor) {
  const Tensor dense = Tensor::copy_of(tensor);
  std::string shape = "(";
  for (std::size_t i = 0; i < dense.shape().size(); ++i) {
    shape += std::to_string(dense.shape()[i]) + (dense.shape().size() == 1 ? ",)" : "");
    if (dense.shape().size() != 1) shape += i + 1 < dense.shape().size() ? ", " : ")";
  }
  if (dense.shape().empty()) shape += ")";
  std::string header = "{'descr': '" + descr_of(dense.dtype()) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so magic + version + length + header + '\n' is a multiple of 64.
  const std::size_t unpadded = kMagicSize + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';

  std::random_device rd;
  std::filesystem::path tmp = path;
  tmp += ".tmp" + std::to_string(rd());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, "cannot open " + tmp.string() + " for writing");
    out.write(kMagic, kMagicSize);
    const char version[2] = {1, 0};
    out.write(version, 2);
    const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                  static_cast<unsigned char>(header.size() >> 8)};
    out.write(reinterpret_cast<const char*>(len), 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(dense.data()), static_cast<std::streamsize>(dense.nbytes()));
    out.flush();
    if (!out) {
      out.close();
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      fail(path, "write failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail(path, "cannot rename the temporary file into place");
  }
}

}  // namespace spatialsoftmax
