// Caffe2's gradient from a supplied P on the GPU: the device's checks of
// the labels and weights and the total weight (checks.cuh), then
// dX = (P - target) * a_i * coef with coef from the grad rule, a thread per
// position class-first and a warp per position class-last.
#include "cuda/checks.cuh"
#include "cuda/group.cuh"
#include "cuda/kernels.h"

namespace spatialsoftmax::cuda {
namespace {

template <class T, RowMapping kMapping>
__global__ void prob_minus_target_kernel(core::ProbMinusTargetProblem<T> pb,
                                         core::DeviceScalars<T> s, Denominator d) {
  const T coef = grad_factor(s, d);
  const std::int64_t positions = pb.geom.positions();
  for_this_row<kMapping>(positions, [&](std::int64_t i, auto group, bool) {
    core::rows::prob_minus_target_row(pb, i, coef, group);
  });
}

}  // namespace

template <class T>
void prob_minus_target(const core::ProbMinusTargetProblem<T>& p, const ExecutionContext& context) {
  constexpr const char* op = "prob_minus_target";
  const core::DeviceScalars<T>& s = device_scalars(p, op);
  const core::Geometry& g = p.geom;
  const cudaStream_t stream = stream_of(context);
  const CheckInputs<T> in = check_inputs_of(p, static_cast<const T*>(nullptr));
  const Checked checked = run_checks(in, s, stream, op);
  core::ProbMinusTargetProblem<T> pb = p;
  pb.device = nullptr;
  launch_rows(g, [&](auto mapping, unsigned grid) {
    prob_minus_target_kernel<T, decltype(mapping)::value>
        <<<grid, kThreads, 0, stream>>>(pb, s, checked.denominator);
  });
  check_launch(op);
}

template void prob_minus_target<float>(const core::ProbMinusTargetProblem<float>&,
                                       const ExecutionContext&);
template void prob_minus_target<double>(const core::ProbMinusTargetProblem<double>&,
                                        const ExecutionContext&);

}  // namespace spatialsoftmax::cuda
