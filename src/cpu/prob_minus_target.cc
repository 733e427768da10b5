// prob_minus_target: the Caffe2 operators' loss gradient from a saved P
// (src/api/caffe2.cc).

// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/prob_minus_target.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

#include <cstdint>

#include "cpu/blocks.h"
#include "cpu/kernels.h"
#include "cpu/labels-inl.h"
#include "reference/problems.h"

HWY_BEFORE_NAMESPACE();
namespace spatialsoftmax::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using core::Geometry;
using core::ProbMinusTargetProblem;

// Caffe2's gradient from P: dX = (P - target) * w_i * coef, 0 when ignored.
template <class T>
void prob_minus_target_impl(const ProbMinusTargetProblem<T>& pb) {
  const hn::ScalableTag<T> d;
  const hn::RebindToSigned<decltype(d)> di;
  using V = hn::Vec<decltype(d)>;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const Geometry& g = pb.geom;
  const std::int64_t C = g.classes;
  const auto coefficient = [&](std::int64_t i, Index<T>* y) {
    const std::int64_t label = pb.target_probs ? -1 : pb.labels[i];
    const bool ignored = !pb.target_probs && pb.has_ignore_index && label == pb.ignore_index;
    *y = ignored ? Index<T>(-1) : static_cast<Index<T>>(label);
    if (ignored) return T(0);
    return (pb.pixel_weight ? pb.pixel_weight[i] : T(1)) * pb.coef;
  };
  if (g.class_last || g.pixels == 1) {
    const std::int64_t full = C / N * N;
    for_each_span(g, 256, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
      for (std::int64_t i = i0; i < i0 + count; ++i) {
        Index<T> y;
        const T k = coefficient(i, &y);
        const T* p = pb.prob + i * C;
        const T* t = pb.target_probs ? pb.target_probs + i * C : nullptr;
        T* dx = pb.grad_logits + i * C;
        const bool ignored = !t && y < 0;
        // The label's class: (p - 1) * k, as the class-first path and the
        // reference round it (p * k - k would round differently); read
        // before dX is written, which may be over P.
        const T at_label = !t && !ignored ? (p[y] - T(1)) * k : T(0);
        const V kv = hn::Set(d, k);
        for (std::int64_t c = 0; c < full; c += N) {
          const V target = t ? hn::LoadU(d, t + c) : hn::Zero(d);
          hn::StoreU(ignored ? hn::Zero(d) : hn::Mul(hn::Sub(hn::LoadU(d, p + c), target), kv), d,
                     dx + c);
        }
        for (std::int64_t c = full; c < C; ++c)
          dx[c] = ignored ? T(0) : (p[c] - (t ? t[c] : T(0))) * k;
        if (!t && !ignored) dx[y] = at_label;
      }
    });
    return;
  }
  // Class first: pixels in lanes.
  for_each_span(g, 1024, [&](std::int64_t, std::int64_t i0, std::int64_t count) {
    const std::int64_t n = i0 / g.pixels, p0 = i0 % g.pixels;
    HWY_ALIGN T k[1024];
    HWY_ALIGN Index<T> y[1024];
    for (std::int64_t j = 0; j < count; ++j) k[j] = coefficient(n * g.pixels + p0 + j, &y[j]);
    const std::int64_t full = count / N * N;
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t o = g.offset(n, c, p0);
      const T* p = pb.prob + o;
      const T* t = pb.target_probs ? pb.target_probs + o : nullptr;
      T* dx = pb.grad_logits + o;
      const auto cv = hn::Set(di, static_cast<Index<T>>(c));
      for (std::int64_t j = 0; j < full; j += N) {
        const auto yv = hn::Load(di, y + j);
        const V kv = hn::Load(d, k + j);
        V target = t ? hn::LoadU(d, t + j)
                     : hn::IfThenElseZero(hn::RebindMask(d, hn::Eq(yv, cv)), hn::Set(d, T(1)));
        V g_ = hn::Mul(hn::Sub(hn::LoadU(d, p + j), target), kv);
        if (!t)
          g_ = hn::IfThenElseZero(hn::RebindMask(d, hn::Gt(yv, hn::Set(di, Index<T>(-1)))), g_);
        hn::StoreU(g_, d, dx + j);
      }
      for (std::int64_t j = full; j < count; ++j) {
        const bool ignored = !t && y[j] < 0;
        const T target = t ? t[j] : (y[j] == c ? T(1) : T(0));
        dx[j] = ignored ? T(0) : (p[j] - target) * k[j];
      }
    }
  });
}

void ProbMinusTargetF32(const ProbMinusTargetProblem<float>& pb) { prob_minus_target_impl(pb); }
void ProbMinusTargetF64(const ProbMinusTargetProblem<double>& pb) { prob_minus_target_impl(pb); }

}  // namespace HWY_NAMESPACE
}  // namespace spatialsoftmax::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace spatialsoftmax::cpu {

HWY_EXPORT(ProbMinusTargetF32);
HWY_EXPORT(ProbMinusTargetF64);

void prob_minus_target(const core::ProbMinusTargetProblem<float>& pb) {
  HWY_DYNAMIC_DISPATCH(ProbMinusTargetF32)(pb);
}
void prob_minus_target(const core::ProbMinusTargetProblem<double>& pb) {
  HWY_DYNAMIC_DISPATCH(ProbMinusTargetF64)(pb);
}

}  // namespace spatialsoftmax::cpu
#endif  // HWY_ONCE
