// cross_entropy_backward with upstream gradients of P, log P and the entropy
// (besides the loss's) on the SIMD path against the scalar reference, in
// float64 (tight) and float32 (docs/semantics.md 5 tolerances), on every kernel path:
// pixel-lane tiles (class first), transposed tiles (class last, C < 256) and
// class-lane rows (class last or one position per image, C >= 256, with and
// without a partial vector of classes at the end of the row).
#include <gtest/gtest.h>

#include <string>

#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

Tensor backward_on(const char* backend, const Tensor& x, const Tensor& targets,
                   const CrossEntropyGrads& grads, const CrossEntropyOptions& o) {
  ScopedBackend forced(backend);
  return cross_entropy_backward(x, targets, grads, o);
}

struct UpstreamCase {
  const char* name;
  Shape shape;
  ClassAxis axis;
  bool soft;
};

class UpstreamGrads : public ::testing::TestWithParam<std::tuple<UpstreamCase, DType>> {};

TEST_P(UpstreamGrads, HighwayMatchesReference) {
  const auto& [k, dtype] = GetParam();
  const Tensor x = random_uniform(dtype, k.shape, -3, 3, 11);
  Shape positions = k.shape;
  const std::size_t class_dim = k.axis == ClassAxis::kFirst ? 1 : k.shape.size() - 1;
  positions.erase(positions.begin() + static_cast<std::ptrdiff_t>(class_dim));
  const std::int64_t classes = k.shape[class_dim];
  Tensor targets = k.soft ? random_uniform(dtype, k.shape, 0, 1, 12)
                          : random_labels(DType::kInt32, positions, classes, 12);
  if (!k.soft) set_element(targets, 2, -1);  // ignored: only the upstream terms remain
  const Tensor g_prob = random_uniform(dtype, k.shape, -1, 1, 13);
  const Tensor g_log_prob = random_uniform(dtype, k.shape, -1, 1, 14);
  const Tensor g_entropy = random_uniform(dtype, positions, -1, 1, 15);
  const Tensor g_loss = Tensor::scalar(dtype, 0.7);
  CrossEntropyOptions o;
  o.class_axis = k.axis;
  o.ignore_index = -1;
  if (k.soft) o.ignore_index.reset();
  o.label_smoothing = 0.1;
  // Each upstream gradient alone, then all together.
  for (int which = 0; which < 4; ++which) {
    SCOPED_TRACE("upstream set " + std::to_string(which));
    CrossEntropyGrads grads;
    grads.loss = g_loss.view();
    if (which == 0 || which == 3) grads.prob = g_prob.view();
    if (which == 1 || which == 3) grads.log_prob = g_log_prob.view();
    if (which == 2 || which == 3) grads.entropy = g_entropy.view();
    const Tensor want = backward_on("reference", x, targets, grads, o);
    const Tensor got = backward_on("highway", x, targets, grads, o);
    const double scale = max_abs(want);
    const double rtol = dtype == DType::kFloat32 ? 1e-5 : 1e-12;
    std::string why;
    EXPECT_TRUE(all_close(got, want, rtol, rtol / 10 * scale, &why)) << why;
  }
}

const UpstreamCase kCases[] = {
    {"nchw_c7", {2, 7, 5, 13}, ClassAxis::kFirst, false},
    {"nchw_c40", {2, 40, 3, 11}, ClassAxis::kFirst, false},
    {"nhwc_c5", {3, 4, 6, 5}, ClassAxis::kLast, false},
    {"soft_nchw", {2, 6, 4, 9}, ClassAxis::kFirst, true},
    {"soft_nhwc", {2, 3, 7, 9}, ClassAxis::kLast, true},
    {"tiles_c70", {5, 70}, ClassAxis::kLast, false},
    {"tiles_soft_c97", {6, 97}, ClassAxis::kLast, true},
    {"rows_c256", {5, 256}, ClassAxis::kLast, false},
    {"rows_nhwc_c263", {2, 3, 5, 263}, ClassAxis::kLast, false},
    {"rows_one_pixel_c300", {4, 300, 1}, ClassAxis::kFirst, false},
    {"rows_soft_c271", {6, 271}, ClassAxis::kLast, true},
};

INSTANTIATE_TEST_SUITE_P(Paths, UpstreamGrads,
                         ::testing::Combine(::testing::ValuesIn(kCases),
                                            ::testing::Values(DType::kFloat32, DType::kFloat64)),
                         [](const auto& test_info) {
                           return std::string(std::get<0>(test_info.param).name) +
                                  (std::get<1>(test_info.param) == DType::kFloat32 ? "_f32"
                                                                                   : "_f64");
                         });

}  // namespace
}  // namespace spatialsoftmax::testing
