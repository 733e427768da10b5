// The shape rules of the API's class-axis tensors, on a dtype and a shape
// alone: the API checks its arguments with them, and the operator layer's
// shape inference calls the same functions, so a rule is written once.
#pragma once

#include <cstdint>
#include <string_view>

#include "spatialsoftmax/options.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax {

// A (N, C, d1..dk) or (N, d1..dk, C) tensor, analysed.
struct ClassShape {
  std::int64_t batch = 0;
  std::int64_t classes = 0;  // C (channels for the spatial ops)
  std::int64_t pixels = 1;   // d1 * ... * dk
  Shape map_shape;           // (N, d1..dk): the shape of per-position maps
  Shape spatial_dims;        // d1..dk
};

// Checks a float dtype, rank 2 + k with k in [min_spatial_rank,
// kMaxSpatialRank], an element count (and byte count) that fits int64 and
// C >= 1 (C = 0 too if allow_no_classes). Throws Error "<op>: <arg> ...:
// expected ..., got ...".
ClassShape class_shape(std::string_view op, std::string_view arg, DType dtype, const Shape& shape,
                       ClassAxis axis, int min_spatial_rank = 0, bool allow_no_classes = false);

}  // namespace spatialsoftmax
