// The header of a .npy file: a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// NumPy reads it with ast.literal_eval and then requires exactly these three
// keys. parse_npy_header accepts the same literals NumPy reads for them:
// single- or double-quoted strings without escapes, True/False, tuples of
// non-negative decimal integers (with Python's rules: no leading zeros,
// '_' between digits, a one-element tuple needs its comma), whitespace
// between tokens, an optional trailing comma, and a repeated key keeping its
// last value, as in a Python dict. Anything else is an error naming the
// source and the key.
//
// The scanner is a loop over the characters, without recursion or regular
// expressions, so a header of any length costs linear time and constant
// stack.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "io/staged_file.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::io {

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// The largest header read or written. NumPy itself reads at most 10000 bytes
// unless told otherwise (np.load's max_header_size); this leaves room for
// tensors of many thousands of dims while bounding what a crafted file can
// make us read before its data.
inline constexpr std::size_t kMaxNpyHeaderBytes = std::size_t{1} << 20;

// `source` names the file in errors.
NpyHeader parse_npy_header(std::string_view text, std::string_view source);

// Writes `tensor` as a .npy file into a StagedFile for `path`, synced, for
// the caller to commit: the CLI stages every output before it replaces any.
// Format version 1.0, or 2.0 when the header outgrows 1.0's 16-bit length,
// as NumPy does.
StagedFile stage_npy(const std::filesystem::path& path, const TensorView& tensor);

}  // namespace spatialsoftmax::io
