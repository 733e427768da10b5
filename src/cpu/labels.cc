// The label scan on its own (core::LabelScanProblem): the check of index
// labels before a kernel runs, and the total weight of the labels that count.

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/labels.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/labels-inl.h"
#include "parallel/thread_pool.h"
#include "reference/problems.h"

#ifndef SPATIALSOFTMAX_CPU_LABELS_CC_ONCE  // foreach_target includes this file once per target
#define SPATIALSOFTMAX_CPU_LABELS_CC_ONCE
namespace spatialsoftmax::cpu {

// One block's part of a scan.
struct LabelBlock {
  double total = 0;
  std::int64_t first_bad = -1;  // within the block
};

}  // namespace spatialsoftmax::cpu
#endif

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {

// Labels [i0, i0 + n) of the problem. Without weights the total is a count,
// taken by the SIMD scan; the first bad label is looked for only if there is
// one. With weights, one plain loop does both.
template <class T, class L>
LabelBlock scan_block(const core::LabelScanProblem<T>& pb, const L* y, std::int64_t i0,
                      std::int64_t n) {
  LabelBlock out;
  const bool has_ignore = pb.has_ignore_index;
  const std::int64_t ignore = pb.ignore_index, C = pb.classes;
  if (!pb.class_weight && !pb.pixel_weight) {
    bool bad = false;
    out.total = static_cast<double>(count_labels_impl(y + i0, n, C, has_ignore, ignore, &bad));
    if (bad) out.first_bad = first_bad_label(y + i0, n, C, has_ignore, ignore);
    return out;
  }
  const T* a = pb.pixel_weight;
  const T* w = pb.class_weight;
  for (std::int64_t i = i0; i < i0 + n; ++i) {
    const auto label = static_cast<std::int64_t>(y[i]);
    if (has_ignore && label == ignore) continue;
    if (label < 0 || label >= C) {
      out.first_bad = i - i0;
      return out;
    }
    out.total += (a ? static_cast<double>(a[i]) : 1.0) * (w ? static_cast<double>(w[label]) : 1.0);
  }
  return out;
}

template <class T>
LabelBlock scan_labels_impl(const core::LabelScanProblem<T>& pb, std::int64_t i0, std::int64_t n) {
  return pb.labels.dtype == DType::kInt32
             ? scan_block(pb, static_cast<const std::int32_t*>(pb.labels.data), i0, n)
             : scan_block(pb, static_cast<const std::int64_t*>(pb.labels.data), i0, n);
}

LabelBlock ScanLabelsF32(const core::LabelScanProblem<float>& pb, std::int64_t i0, std::int64_t n) {
  return scan_labels_impl(pb, i0, n);
}
LabelBlock ScanLabelsF64(const core::LabelScanProblem<double>& pb, std::int64_t i0,
                         std::int64_t n) {
  return scan_labels_impl(pb, i0, n);
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {
namespace {

// Blocks of a fixed size, so that the partial totals, added in block order,
// do not depend on the thread count; small enough that the SIMD count's
// lanes (as wide as the label type) never overflow.
constexpr std::int64_t kScanBlock = 1 << 16;

template <class T, class Scan>
void scan_in_blocks(const core::LabelScanProblem<T>& pb, Scan scan) {
  const std::int64_t blocks = (pb.count + kScanBlock - 1) / kScanBlock;
  std::vector<LabelBlock> partial(static_cast<std::size_t>(blocks));
  parallel::for_each_block(blocks, [&](std::int64_t b) {
    const std::int64_t i0 = b * kScanBlock;
    partial[static_cast<std::size_t>(b)] = scan(pb, i0, std::min(kScanBlock, pb.count - i0));
  });
  double total = 0;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const LabelBlock& p = partial[static_cast<std::size_t>(b)];
    if (p.first_bad >= 0) {
      *pb.first_bad = b * kScanBlock + p.first_bad;
      return;
    }
    total += p.total;
  }
  *pb.total = total;
}

}  // namespace

HWY_EXPORT(ScanLabelsF32);
HWY_EXPORT(ScanLabelsF64);

void scan_labels(const core::LabelScanProblem<float>& pb) {
  scan_in_blocks(pb, [](const auto& p, std::int64_t i0, std::int64_t n) {
    return HWY_DYNAMIC_DISPATCH(ScanLabelsF32)(p, i0, n);
  });
}
void scan_labels(const core::LabelScanProblem<double>& pb) {
  scan_in_blocks(pb, [](const auto& p, std::int64_t i0, std::int64_t n) {
    return HWY_DYNAMIC_DISPATCH(ScanLabelsF64)(p, i0, n);
  });
}

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
