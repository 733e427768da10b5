// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0,
// little endian; dtypes float32, float64, int32, int64). The reader accepts
// the headers NumPy reads (C or Fortran order; returned in C order) of at
// most 1 MiB, and checks every declared size against the bytes the file
// holds before it allocates.
#pragma once

#include <filesystem>
#include <istream>
#include <string_view>

#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax {

// Throws Error naming the file and what is wrong with it.
Tensor read_npy(const std::filesystem::path& path);
// The same from a stream positioned at the magic; `source` names it in errors.
Tensor read_npy(std::istream& in, std::string_view source);
// Writes to a hidden temporary file beside `path`, syncs it and renames it
// over `path`, so a failure or a kill never leaves a partial file under the
// final name (an older file there stays until the rename). Format version
// 1.0, or 2.0 when the header outgrows 1.0's 64 KiB, as NumPy does.
void write_npy(const std::filesystem::path& path, const TensorView& tensor);

}  // namespace spatialsoftmax
