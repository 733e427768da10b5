// The label scan (core::LabelScanProblem), the one owner of the label check:
// the CPU kernels on every SIMD target and the scalar reference, each against
// a plain loop written here; and the API's rules around it (the first bad
// label named, an ignore_index the label type cannot hold).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "reference/problems.h"
#include "reference/reference.h"
#include "spatialsoftmax/functions.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

struct Scanned {
  double total = 0;
  std::int64_t first_bad = -1;
};

// The oracle: the first label that is neither ignored nor a class, or else
// the total weight of the labels not ignored.
template <class L, class T>
Scanned plain_scan(const std::vector<L>& y, std::int64_t C, std::optional<std::int64_t> ignore,
                   const T* w, const T* a) {
  Scanned out;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const auto label = static_cast<std::int64_t>(y[i]);
    if (ignore && label == *ignore) continue;
    if (label < 0 || label >= C) {
      out.first_bad = static_cast<std::int64_t>(i);
      out.total = 0;
      return out;
    }
    out.total += (a ? static_cast<double>(a[i]) : 1.0) * (w ? static_cast<double>(w[label]) : 1.0);
  }
  return out;
}

enum class Runner { kCpu, kReference };

template <class L, class T>
Scanned run_scan(Runner runner, const std::vector<L>& y, std::int64_t C,
                 std::optional<std::int64_t> ignore, const T* w, const T* a) {
  Scanned out;
  core::LabelScanProblem<T> pb;
  pb.labels = {y.data(), dtype_of<L>()};
  pb.count = static_cast<std::int64_t>(y.size());
  pb.classes = C;
  pb.has_ignore_index = core::ignore_index_can_match(dtype_of<L>(), ignore);
  pb.ignore_index = pb.has_ignore_index ? *ignore : 0;
  pb.class_weight = w;
  pb.pixel_weight = a;
  pb.total = &out.total;
  pb.first_bad = &out.first_bad;
  if (runner == Runner::kCpu) {
    cpu::scan_labels(pb);
  } else {
    core::reference::scan_labels(pb);
  }
  return out;
}

// Lengths around the lane counts and across the scan's blocks of 2^16, both
// label types, with and without weights, labels in range, ignored, negative
// and too large, and an ignore_index that int32 cannot hold.
template <class L>
void check_scans(Runner runner, std::mt19937_64& rng) {
  const std::optional<std::int64_t> ignores[] = {std::nullopt, -100, 255, 3, std::int64_t{1} << 40};
  for (std::int64_t n :
       {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000, 65536, 65537, 200003}) {
    for (std::int64_t C : {1, 2, 19, 256}) {
      for (const auto& ignore : ignores) {
        for (int bad_kind = 0; bad_kind < 3; ++bad_kind) {  // none, negative, >= C
          for (bool weighted : {false, true}) {
            const bool long_run = n > 1000;  // kept to one class count and two ignore_index values
            if (long_run && (C != 19 || (ignore && *ignore != 255))) continue;
            std::vector<L> y(static_cast<std::size_t>(n));
            std::uniform_int_distribution<std::int64_t> label(0, C - 1), pick(0, 9);
            for (L& v : y) {
              v = static_cast<L>(label(rng));
              if (ignore && *ignore < (std::int64_t{1} << 31) && pick(rng) == 0)
                v = static_cast<L>(*ignore);
            }
            if (bad_kind > 0 && n > 0) {
              const L wrong = bad_kind == 1 ? L(-7) : static_cast<L>(C + 2);
              // Two bad labels: the first must be named.
              for (int k = 0; k < 2; ++k) {
                if (!(ignore && static_cast<std::int64_t>(wrong) == *ignore))
                  y[static_cast<std::size_t>(rng() % n)] = wrong;
              }
            }
            std::vector<double> w(static_cast<std::size_t>(C)), a(static_cast<std::size_t>(n));
            std::uniform_real_distribution<double> weight(0.0, 2.0);
            for (double& v : w) v = weight(rng);
            for (double& v : a) v = weight(rng);
            const double* wp = weighted ? w.data() : nullptr;
            const double* ap = weighted ? a.data() : nullptr;
            const Scanned want = plain_scan(y, C, ignore, wp, ap);
            const Scanned got = run_scan(runner, y, C, ignore, wp, ap);
            const std::string where = "n " + std::to_string(n) + ", C " + std::to_string(C) +
                                      ", bad kind " + std::to_string(bad_kind) +
                                      (weighted ? ", weighted" : "");
            EXPECT_EQ(got.first_bad, want.first_bad) << where;
            if (want.first_bad < 0) {
              // Block partials summed in block order: equal up to the rounding of the
              // additions of at most n / 2^16 partial sums.
              EXPECT_NEAR(got.total, want.total, 1e-12 * want.total) << where;
              if (!weighted) {
                EXPECT_EQ(got.total, want.total) << where;  // a count is exact
              }
            }
          }
        }
      }
    }
  }
}

class LabelScanOnTarget : public testing::PerTarget {};

TEST_P(LabelScanOnTarget, MatchesAPlainLoop) {
  std::mt19937_64 rng(99);
  check_scans<std::int32_t>(Runner::kCpu, rng);
  check_scans<std::int64_t>(Runner::kCpu, rng);
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(LabelScanOnTarget);

TEST(LabelScanReference, MatchesAPlainLoop) {
  std::mt19937_64 rng(7);
  check_scans<std::int32_t>(Runner::kReference, rng);
  check_scans<std::int64_t>(Runner::kReference, rng);
}

// Weights in float32: the total is summed in float64 from float32 terms.
TEST(LabelScanReference, Float32WeightsSumInFloat64) {
  const std::vector<std::int64_t> y = {0, 1, 1, 0};
  const std::vector<float> w = {0.1f, 0.3f}, a = {1.0f, 2.0f, 3.0f, 4.0f};
  for (Runner runner : {Runner::kCpu, Runner::kReference}) {
    const Scanned got = run_scan(runner, y, 2, std::nullopt, w.data(), a.data());
    const double want =
        1.0 * double(0.1f) + 2.0 * double(0.3f) + 3.0 * double(0.3f) + 4.0 * double(0.1f);
    EXPECT_EQ(got.first_bad, -1);
    EXPECT_EQ(got.total, want);
  }
}

// The rule of core::ignore_index_can_match, through the API: an int32 label
// 0 is not "ignored" by ignore_index 2^32 (whose low 32 bits are 0), so the
// loss equals the loss without an ignore_index.
TEST(LabelScanRules, AnIgnoreIndexTheLabelTypeCannotHoldMatchesNothing) {
  EXPECT_FALSE(core::ignore_index_can_match(DType::kInt32, std::int64_t{1} << 32));
  EXPECT_TRUE(core::ignore_index_can_match(DType::kInt64, std::int64_t{1} << 32));
  EXPECT_TRUE(
      core::ignore_index_can_match(DType::kInt32, std::numeric_limits<std::int32_t>::min()));
  EXPECT_FALSE(core::ignore_index_can_match(DType::kInt32, std::nullopt));
  Tensor x(DType::kFloat32, {2, 3, 4, 5});
  for (std::int64_t i = 0; i < x.numel(); ++i)
    x.data_as<float>()[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  Tensor y(DType::kInt32, {2, 4, 5});  // every label 0
  Tensor w(DType::kFloat32, {3});
  for (int c = 0; c < 3; ++c) w.data_as<float>()[c] = 1.0f + static_cast<float>(c);
  for (bool weighted : {false, true}) {  // the kernel's check, and the scan before the kernel
    CrossEntropyOptions plain;
    if (weighted) plain.class_weight = w.view();
    CrossEntropyOptions far = plain;
    far.ignore_index = std::int64_t{1} << 32;
    EXPECT_EQ(cross_entropy(x, y, far).loss.at(0), cross_entropy(x, y, plain).loss.at(0))
        << weighted;
  }
}

// The kernel's check and the scan name the same first bad label, with its
// multi-index, whichever path finds it.
TEST(LabelScanRules, BothPathsNameTheFirstBadLabel) {
  Tensor x(DType::kFloat32, {2, 3, 4, 5});
  for (std::int64_t i = 0; i < x.numel(); ++i)
    x.data_as<float>()[i] = 0.1f * static_cast<float>(i % 7);
  Tensor y(DType::kInt64, {2, 4, 5});
  for (std::int64_t i = 0; i < y.numel(); ++i) y.data_as<std::int64_t>()[i] = i % 3;
  y.data_as<std::int64_t>()[27] = 9;  // (1, 1, 2)
  y.data_as<std::int64_t>()[33] = -4;
  Tensor w(DType::kFloat32, {3});
  for (int c = 0; c < 3; ++c) w.data_as<float>()[c] = 1.0f;
  CrossEntropyOptions in_kernel, scanned;
  scanned.class_weight = w.view();
  for (const CrossEntropyOptions* o : {&in_kernel, &scanned}) {
    EXPECT_ERROR_MENTIONS(cross_entropy(x, y, *o),
                          {"targets[1, 1, 2]", "flat index 27", "= 9", "[0, 3)"});
  }
}

}  // namespace
}  // namespace spatialsoftmax
