#include "api/validate.h"

#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "parallel/thread_pool.h"

#include <cmath>
#include <limits>
#include <sstream>

namespace spatialsoftmax::api {

void fail(std::string_view op, std::string_view arg, const std::string& what) {
  throw Error(std::string(op) + ": " + std::string(arg) + " " + what);
}

void check_enum(std::string_view op, std::string_view arg, int value, int count) {
  if (value < 0 || value >= count) {
    fail(op, arg,
         "= " + std::to_string(value) + " (as int), expected one of the " + std::to_string(count) +
             " enumerators");
  }
}

std::string format_value(double v) {
  std::ostringstream out;
  out.precision(9);
  out << v;
  return out.str();
}

ClassTensor analyze_class_tensor(std::string_view op, std::string_view arg, const TensorView& x,
                                 ClassAxis axis, int min_spatial_rank, bool allow_no_classes) {
  if (!is_floating(x.dtype())) {
    fail(op, arg, "dtype: expected float32 or float64, got " + std::string(dtype_name(x.dtype())));
  }
  const int rank = x.rank();
  const int min_rank = 2 + min_spatial_rank;
  const int max_rank = 2 + core::kMaxSpatialRank;
  if (rank < min_rank || rank > max_rank) {
    fail(op, arg,
         "rank: expected " + std::to_string(min_rank) + " to " + std::to_string(max_rank) +
             " ((N, C, d1..dk) with k <= 8), got " + std::to_string(rank) + " with shape " +
             shape_string(x.shape()));
  }
  check_enum(op, "class_axis", static_cast<int>(axis), 2);
  const std::string what = std::string(op) + ": " + std::string(arg);
  const std::int64_t numel = checked_numel(x.shape(), what);
  // Outputs of this shape are allocated in bytes: that count must fit too.
  if (numel > std::numeric_limits<std::int64_t>::max() / 8) {
    throw Error(what + ": byte size of shape " + shape_string(x.shape()) +
                " overflows int64, expected at most 2^60 elements");
  }
  ClassTensor info;
  const int class_dim = axis == ClassAxis::kFirst ? 1 : rank - 1;
  info.geom.batch = x.dim(0);
  info.geom.classes = x.dim(class_dim);
  info.geom.class_last = axis == ClassAxis::kLast;
  info.geom.pixels = 1;
  info.map_shape.push_back(x.dim(0));
  for (int d = 1; d < rank; ++d) {
    if (d == class_dim) continue;
    info.spatial_dims.push_back(x.dim(d));
    info.map_shape.push_back(x.dim(d));
    info.geom.pixels *= x.dim(d);
  }
  if (info.geom.classes == 0 && !allow_no_classes) {
    fail(op, arg,
         "class dim " + std::to_string(class_dim) + ": expected C >= 1, got 0 (shape " +
             shape_string(x.shape()) + ")");
  }
  return info;
}

void check_dtype(std::string_view op, std::string_view arg, const TensorView& t, DType expected) {
  if (t.dtype() != expected) {
    fail(op, arg,
         "dtype: expected " + std::string(dtype_name(expected)) + " (the logits' dtype), got " +
             std::string(dtype_name(t.dtype())));
  }
}

void check_index_dtype(std::string_view op, std::string_view arg, const TensorView& t) {
  if (t.dtype() != DType::kInt32 && t.dtype() != DType::kInt64) {
    fail(op, arg, "dtype: expected int32 or int64, got " + std::string(dtype_name(t.dtype())));
  }
}

void check_shape(std::string_view op, std::string_view arg, const TensorView& t,
                 const Shape& expected, std::string_view expected_what) {
  if (t.shape() == expected) return;
  std::string detail;
  if (t.rank() != static_cast<int>(expected.size())) {
    detail = "rank " + std::to_string(t.rank()) + " vs " + std::to_string(expected.size());
  } else {
    for (std::size_t d = 0; d < expected.size(); ++d) {
      if (t.shape()[d] != expected[d]) {
        detail = "dim " + std::to_string(d) + " is " + std::to_string(t.shape()[d]) +
                 ", expected " + std::to_string(expected[d]);
        break;
      }
    }
  }
  fail(op, arg,
       "shape: expected " + shape_string(expected) + " " + std::string(expected_what) + ", got " +
           shape_string(t.shape()) + " (" + detail + ")");
}

void check_weights(std::string_view op, std::string_view arg, const TensorView& weights,
                   const Shape& expected, std::string_view expected_what, DType dtype) {
  check_shape(op, arg, weights, expected, expected_what);
  check_dtype(op, arg, weights, dtype);
  const std::int64_t n = weights.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    const double w = weights.at(i);
    if (!std::isfinite(w) || w < 0) {
      fail(op, std::string(arg) + "[flat index " + std::to_string(i) + "]",
           "= " + format_value(w) + ", expected finite and >= 0");
    }
  }
}

Dense::Dense(const TensorView& view) : present_(true) {
  if (view.is_contiguous()) {
    data_ = view.data();
  } else {
    copy_ = Tensor::copy_of(view);
    data_ = copy_.data();
  }
}

namespace {

constexpr std::int64_t kScanBlock = 1 << 16;

struct ScanBlock {
  std::int64_t first_bad = -1;
  double total = 0;
};

// The positions [begin, end) of one block; L the label type, W the weights'.
template <class L, class W>
ScanBlock scan_block(const L* y, std::int64_t begin, std::int64_t end, std::int64_t classes,
                     bool has_ignore, std::int64_t ignore, const W* w, const W* a) {
  ScanBlock out;
  if (!w && !a) {
    // Without weights the total is a count, taken by a SIMD kernel; the
    // first bad label is looked for below only if there is one.
    bool bad = false;
    const std::int64_t valid = cpu::count_labels(
        y + begin, end - begin, classes, has_ignore ? std::optional<std::int64_t>(ignore) : std::nullopt, &bad);
    if (!bad) {
      out.total = static_cast<double>(valid);
      return out;
    }
  }
  for (std::int64_t i = begin; i < end; ++i) {
    const auto label = static_cast<std::int64_t>(y[i]);
    if (has_ignore && label == ignore) continue;
    if (label < 0 || label >= classes) {
      out.first_bad = i;
      return out;
    }
    out.total += (a ? static_cast<double>(a[i]) : 1.0) * (w ? static_cast<double>(w[label]) : 1.0);
  }
  return out;
}

template <class L, class W>
ScanBlock scan_all(const L* y, std::int64_t n, std::int64_t classes,
                   std::optional<std::int64_t> ignore, const W* w, const W* a) {
  const std::int64_t blocks = (n + kScanBlock - 1) / kScanBlock;
  std::vector<ScanBlock> partial(static_cast<std::size_t>(blocks));
  parallel::for_each_block(blocks, [&](std::int64_t b) {
    partial[static_cast<std::size_t>(b)] =
        scan_block(y, b * kScanBlock, std::min(n, (b + 1) * kScanBlock), classes,
                   ignore.has_value(), ignore.value_or(0), w, a);
  });
  ScanBlock out;
  for (const ScanBlock& p : partial) {
    if (p.first_bad >= 0) return p;
    out.total += p.total;
  }
  return out;
}

template <class L>
ScanBlock scan_typed(const L* y, std::int64_t n, std::int64_t classes,
                     std::optional<std::int64_t> ignore, const void* w, const void* a,
                     DType weight_dtype) {
  if (weight_dtype == DType::kFloat64) {
    return scan_all(y, n, classes, ignore, static_cast<const double*>(w),
                    static_cast<const double*>(a));
  }
  return scan_all(y, n, classes, ignore, static_cast<const float*>(w),
                  static_cast<const float*>(a));
}

}  // namespace

double scan_labels(std::string_view op, std::string_view arg, const TensorView& labels,
                   const core::Labels& dense, std::int64_t classes,
                   std::optional<std::int64_t> ignore_index, const void* class_weight,
                   const void* pixel_weight, DType weight_dtype) {
  const std::int64_t n = checked_numel(labels.shape(), arg);
  const ScanBlock result =
      dense.dtype == DType::kInt32
          ? scan_typed(static_cast<const std::int32_t*>(dense.data), n, classes, ignore_index,
                       class_weight, pixel_weight, weight_dtype)
          : scan_typed(static_cast<const std::int64_t*>(dense.data), n, classes, ignore_index,
                       class_weight, pixel_weight, weight_dtype);
  if (result.first_bad < 0) return result.total;
  // Multi-index of the offending flat index, for the message.
  const std::int64_t i = result.first_bad;
  std::string index;
  std::int64_t rest = i;
  for (int d = labels.rank() - 1; d >= 0; --d) {
    const std::int64_t dim = labels.shape()[static_cast<std::size_t>(d)];
    index = std::to_string(rest % dim) + (index.empty() ? "" : ", ") + index;
    rest /= dim;
  }
  fail(op, std::string(arg) + "[" + index + "]",
       "(flat index " + std::to_string(i) + ") = " + std::to_string(dense[i]) +
           ", expected in [0, " + std::to_string(classes) + ") or ignore_index (" +
           (ignore_index ? std::to_string(*ignore_index) : std::string("unset")) + ")");
}

void check_labels(std::string_view op, std::string_view arg, const TensorView& labels,
                  const core::Labels& dense, std::int64_t classes,
                  std::optional<std::int64_t> ignore_index) {
  (void)scan_labels(op, arg, labels, dense, classes, ignore_index, nullptr, nullptr,
                    DType::kFloat32);
}

double first_element(std::string_view op, std::string_view arg, const TensorView& t) {
  if (!is_floating(t.dtype())) {
    fail(op, arg, "dtype: expected float32 or float64, got " + std::string(dtype_name(t.dtype())));
  }
  if (checked_numel(t.shape(), arg) < 1) {
    fail(op, arg, "shape: expected at least one element, got " + shape_string(t.shape()));
  }
  return t.at(0);
}

// Scalar upstream gradient: a float tensor with exactly one element.
double scalar_grad(std::string_view op, std::string_view arg, const TensorView& t, DType dtype) {
  check_dtype(op, arg, t, dtype);
  if (checked_numel(t.shape(), arg) != 1) {
    fail(op, arg, "shape: expected a scalar (one element), got " + shape_string(t.shape()));
  }
  return t.at(0);
}

}  // namespace spatialsoftmax::api
