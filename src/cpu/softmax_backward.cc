// softmax_backward: the backward of softmax and log_softmax from their output.

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/softmax_backward.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <cstdint>

#include "cpu/blocks.h"
#include "cpu/kernels.h"
#include "cpu/math-inl.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::Geometry;

// Backward of softmax (dX = p * (g - sum_j p_j g_j)) or log_softmax
// (dX = g - exp(y) * sum_j g_j). Class first: pixels in lanes, the sum over
// classes in class order per lane. Class last (or P = 1): one position at a
// time, in class order too, so that both layouts give the same bits.
template <class T>
void softmax_backward_impl(const core::SoftmaxBackwardProblem<T>& pb) {
  const hn::ScalableTag<T> d;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const Geometry& g = pb.geom;
  const std::int64_t C = g.classes;
  const bool log = pb.from_log_softmax;
  // One position, classes at stride cs: the lane code's operations on
  // one-lane vectors, so that every position gets the same bits whatever
  // its layout or place in a tile (no compiler contraction into FMA).
  const hn::CappedTag<T, 1> d1;
  using V1 = hn::Vec<decltype(d1)>;
  const auto position = [&](std::int64_t b, std::int64_t cs) {
    const T* y = pb.output + b;
    const T* gy = pb.grad_output + b;
    V1 dot = hn::Zero(d1);
    for (std::int64_t c = 0; c < C; ++c) {
      const V1 g1 = hn::Set(d1, gy[c * cs]);
      dot = hn::Add(dot, log ? g1 : hn::Mul(hn::Set(d1, y[c * cs]), g1));
    }
    for (std::int64_t c = 0; c < C; ++c) {
      const V1 y1 = hn::Set(d1, y[c * cs]), g1 = hn::Set(d1, gy[c * cs]);
      const V1 dx =
          log ? hn::Sub(g1, hn::Mul(ExpNonPositive(d1, y1), dot)) : hn::Mul(y1, hn::Sub(g1, dot));
      pb.grad_logits[b + c * cs] = hn::GetLane(dx);
    }
  };
  if (g.class_last || g.pixels == 1) {
    for_each_span(g, 1024, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
      for (std::int64_t i = i0; i < i0 + count; ++i) position(i * C, 1);
    });
    return;
  }
  for_each_span(g, 1024, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
    const std::int64_t n = i0 / g.pixels, p0 = i0 % g.pixels;
    const std::int64_t full = count / N * N;
    const std::int64_t base = g.offset(n, 0, p0), st = g.pixels;
    for (std::int64_t j = 0; j < full; j += N) {
      V dot = hn::Zero(d);
      for (std::int64_t c = 0; c < C; ++c) {
        const V gy = hn::LoadU(d, pb.grad_output + base + c * st + j);
        dot = hn::Add(dot, log ? gy : hn::Mul(hn::LoadU(d, pb.output + base + c * st + j), gy));
      }
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t o = base + c * st + j;
        const V y = hn::LoadU(d, pb.output + o), gy = hn::LoadU(d, pb.grad_output + o);
        const V dx =
            log ? hn::Sub(gy, hn::Mul(ExpNonPositive(d, y), dot)) : hn::Mul(y, hn::Sub(gy, dot));
        hn::StoreU(dx, d, pb.grad_logits + o);
      }
    }
    for (std::int64_t j = full; j < count; ++j) position(base + j, st);
  });
}

void SoftmaxBackwardF32(const core::SoftmaxBackwardProblem<float>& pb) {
  softmax_backward_impl(pb);
}
void SoftmaxBackwardF64(const core::SoftmaxBackwardProblem<double>& pb) {
  softmax_backward_impl(pb);
}

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(SoftmaxBackwardF32);
HWY_EXPORT(SoftmaxBackwardF64);

void softmax_backward(const core::SoftmaxBackwardProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftmaxBackwardF32)(pb);
}
void softmax_backward(const core::SoftmaxBackwardProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(SoftmaxBackwardF64)(pb);
}

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
