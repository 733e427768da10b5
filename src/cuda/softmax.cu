// softmax, log_softmax and entropy over the class axis, and their backward,
// on the GPU (a thread per position class-first, a warp per position
// class-last: group.cuh). Every reduction runs in a fixed order, so results
// are bitwise identical from run to run; math in the input's precision, as
// on the CPU.
#include "cuda/group.cuh"
#include "cuda/kernels.h"

namespace spatialsoftmax::cuda {
namespace {

template <class T, RowMapping kMapping>
__global__ void softmax_kernel(core::SoftmaxProblem<T> p) {
  const core::Geometry& g = p.geom;
  for_this_row<kMapping>(g.positions(), [&](std::int64_t i, auto group, bool lead) {
    const std::int64_t b = g.base(i), cs = g.class_stride();
    const T* x = p.logits + b;
    const core::rows::RowSoftmax<T> sm = core::rows::row_softmax(x, cs, g.classes, group);
    T h = 0;
    for (std::int64_t c = group.first; c < g.classes; c += group.step) {
      const T prob = sm.prob(x[c * cs]), log_prob = sm.log_prob(x[c * cs]);
      if (p.prob) p.prob[b + c * cs] = prob;
      if (p.log_prob) p.log_prob[b + c * cs] = log_prob;
      if (prob != 0 || prob != prob) h -= prob * log_prob;  // 0 log 0 = 0
    }
    if (p.entropy) {
      h = group.sum(h);
      if (lead) p.entropy[i] = h;
    }
  });
}

// dX from the output y and its upstream gradient: from softmax
// dX = p (g - sum p g); from log_softmax dX = g - exp(logp) sum g.
template <class T, RowMapping kMapping>
__global__ void softmax_backward_kernel(core::SoftmaxBackwardProblem<T> p) {
  const core::Geometry& g = p.geom;
  for_this_row<kMapping>(g.positions(), [&](std::int64_t i, auto group, bool) {
    const std::int64_t b = g.base(i), cs = g.class_stride();
    const T* y = p.output + b;
    const T* gy = p.grad_output + b;
    T dot = 0;
    for (std::int64_t c = group.first; c < g.classes; c += group.step)
      dot += p.from_log_softmax ? gy[c * cs] : y[c * cs] * gy[c * cs];
    dot = group.sum(dot);
    for (std::int64_t c = group.first; c < g.classes; c += group.step) {
      const std::int64_t o = c * cs;
      p.grad_logits[b + o] =
          p.from_log_softmax ? gy[o] - core::rows::exp_of(y[o]) * dot : y[o] * (gy[o] - dot);
    }
  });
}

}  // namespace

template <class T>
void softmax(const core::SoftmaxProblem<T>& p, const ExecutionContext& context) {
  const cudaStream_t stream = stream_of(context);
  launch_rows(p.geom, [&](auto mapping, unsigned grid) {
    softmax_kernel<T, decltype(mapping)::value><<<grid, kThreads, 0, stream>>>(p);
  });
  check_launch("softmax");
}

template <class T>
void softmax_backward(const core::SoftmaxBackwardProblem<T>& p, const ExecutionContext& context) {
  const cudaStream_t stream = stream_of(context);
  launch_rows(p.geom, [&](auto mapping, unsigned grid) {
    softmax_backward_kernel<T, decltype(mapping)::value><<<grid, kThreads, 0, stream>>>(p);
  });
  check_launch("softmax_backward");
}

template void softmax<float>(const core::SoftmaxProblem<float>&, const ExecutionContext&);
template void softmax<double>(const core::SoftmaxProblem<double>&, const ExecutionContext&);
template void softmax_backward<float>(const core::SoftmaxBackwardProblem<float>&,
                                      const ExecutionContext&);
template void softmax_backward<double>(const core::SoftmaxBackwardProblem<double>&,
                                       const ExecutionContext&);

}  // namespace spatialsoftmax::cuda
