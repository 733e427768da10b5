// The CUDA backend (src/cuda), for dispatch's list. Only compiled when the
// build finds nvcc (SPATIALSOFTMAX_CUDA, the top-level CMakeLists.txt).
#pragma once

#include "dispatch/backend.h"

namespace spatialsoftmax::cuda {

const dispatch::Backend& backend();

}  // namespace spatialsoftmax::cuda
