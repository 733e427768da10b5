// Reading and writing NumPy .npy files (format versions 1.0 and 2.0, little
// endian, C order; dtypes float32, float64, int32, int64).
#pragma once

#include <filesystem>

#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax {

// Throws Error naming the file and what is wrong with it.
Tensor read_npy(const std::filesystem::path& path);
// Writes to a temporary file beside `path`, then renames it over `path`, so
// a failure never leaves a partial file under the final name.
void write_npy(const std::filesystem::path& path, const TensorView& tensor);

}  // namespace spatialsoftmax
