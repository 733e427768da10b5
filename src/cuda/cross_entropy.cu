// Cross-entropy (index or probability targets, NLL, every option) forward,
// backward and fused, on the GPU: the device's checks and denominator
// (checks.cuh), one pass over X computing the rows of reference/rows.h (a
// thread per position class-first, where neighbouring positions are
// neighbours in memory; a warp per position class-last, where a row is
// contiguous), per-block loss sums in a fixed order, and the scalar loss.
#include "cuda/checks.cuh"
#include "cuda/group.cuh"
#include "cuda/kernels.h"

namespace spatialsoftmax::cuda {
namespace {

// kStaged (block-mapped rows only): each row is first copied into dynamic
// shared memory, so that the row's several passes read X from HBM once.
template <class T, RowMapping kMapping, bool kStaged>
__global__ void cross_entropy_kernel(core::CrossEntropyProblem<T> pb, core::DeviceScalars<T> s,
                                     Denominator d, double* partials) {
  extern __shared__ __align__(16) unsigned char staging[];
  const T scale = pb.grad_logits ? grad_factor(s, d) : T(0);
  const std::int64_t positions = pb.geom.positions();
  double loss = 0;
  for_this_row<kMapping>(positions, [&](std::int64_t i, auto group, bool lead) {
    const T* row = nullptr;
    if constexpr (kStaged) {
      T* copy = reinterpret_cast<T*>(staging);
      const T* x = pb.logits + pb.geom.base(i);
      for (std::int64_t c = threadIdx.x; c < pb.geom.classes; c += kThreads) copy[c] = x[c];
      __syncthreads();
      row = copy;
    }
    const T l = core::rows::cross_entropy_row(pb, i, scale, group, row);
    if constexpr (kStaged) __syncthreads();  // before the next row overwrites the copy
    if (lead) loss += static_cast<double>(l);
  });
  write_block_partial(partials, loss);
}

}  // namespace

template <class T>
void cross_entropy(const core::CrossEntropyProblem<T>& p, const ExecutionContext& context) {
  constexpr const char* op = "cross_entropy";
  const core::DeviceScalars<T>& s = device_scalars(p, op);
  const core::Geometry& g = p.geom;
  const cudaStream_t stream = stream_of(context);
  const CheckInputs<T> in = check_inputs_of(p, p.class_weight);
  const Checked checked = run_checks(in, s, stream, op);

  core::CrossEntropyProblem<T> pb = p;  // the kernel's copy: device pointers only
  pb.device = nullptr;
  pb.label_check = nullptr;
  pb.loss_sum = nullptr;
  const LossPartials<T> partials(s, g, stream, op);
  double* sums = partials.sums();
  const std::size_t staging = row_staging_bytes(g, sizeof(T));
  launch_rows(g, [&](auto mapping, unsigned grid) {
    constexpr RowMapping kMapping = decltype(mapping)::value;
    if constexpr (kMapping == RowMapping::kBlock) {
      if (staging > 0) {
        const auto kernel = cross_entropy_kernel<T, kMapping, true>;
        allow_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), staging, op);
        kernel<<<grid, kThreads, staging, stream>>>(pb, s, checked.denominator, sums);
        return;
      }
    }
    cross_entropy_kernel<T, kMapping, false>
        <<<grid, kThreads, 0, stream>>>(pb, s, checked.denominator, sums);
  });
  check_launch(op);
  partials.finish(checked.denominator);  // with no positions: the checks and the scalar only
}

template void cross_entropy<float>(const core::CrossEntropyProblem<float>&,
                                   const ExecutionContext&);
template void cross_entropy<double>(const core::CrossEntropyProblem<double>&,
                                    const ExecutionContext&);

}  // namespace spatialsoftmax::cuda
