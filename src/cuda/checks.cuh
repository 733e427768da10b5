// The checks a CPU call makes on the host before any kernel runs (index
// labels, class and pixel weights), made on the device instead: no
// operation synchronises, so a failed check is written to the process's
// device error record (mapped host memory) and surfaces at the next
// check_device_errors or device call. The same pass takes the mean's
// denominator.
#pragma once

#include <cstdint>
#include <string>

#include "cuda/group.cuh"
#include "cuda/launch.cuh"
#include "reference/problems.h"

namespace spatialsoftmax::cuda {

// The mean's denominator as a kernel reads it: where run_checks left it, or
// a constant known on the host.
struct Denominator {
  const double* device = nullptr;
  double constant = 1;
  __device__ double value() const { return device ? *device : constant; }
};

template <class T>
struct CheckInputs {
  core::Labels labels;  // data null: no index labels
  std::int64_t count = 0;
  std::int64_t classes = 0;
  bool has_ignore_index = false;
  std::int64_t ignore_index = 0;
  const T* class_weight = nullptr;
  const T* pixel_weight = nullptr;
};

// A loss problem's device scalars (the API attaches them to every device
// problem) and what its labels' and weights' checks read.
template <class Problem>
const auto& device_scalars(const Problem& p, const char* op) {
  if (!p.device)
    throw Error(std::string("cuda backend: a ") + op + " problem without device scalars");
  return *p.device;
}
template <class T, class Problem>
CheckInputs<T> check_inputs_of(const Problem& p, const T* class_weight) {
  CheckInputs<T> in;
  in.labels = p.target_probs ? core::Labels{} : p.labels;
  in.count = p.geom.positions();
  in.classes = p.geom.classes;
  in.has_ignore_index = p.has_ignore_index;
  in.ignore_index = p.ignore_index;
  in.class_weight = class_weight;
  in.pixel_weight = p.pixel_weight;
  return in;
}

struct Checked {
  Workspace workspace;  // holds the device denominator until the caller's kernels are queued
  Denominator denominator;
};

// Queues the checks `scalars` asks for (each site that is set) and the
// denominator it names; nothing is queued when neither needs the device.
template <class T>
Checked run_checks(const CheckInputs<T>& inputs, const core::DeviceScalars<T>& scalars,
                   cudaStream_t stream, const char* op);

// The backward's factor, finish_grad of the upstream scalar.
template <class T>
__device__ inline T grad_factor(const core::DeviceScalars<T>& s, const Denominator& d) {
  const double g = s.grad ? static_cast<double>(*s.grad) : s.grad_constant;
  return static_cast<T>(core::finish_grad(s.grad_rule, g, d.value()));
}

// The block's sum of one double per thread, into partials[blockIdx.x] (a
// row kernel's share of the loss sum); nothing if partials is null.
__device__ inline void write_block_partial(double* partials, double value) {
  if (!partials) return;
  const double block = block_sum(value);
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

// The scalar loss, finish_loss of the sum of `count` per-block partials;
// one block.
template <class T>
__global__ void finish_loss_kernel(const double* partials, std::int64_t count, Denominator d,
                                   core::LossScalar rule, T* loss) {
  const double sum = sum_partials(partials, count);
  if (threadIdx.x == 0) *loss = static_cast<T>(core::finish_loss(rule, sum, d.value()));
}

// The per-block loss sums of a row kernel (where the problem asks for its
// scalar loss: s.loss) and the scalar made from them by the problem's rule.
template <class T>
class LossPartials {
 public:
  LossPartials(const core::DeviceScalars<T>& s, const core::Geometry& g, cudaStream_t stream,
               const char* op)
      : s_(s),
        blocks_(row_grid(g)),
        stream_(stream),
        op_(op),
        workspace_(s.loss ? sizeof(double) * blocks_ : 0, stream, op) {}
  // Where the row kernel writes its blocks' sums; null: no scalar wanted.
  double* sums() const { return s_.loss ? workspace_.at<double>(0) : nullptr; }
  // Queues the scalar (a sum of no blocks where there are no positions).
  void finish(const Denominator& d) const {
    if (!s_.loss) return;
    finish_loss_kernel<T><<<1, kThreads, 0, stream_>>>(sums(), blocks_, d, s_.loss_rule, s_.loss);
    check_launch(op_);
  }

 private:
  const core::DeviceScalars<T>& s_;
  unsigned blocks_;
  cudaStream_t stream_;
  const char* op_;
  Workspace workspace_;
};

}  // namespace spatialsoftmax::cuda
