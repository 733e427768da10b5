// The label scan of the API's label check (count_labels).

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/labels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <cstdint>
#include <optional>

#include "cpu/kernels.h"
#include "cpu/labels-inl.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

std::int64_t CountLabelsI32(const std::int32_t* y, std::int64_t n, std::int64_t classes,
                            bool has_ignore, std::int64_t ignore, bool* bad) {
  return count_labels_impl(y, n, classes, has_ignore, ignore, bad);
}
std::int64_t CountLabelsI64(const std::int64_t* y, std::int64_t n, std::int64_t classes,
                            bool has_ignore, std::int64_t ignore, bool* bad) {
  return count_labels_impl(y, n, classes, has_ignore, ignore, bad);
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(CountLabelsI32);
HWY_EXPORT(CountLabelsI64);

std::int64_t count_labels(const std::int32_t* y, std::int64_t n, std::int64_t classes,
                          std::optional<std::int64_t> ignore, bool* bad) {
  return HWY_DYNAMIC_DISPATCH(CountLabelsI32)(y, n, classes, ignore.has_value(), ignore.value_or(0), bad);
}
std::int64_t count_labels(const std::int64_t* y, std::int64_t n, std::int64_t classes,
                          std::optional<std::int64_t> ignore, bool* bad) {
  return HWY_DYNAMIC_DISPATCH(CountLabelsI64)(y, n, classes, ignore.has_value(), ignore.value_or(0), bad);
}

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
