// The SIMD targets of the kernels: which are compiled in and supported,
// which one HWY_DYNAMIC_DISPATCH chooses, and forcing one for the tests.
// Highway's chosen target is one global, shared by every file's dispatch
// table.
#include <hwy/highway.h>
#include <hwy/targets.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/kernels.h"

namespace spatialsoftmax::cpu {

std::vector<std::int64_t> supported_targets() {
  std::vector<std::int64_t> out;
  const std::int64_t usable = hwy::SupportedTargets() & HWY_TARGETS;
  for (int bit = 0; bit < 63; ++bit) {  // a lower bit is a better target
    const std::int64_t t = std::int64_t{1} << bit;
    if (usable & t) out.push_back(t);
  }
  return out;
}

std::int64_t active_target() {
  const std::vector<std::int64_t> targets = supported_targets();
  return targets.empty() ? 0 : targets.front();
}

std::string target_name(std::int64_t target) { return hwy::TargetName(target); }

void use_only_target_for_test(std::int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

}  // namespace spatialsoftmax::cpu
