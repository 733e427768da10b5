#include "spatialsoftmax/shapes.h"

#include <limits>
#include <string>

#include "api/validate.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax {

ClassShape class_shape(std::string_view op, std::string_view arg, DType dtype, const Shape& shape,
                       ClassAxis axis, int min_spatial_rank, bool allow_no_classes) {
  using api::fail;
  if (!is_floating(dtype)) {
    api::fail_dtype(op, arg, "float32, float64, bfloat16 or float16", dtype);
  }
  const int rank = static_cast<int>(shape.size());
  const int min_rank = 2 + min_spatial_rank;
  const int max_rank = 2 + kMaxSpatialRank;
  if (rank < min_rank || rank > max_rank) {
    fail(op, arg,
         "rank: expected " + std::to_string(min_rank) + " to " + std::to_string(max_rank) +
             " ((N, C, d1..dk) with k <= " + std::to_string(kMaxSpatialRank) + "), got " +
             std::to_string(rank) + " with shape " + shape_string(shape));
  }
  api::check_enum(op, "class_axis", static_cast<int>(axis), 2);
  const std::string what = std::string(op) + ": " + std::string(arg);
  const std::int64_t numel = checked_numel(shape, what);
  // Outputs of this shape are allocated in bytes: that count must fit too.
  if (numel > std::numeric_limits<std::int64_t>::max() / 8) {
    throw Error(what + ": byte size of shape " + shape_string(shape) +
                " overflows int64, expected at most 2^60 elements");
  }
  ClassShape out;
  const int class_dim = axis == ClassAxis::kFirst ? 1 : rank - 1;
  out.batch = shape[0];
  out.classes = shape[static_cast<std::size_t>(class_dim)];
  out.map_shape.push_back(shape[0]);
  for (int d = 1; d < rank; ++d) {
    if (d == class_dim) continue;
    out.spatial_dims.push_back(shape[static_cast<std::size_t>(d)]);
    out.map_shape.push_back(shape[static_cast<std::size_t>(d)]);
    out.pixels *= shape[static_cast<std::size_t>(d)];
  }
  if (out.classes == 0 && !allow_no_classes) {
    fail(op, arg,
         "class dim " + std::to_string(class_dim) + ": expected C >= 1, got 0 (shape " +
             shape_string(shape) + ")");
  }
  return out;
}

}  // namespace spatialsoftmax
