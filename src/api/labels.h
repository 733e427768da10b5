// The API's one owner of index labels: the check that each is the
// ignore_index or a class, the mean's denominator taken in the same pass,
// and the message naming the first bad one. The scan itself is a backend
// operation (dispatch::Op::kScanLabels); loss kernels that check labels as
// they read them report the first bad index the same way, and the message is
// built here from either.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "reference/problems.h"
#include "spatialsoftmax/device.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::api {

// Labels as the caller named them, and what they are checked against.
struct LabelArg {
  std::string_view op;
  std::string_view name;
  const TensorView& view;  // for the multi-index in messages
  core::Labels dense;      // the same labels, dense
  std::int64_t classes = 0;
  std::optional<std::int64_t> ignore_index;
};

// Checks every label, and returns the total weight of those not ignored,
// sum_i a_i * w_{y_i} (a: pixel weights, w: class weights, both optional
// and dense, of `weight_dtype`), run by the backend for `device`. A bad label
// is an Error naming it (fail_label).
double scan_labels(const LabelArg& labels, const void* class_weight, const void* pixel_weight,
                   DType weight_dtype, Device device, const ExecutionContext& context);

// The error for the label at flat index `first_bad` of labels of `shape`:
// its multi-index, flat index and value, and the range it should be in.
[[noreturn]] void fail_label(std::string_view op, std::string_view name, const Shape& shape,
                             std::int64_t first_bad, std::int64_t value, std::int64_t classes,
                             std::optional<std::int64_t> ignore_index);
// The same for labels in CPU memory, reading the value.
[[noreturn]] void fail_label(const LabelArg& labels, std::int64_t first_bad);

}  // namespace spatialsoftmax::api
