// The SIMD targets of the kernels: listed best first, the best one
// dispatched to (an AVX2 / AVX-512 CPU must not silently run SSSE3 code), the
// test hook forcing each one; and the default backend (the one
// test_conformance runs on) is highway.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "dispatch/backend.h"
#include "kernel_test_support.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

TEST(KernelTargets, ListedBestFirstWithNames) {
  const std::vector<std::int64_t> targets = cpu::supported_targets();
  ASSERT_FALSE(targets.empty());
  std::string names;
  for (std::size_t k = 0; k < targets.size(); ++k) {
    EXPECT_EQ(targets[k] & (targets[k] - 1), 0) << "not a single target bit: " << targets[k];
    EXPECT_FALSE(cpu::target_name(targets[k]).empty());
    if (k > 0) {
      EXPECT_GT(targets[k], targets[k - 1]) << "not best first (a lower bit is better)";
    }
    names += ' ';
    names += cpu::target_name(targets[k]);
  }
  ::testing::Test::RecordProperty("simd_targets", names);
  std::printf("SIMD targets compiled in and supported here, best first:%s\n", names.c_str());
}

TEST(KernelTargets, BestTargetIsUsed) {
  const std::vector<std::int64_t> targets = cpu::supported_targets();
  ASSERT_FALSE(targets.empty());
  const std::int64_t active = cpu::active_target();
  EXPECT_EQ(active, targets.front());

  // What HWY_DYNAMIC_DISPATCH really picks, after a highway call.
  ScopedBackend highway("highway");
  const Tensor x = testing::random_uniform(DType::kFloat32, {2, 5, 7}, -1, 1, 1);
  (void)softmax(x);
  EXPECT_EQ(dispatched_target(), active) << "dispatched to " << target_label(dispatched_target())
                                         << ", best is " << target_label(active);

#if defined(__x86_64__) || defined(__i386__)
  // A wrong baseline (HWY_TARGETS without AVX2, or a static target) would
  // silently run SSSE3 code on a modern CPU.
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2")) {
    EXPECT_LE(active, HWY_AVX2) << "CPU has AVX2 but the kernels run " << target_label(active);
    EXPECT_LE(dispatched_target(), HWY_AVX2);
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    EXPECT_LE(active, HWY_AVX3) << "CPU has AVX-512 but the kernels run " << target_label(active);
    EXPECT_LE(dispatched_target(), HWY_AVX3);
  }
#endif
}

class KernelTargetHook : public PerTarget {};

TEST_P(KernelTargetHook, DispatchesToTheForcedTarget) {
  ScopedBackend highway("highway");
  const Tensor x = testing::random_uniform(DType::kFloat64, {2, 9, 5}, -1, 1, 2);
  (void)softmax(x);
  EXPECT_EQ(dispatched_target(), GetParam());
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(KernelTargetHook);

TEST(KernelTargets, TestHookRestores) {
  ScopedBackend highway("highway");
  const Tensor x = testing::random_uniform(DType::kFloat64, {2, 9, 5}, -1, 1, 2);
  {
    ScopedTarget worst(simd_targets().back());
    (void)softmax(x);
    EXPECT_EQ(dispatched_target(), simd_targets().back());
  }
  (void)softmax(x);
  EXPECT_EQ(dispatched_target(), cpu::active_target())
      << "use_only_target_for_test(0) did not restore";
}

// --- the default backend is highway (test_conformance runs on it) -----------------

TEST(DefaultBackend, IsHighwayForTheKernelOps) {
  // ctest gives test_conformance the same environment as this test: no
  // backend forced means the conformance vectors run through the fast path.
  const char* forced = std::getenv("SPATIALSOFTMAX_BACKEND");
  EXPECT_TRUE(forced == nullptr || *forced == '\0' || std::string(forced) == "highway")
      << "SPATIALSOFTMAX_BACKEND=" << forced
      << " is set in the test environment: test_conformance does not run on highway";
  ScopedBackend unset(nullptr);
  const core::Geometry geometries[] = {{2, 19, 512 * 1024, false},
                                       {2, 19, 4096, true},
                                       {7, 300, 1, false},
                                       {3, 1, 5, false},
                                       {1, 70, 11, true}};
  for (const core::Geometry& g : geometries) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (dispatch::Op op :
           {dispatch::Op::kCrossEntropy, dispatch::Op::kSoftmax, dispatch::Op::kProbMinusTarget}) {
        EXPECT_EQ(dispatch::select(op, g, dtype, Device::cpu(), "test").name(), "highway")
            << "op " << static_cast<int>(op) << ", C " << g.classes << ", P " << g.pixels
            << (g.class_last ? " class-last " : " class-first ") << dtype_name(dtype);
      }
    }
  }
  EXPECT_EQ(dispatch::backends().back()->name(), "reference");
}

}  // namespace
}  // namespace spatialsoftmax::testing
