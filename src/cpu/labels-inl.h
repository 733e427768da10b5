// The label scan: counting the labels that count toward the mean and
// finding the first out of range, for the scan on its own (labels.cc,
// core::LabelScanProblem) and for the checks inside the loss kernels
// (CrossEntropyProblem::label_check), which scan each block's labels just
// before the block reads them.

#if defined(SPATIALSOFTMAX_CPU_LABELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPATIALSOFTMAX_CPU_LABELS_INL_H_
#undef SPATIALSOFTMAX_CPU_LABELS_INL_H_
#else
#define SPATIALSOFTMAX_CPU_LABELS_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::CrossEntropyProblem;
using core::LabelCheck;

template <class T>
using Index = hwy::MakeSigned<T>;  // label lanes as wide as T's

// How many of y[0, n) count toward the mean (not ignore_index, in
// [0, classes)), and whether any other is out of range. Counts build up in
// the lanes as subtracted all-ones masks; the caller passes blocks small
// enough that no lane overflows. has_ignore implies that L holds ignore
// (core::ignore_index_can_match).
template <class L>
std::int64_t count_labels_impl(const L* y, std::int64_t n, std::int64_t classes, bool has_ignore,
                               std::int64_t ignore, bool* bad) {
  constexpr std::int64_t kMax = std::numeric_limits<L>::max();
  const L highest = static_cast<L>(std::min(classes - 1, kMax));  // a label is never above kMax
  const auto counts_scalar = [&](L label) {
    return !(has_ignore && label == static_cast<L>(ignore));
  };
  const auto in_range_scalar = [&](L label) { return label >= 0 && label <= highest; };
  std::int64_t valid = 0, i = 0;
  bool any_bad = false;
#if HWY_TARGET != HWY_SCALAR
  const hn::ScalableTag<L> d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const auto hi = hn::Set(d, highest), minus_one = hn::Set(d, L(-1)),
             ignored = hn::Set(d, static_cast<L>(ignore));
  auto count = hn::Zero(d), out_of_range = hn::Zero(d);
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, y + i);
    const auto in_range = hn::And(hn::Gt(v, minus_one), hn::Not(hn::Gt(v, hi)));
    auto counted = hn::MaskFromVec(hn::Not(hn::Zero(d)));
    if (has_ignore) counted = hn::Not(hn::Eq(v, ignored));
    count = hn::Sub(count, hn::VecFromMask(d, hn::And(counted, in_range)));
    out_of_range = hn::Or(out_of_range, hn::VecFromMask(d, hn::AndNot(in_range, counted)));
  }
  valid = static_cast<std::int64_t>(hn::GetLane(hn::SumOfLanes(d, count)));
  any_bad = !hn::AllFalse(d, hn::MaskFromVec(out_of_range));
#endif
  for (; i < n; ++i) {
    const bool counted = counts_scalar(y[i]), in_range = in_range_scalar(y[i]);
    valid += counted && in_range;
    any_bad |= counted && !in_range;
  }
  *bad = any_bad;
  return valid;
}

// The index of the first label of y[0, n) that is neither ignore_index nor
// in [0, classes), or -1. Plain loop: it runs only once a block is known to
// hold one.
template <class L>
std::int64_t first_bad_label(const L* y, std::int64_t n, std::int64_t classes, bool has_ignore,
                             std::int64_t ignore) {
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int64_t>(y[i]);
    if (has_ignore && label == ignore) continue;
    if (label < 0 || label >= classes) return i;
  }
  return -1;
}

// The in-kernel label check (CrossEntropyProblem::label_check) of one block
// of work, positions [i0, i0 + count), just before the block reads them, so
// that the labels come from memory once. Adds to *counted; returns the flat
// index of the block's first bad label, or -1 (the block then runs).
template <class T, class L>
std::int64_t block_first_bad(const CrossEntropyProblem<T>& pb, const L* y, std::int64_t i0,
                             std::int64_t count, std::int64_t* counted) {
  bool bad = false;
  *counted +=
      count_labels_impl(y + i0, count, pb.geom.classes, pb.has_ignore_index, pb.ignore_index, &bad);
  if (!bad) return -1;
  return i0 + first_bad_label(y + i0, count, pb.geom.classes, pb.has_ignore_index, pb.ignore_index);
}

// Per-block results of the label check, combined after the blocks ran.
struct BlockLabelChecks {
  LabelCheck* out = nullptr;  // null: no check
  std::vector<std::int64_t> counted;
  std::vector<std::int64_t> first_bad;

  BlockLabelChecks(LabelCheck* check, std::int64_t blocks) : out(check) {
    if (!out) return;
    counted.assign(static_cast<std::size_t>(blocks), 0);
    first_bad.assign(static_cast<std::size_t>(blocks), -1);
  }
  // Whether block b may run.
  template <class T>
  bool pass(const CrossEntropyProblem<T>* pb, std::int64_t b, std::int64_t i0, std::int64_t count) {
    if (!out) return true;
    const auto k = static_cast<std::size_t>(b);
    first_bad[k] = pb->labels.dtype == DType::kInt32
                       ? block_first_bad(*pb, static_cast<const std::int32_t*>(pb->labels.data), i0,
                                         count, &counted[k])
                       : block_first_bad(*pb, static_cast<const std::int64_t*>(pb->labels.data), i0,
                                         count, &counted[k]);
    return first_bad[k] < 0;
  }
  // Blocks may cover positions out of order (tiles of class-first images),
  // so the first bad label is the least index any block found.
  void finish() {
    if (!out) return;
    for (std::int64_t c : counted) out->counted += c;
    for (std::int64_t i : first_bad) {
      if (i >= 0 && (out->first_bad < 0 || i < out->first_bad)) out->first_bad = i;
    }
  }
};

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#endif  // SPATIALSOFTMAX_CPU_LABELS_INL_H_ toggle
