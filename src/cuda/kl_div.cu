// KL(target || softmax(logits)) forward and backward on the GPU: one pass
// over the rows of reference/rows.h (a thread per position class-first, a
// warp per position class-last), per-block sums in a fixed order, and the
// scalar.
#include "cuda/checks.cuh"
#include "cuda/group.cuh"
#include "cuda/kernels.h"

namespace spatialsoftmax::cuda {
namespace {

template <class T, RowMapping kMapping>
__global__ void kl_div_kernel(core::KlDivProblem<T> pb, core::DeviceScalars<T> s, Denominator d,
                              double* partials) {
  const T scale = pb.grad_logits ? grad_factor(s, d) : T(0);
  const std::int64_t positions = pb.geom.positions();
  double sum = 0;
  for_this_row<kMapping>(positions, [&](std::int64_t i, auto group, bool lead) {
    const double row = core::rows::kl_div_row(pb, i, scale, group);
    if (lead) sum += row;
  });
  write_block_partial(partials, sum);
}

}  // namespace

template <class T>
void kl_div(const core::KlDivProblem<T>& p, const ExecutionContext& context) {
  constexpr const char* op = "kl_div";
  const core::DeviceScalars<T>& s = device_scalars(p, op);
  const core::Geometry& g = p.geom;
  const cudaStream_t stream = stream_of(context);
  const Denominator d{nullptr, s.denominator};  // KL's denominators are sizes
  core::KlDivProblem<T> pb = p;
  pb.device = nullptr;
  pb.out_sum = nullptr;
  const LossPartials<T> partials(s, g, stream, op);
  double* sums = partials.sums();
  launch_rows(g, [&](auto mapping, unsigned grid) {
    kl_div_kernel<T, decltype(mapping)::value><<<grid, kThreads, 0, stream>>>(pb, s, d, sums);
  });
  check_launch(op);
  partials.finish(d);
}

template void kl_div<float>(const core::KlDivProblem<float>&, const ExecutionContext&);
template void kl_div<double>(const core::KlDivProblem<double>&, const ExecutionContext&);

}  // namespace spatialsoftmax::cuda
