// Every path of the loss kernels (plain, smoothed and transposed tiles,
// rows; streamed and staged outputs): a bad label is named by the kernels'
// check on every SIMD target (one test instance per target, named by it), and
// outputs large enough to be streamed match the reference and are bitwise
// equal across thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "kernel_test_support.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

// --- the label scan ----------------------------------------------------------------

// The labels checked inside the kernels (forward passes, and backward ones
// whose mean's denominator is M): a bad label raises the API's error naming
// the first one, on every kernel path, target, label type and backend.
class LabelScan : public PerTarget {};

TEST_P(LabelScan, KernelCheckNamesTheFirstBadLabelOnEveryPath) {
  struct Path {
    const char* name;
    Shape shape;  // logits
    ClassAxis axis;
    double smoothing;
  };
  const Path paths[] = {
      {"plain tiles", {2, 19, 37, 41}, ClassAxis::kFirst, 0.0},
      {"tiles with smoothing", {2, 19, 37, 41}, ClassAxis::kFirst, 0.1},
      {"transposed tiles", {2, 37, 41, 5}, ClassAxis::kLast, 0.0},
      {"rows", {3000, 300}, ClassAxis::kLast, 0.0},
  };
  for (const Path& path : paths) {
    SCOPED_TRACE(path.name);
    const Tensor x = testing::random_uniform(DType::kFloat32, path.shape, -2, 2, 5);
    Shape positions = path.shape;
    positions.erase(positions.begin() + (path.axis == ClassAxis::kFirst
                                             ? 1
                                             : static_cast<std::ptrdiff_t>(positions.size()) - 1));
    const std::int64_t C = path.shape[path.axis == ClassAxis::kFirst ? 1 : path.shape.size() - 1];
    std::int64_t M = 1;
    for (std::int64_t d : positions) M *= d;
    for (const DType label_type : {DType::kInt32, DType::kInt64}) {
      for (const std::int64_t first_bad : {std::int64_t{0}, M / 2 + 1, M - 1}) {
        Tensor labels = testing::random_labels(label_type, positions, C, 6);
        testing::set_element(labels, first_bad, static_cast<double>(C));
        if (first_bad + 7 < M) testing::set_element(labels, first_bad + 7, -3);
        CrossEntropyOptions o;
        o.class_axis = path.axis;
        o.label_smoothing = path.smoothing;
        const std::string index =
            "flat index " + std::to_string(first_bad) + ") = " + std::to_string(C);
        for (const char* backend : {"highway", "reference"}) {
          SCOPED_TRACE(backend);
          ScopedEnv forced("SPATIALSOFTMAX_BACKEND", backend);
          EXPECT_ERROR_MENTIONS(cross_entropy(x, labels, o), {"targets", index});
          o.reduction = Reduction::kSum;  // fused without ignore_index: checked in the kernel too
          EXPECT_ERROR_MENTIONS(cross_entropy_forward_backward(x, labels, o), {"targets", index});
          o.reduction = Reduction::kMean;
          if (path.smoothing == 0) {
            EXPECT_ERROR_MENTIONS(nll_loss(x, labels, o), {"labels", index});
          }
        }
      }
    }
  }
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(LabelScan);

// --- outputs large enough to be streamed ----------------------------------------------

// Outputs of 16 MiB and more go around the cache (streaming stores, staged
// where they are not aligned); every such path against the reference, and
// bitwise equal across thread counts: plain class-first tiles, class-last
// tiles, rows streamed from pass 3 (C a multiple of every lane count) and
// rows staged (C = 521), with dX and P both written.
TEST(StreamedOutputs, MatchTheReferenceOnEveryPath) {
  struct Case {
    const char* name;
    Shape shape;  // logits
    ClassAxis axis;
  };
  const Case cases[] = {
      {"class-first tiles", {2, 19, 256, 512}, ClassAxis::kFirst},
      {"class-last tiles", {2, 256, 512, 19}, ClassAxis::kLast},
      {"rows streamed from pass 3", {8192, 512}, ClassAxis::kLast},
      {"rows staged", {8000, 521}, ClassAxis::kLast},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const Tensor x = testing::random_uniform(DType::kFloat32, k.shape, -5, 5, 21);
    Shape positions = k.shape;
    const std::size_t class_dim = k.axis == ClassAxis::kFirst ? 1 : k.shape.size() - 1;
    const std::int64_t C = k.shape[class_dim];
    positions.erase(positions.begin() + static_cast<std::ptrdiff_t>(class_dim));
    Tensor labels = testing::random_labels(DType::kInt64, positions, C, 22);
    for (std::int64_t i = 0; i < labels.numel(); i += 11) testing::set_element(labels, i, -100);
    CrossEntropyOptions o = CrossEntropyOptions::pytorch();
    o.class_axis = k.axis;
    o.want_prob = true;
    const auto run = [&](const char* backend) {
      ScopedEnv forced("SPATIALSOFTMAX_BACKEND", backend);
      return cross_entropy_forward_backward(x, labels, o);
    };
    const CrossEntropyResult want = run("reference");
    const CrossEntropyResult got = run("highway");
    std::string why;
    EXPECT_TRUE(all_close(got.prob, want.prob, 1e-5, 1e-6, &why)) << "P: " << why;
    EXPECT_TRUE(
        all_close(got.grad_logits, want.grad_logits, 1e-5, 1e-6 * max_abs(want.grad_logits), &why))
        << "dX: " << why;
    EXPECT_NEAR(got.loss.at(0), want.loss.at(0), 1e-5 * std::abs(want.loss.at(0)));
    check_thread_counts([&] {
      Snapshot snap;
      CrossEntropyResult r = cross_entropy_forward_backward(x, labels, o);
      snap.scalars.push_back(r.loss.at(0));
      snap.tensors.push_back(std::move(r.prob));
      snap.tensors.push_back(std::move(r.grad_logits));
      return snap;
    });
  }
}

}  // namespace
}  // namespace spatialsoftmax::testing
