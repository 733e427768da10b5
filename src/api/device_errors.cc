#include "api/device_errors.h"

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/labels.h"
#include "api/validate.h"
#include "dispatch/backend.h"

namespace spatialsoftmax::api {
namespace {

// Names travel to the device as small ids: operation and argument names are
// a handful of literals, each kept once for the life of the process. Id 0
// means "no site".
class Names {
 public:
  std::uint32_t id(std::string_view name) {
    const std::lock_guard lock(mutex_);
    const auto [it, added] =
        ids_.try_emplace(std::string(name), static_cast<std::uint32_t>(names_.size() + 1));
    if (added) names_.emplace_back(name);
    return it->second;
  }
  std::string name(std::uint32_t id) {
    const std::lock_guard lock(mutex_);
    return id >= 1 && id <= names_.size() ? names_[id - 1] : std::string("?");
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::uint32_t> ids_;
  std::vector<std::string> names_;
};

Names& names() {
  static Names n;
  return n;
}

}  // namespace

core::ErrorSite error_site(std::string_view op, std::string_view arg, const Shape& shape,
                           std::int64_t classes, std::optional<std::int64_t> ignore_index) {
  core::ErrorSite site;
  site.op = names().id(op);
  site.arg = names().id(arg);
  // Labels have at most kMaxSpatialRank + 1 dims, except SoftmaxWithLoss's T
  // of any rank: beyond the record's dims its message gives the flat index
  // of a 1-D view.
  if (shape.size() <= std::size(site.dims)) {
    site.rank = static_cast<int>(shape.size());
    for (std::size_t d = 0; d < shape.size(); ++d) site.dims[d] = shape[d];
  } else {
    site.rank = 1;
    site.dims[0] = checked_numel(shape, arg);
  }
  site.classes = classes;
  site.has_ignore_index = ignore_index.has_value();
  site.ignore_index = ignore_index.value_or(0);
  return site;
}

void raise_device_error(const ExecutionContext& context, bool wait) {
  core::DeviceError e;
  if (!dispatch::take_device_error(context, wait, &e)) return;
  const std::string op = names().name(e.site.op), arg = names().name(e.site.arg);
  if (e.kind == core::DeviceError::Kind::kWeight) fail_weight(op, arg, e.flat_index, e.weight);
  const Shape shape(e.site.dims, e.site.dims + e.site.rank);
  fail_label(
      op, arg, shape, e.flat_index, e.label, e.site.classes,
      e.site.has_ignore_index ? std::optional<std::int64_t>(e.site.ignore_index) : std::nullopt);
}

}  // namespace spatialsoftmax::api

namespace spatialsoftmax {

void check_device_errors(const ExecutionContext& context) {
  api::raise_device_error(context, true);
}

}  // namespace spatialsoftmax
