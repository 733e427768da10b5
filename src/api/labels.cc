#include "api/labels.h"

#include <string>

#include "api/validate.h"
#include "dispatch/backend.h"

namespace spatialsoftmax::api {

double scan_labels(const LabelArg& labels, const void* class_weight, const void* pixel_weight,
                   DType weight_dtype, Device device, const ExecutionContext& context) {
  const std::int64_t count = checked_numel(labels.view.shape(), labels.name);
  double total = 0;
  std::int64_t first_bad = -1;
  visit_float(weight_dtype, [&](auto tag) {
    using T = decltype(tag);
    core::LabelScanProblem<T> pb;
    pb.labels = labels.dense;
    pb.count = count;
    pb.classes = labels.classes;
    pb.has_ignore_index = core::ignore_index_can_match(labels.dense.dtype, labels.ignore_index);
    pb.ignore_index = pb.has_ignore_index ? *labels.ignore_index : 0;
    pb.class_weight = static_cast<const T*>(class_weight);
    pb.pixel_weight = static_cast<const T*>(pixel_weight);
    pb.total = &total;
    pb.first_bad = &first_bad;
    const core::Geometry geom{1, labels.classes, count, false};
    dispatch::select(dispatch::Op::kScanLabels, geom, weight_dtype, device, labels.op)
        .scan_labels(pb, context);
  });
  if (first_bad >= 0) fail_label(labels, first_bad);
  return total;
}

void fail_label(std::string_view op, std::string_view name, const Shape& shape,
                std::int64_t first_bad, std::int64_t value, std::int64_t classes,
                std::optional<std::int64_t> ignore_index) {
  std::string index;
  std::int64_t rest = first_bad;
  for (auto d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    const std::int64_t dim = shape[static_cast<std::size_t>(d)];
    index = std::to_string(rest % dim) + (index.empty() ? "" : ", ") + index;
    rest /= dim;
  }
  fail(op, std::string(name) + "[" + index + "]",
       "(flat index " + std::to_string(first_bad) + ") = " + std::to_string(value) +
           ", expected in [0, " + std::to_string(classes) + ") or ignore_index (" +
           (ignore_index ? std::to_string(*ignore_index) : std::string("unset")) + ")");
}

void fail_label(const LabelArg& labels, std::int64_t first_bad) {
  fail_label(labels.op, labels.name, labels.view.shape(), first_bad, labels.dense[first_bad],
             labels.classes, labels.ignore_index);
}

}  // namespace spatialsoftmax::api
