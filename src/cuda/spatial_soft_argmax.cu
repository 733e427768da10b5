// The spatial softmax and soft-argmax (docs/semantics.md 4) on the GPU: a
// block per (n, channel) reduces over its pixels in float64, in a fixed
// order (each thread's pixels in turn, then block_sum's tree), so results
// are bitwise identical from run to run. The coordinates come from
// core::spatial_coordinate, the rule the host's tables are made from. The
// temperature's gradient is left to the host path (it would need a wait).
#include <cmath>

#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace spatialsoftmax::cuda {
namespace {

using spatialsoftmax::kMaxSpatialRank;

template <class T>
__device__ void coordinates_of(const core::SpatialSoftArgmaxProblem<T>& pb, std::int64_t p,
                               double* u) {
  for (int axis = pb.spatial_rank - 1, a = 0; axis >= 0; --axis, ++a) {
    const std::int64_t length = pb.dims[axis];
    u[a] = core::spatial_coordinate(p % length, length, pb.pixel_coordinates, pb.singleton_center);
    p /= length;
  }
}

// The channel's max and sum of exp(beta (x - max)), and its expected
// coordinates; every thread of the block gets them.
template <class T>
struct ChannelSoftmax {
  double max = 0, sum = 0;
  double e[kMaxSpatialRank] = {};
  __device__ double weight(double x, double beta) const { return exp(beta * (x - max)) / sum; }
};

template <class T>
__device__ ChannelSoftmax<T> channel_softmax(const core::SpatialSoftArgmaxProblem<T>& pb,
                                             std::int64_t n, std::int64_t c) {
  const core::Geometry& g = pb.geom;
  ChannelSoftmax<T> cs;
  double m = -INFINITY;
  for (std::int64_t p = threadIdx.x; p < g.pixels; p += kThreads) {
    const double v = static_cast<double>(pb.input[g.offset(n, c, p)]);
    if (v > m || v != v) m = v;
  }
  cs.max = block_max(m);
  double s = 0;
  for (std::int64_t p = threadIdx.x; p < g.pixels; p += kThreads) {
    s += exp(pb.beta * (static_cast<double>(pb.input[g.offset(n, c, p)]) - cs.max));
  }
  cs.sum = block_sum(s);
  double e[kMaxSpatialRank] = {}, u[kMaxSpatialRank];
  for (std::int64_t p = threadIdx.x; p < g.pixels; p += kThreads) {
    const double w = cs.weight(static_cast<double>(pb.input[g.offset(n, c, p)]), pb.beta);
    coordinates_of(pb, p, u);
    for (int a = 0; a < pb.spatial_rank; ++a) e[a] += w * u[a];
  }
  for (int a = 0; a < pb.spatial_rank; ++a) cs.e[a] = block_sum(e[a]);
  return cs;
}

// Channel nc of a block's channels (blockIdx.x, + gridDim.x, ...).
template <class T>
__device__ void soft_argmax_channel(const core::SpatialSoftArgmaxProblem<T>& pb, std::int64_t nc) {
  const core::Geometry& g = pb.geom;
  const std::int64_t n = nc / g.classes, c = nc % g.classes;
  const int k = pb.spatial_rank;
  const ChannelSoftmax<T> cs = channel_softmax(pb, n, c);
  double u[kMaxSpatialRank];
  double second[kMaxSpatialRank][kMaxSpatialRank] = {};
  for (std::int64_t p = threadIdx.x; p < g.pixels; p += kThreads) {
    const double w = cs.weight(static_cast<double>(pb.input[g.offset(n, c, p)]), pb.beta);
    if (pb.softmax) pb.softmax[g.offset(n, c, p)] = static_cast<T>(w);
    if (!pb.covariance) continue;
    coordinates_of(pb, p, u);
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) second[a][b] += w * u[a] * u[b];
  }
  if (pb.covariance) {
    for (int a = 0; a < k; ++a) {
      for (int b = 0; b < k; ++b) {
        const double moment = block_sum(second[a][b]);
        if (threadIdx.x == 0) {
          pb.covariance[(nc * k + a) * k + b] = static_cast<T>(moment - cs.e[a] * cs.e[b]);
        }
      }
    }
  }
  if (pb.keypoints && threadIdx.x == 0) {
    for (int a = 0; a < k; ++a) pb.keypoints[nc * k + a] = static_cast<T>(cs.e[a]);
  }
}

// h_p = dLoss/dS_p from the upstream gradients of S, the keypoints and the
// covariance; dX_p = beta S_p (h_p - sum_q S_q h_q).
template <class T>
__device__ double upstream_of_pixel(const core::SpatialSoftArgmaxProblem<T>& pb,
                                    const ChannelSoftmax<T>& cs, std::int64_t n, std::int64_t c,
                                    std::int64_t p) {
  const core::Geometry& g = pb.geom;
  const std::int64_t nc = n * g.classes + c;
  const int k = pb.spatial_rank;
  double u[kMaxSpatialRank];
  coordinates_of(pb, p, u);
  double h = pb.grad_softmax ? static_cast<double>(pb.grad_softmax[g.offset(n, c, p)]) : 0.0;
  for (int a = 0; a < k; ++a) {
    if (pb.grad_keypoints) h += pb.grad_keypoints[nc * k + a] * u[a];
    for (int b = 0; b < k && pb.grad_covariance; ++b) {
      h += pb.grad_covariance[(nc * k + a) * k + b] *
           (u[a] * u[b] - u[a] * cs.e[b] - cs.e[a] * u[b]);
    }
  }
  return h;
}

template <class T>
__device__ void soft_argmax_backward_channel(const core::SpatialSoftArgmaxProblem<T>& pb,
                                             std::int64_t nc) {
  const core::Geometry& g = pb.geom;
  const std::int64_t n = nc / g.classes, c = nc % g.classes;
  const ChannelSoftmax<T> cs = channel_softmax(pb, n, c);
  double mean = 0;
  for (std::int64_t p = threadIdx.x; p < g.pixels; p += kThreads) {
    const double w = cs.weight(static_cast<double>(pb.input[g.offset(n, c, p)]), pb.beta);
    mean += w * upstream_of_pixel(pb, cs, n, c, p);
  }
  mean = block_sum(mean);
  for (std::int64_t p = threadIdx.x; p < g.pixels; p += kThreads) {
    const std::int64_t o = g.offset(n, c, p);
    const double w = cs.weight(static_cast<double>(pb.input[o]), pb.beta);
    pb.grad_input[o] = static_cast<T>(pb.beta * (w * (upstream_of_pixel(pb, cs, n, c, p) - mean)));
  }
}

template <class T>
core::SpatialSoftArgmaxProblem<T> device_copy(const core::SpatialSoftArgmaxProblem<T>& p) {
  core::SpatialSoftArgmaxProblem<T> pb = p;
  for (auto& table : pb.coordinate) table = nullptr;  // host tables
  pb.grad_beta = nullptr;
  return pb;
}

// A block per channel, at most kMaxChannelBlocks (each block then takes
// every gridDim.x-th channel); block-uniform, so block_sum stays legal.
constexpr std::int64_t kMaxChannelBlocks = std::int64_t{1} << 20;

template <class T>
__global__ void soft_argmax_kernel(core::SpatialSoftArgmaxProblem<T> pb) {
  for (std::int64_t nc = blockIdx.x; nc < pb.geom.batch * pb.geom.classes; nc += gridDim.x)
    soft_argmax_channel(pb, nc);
}

template <class T>
__global__ void soft_argmax_backward_kernel(core::SpatialSoftArgmaxProblem<T> pb) {
  for (std::int64_t nc = blockIdx.x; nc < pb.geom.batch * pb.geom.classes; nc += gridDim.x)
    soft_argmax_backward_channel(pb, nc);
}

unsigned channel_blocks(const core::Geometry& g) {
  const std::int64_t channels = g.batch * g.classes;
  return static_cast<unsigned>(channels < kMaxChannelBlocks ? channels : kMaxChannelBlocks);
}

}  // namespace

template <class T>
void spatial_soft_argmax(const core::SpatialSoftArgmaxProblem<T>& p,
                         const ExecutionContext& context) {
  if (channel_blocks(p.geom) == 0) return;
  soft_argmax_kernel<T>
      <<<channel_blocks(p.geom), kThreads, 0, stream_of(context)>>>(device_copy(p));
  check_launch("spatial_soft_argmax");
}

template <class T>
void spatial_soft_argmax_backward(const core::SpatialSoftArgmaxProblem<T>& p,
                                  const ExecutionContext& context) {
  if (channel_blocks(p.geom) == 0) return;
  soft_argmax_backward_kernel<T>
      <<<channel_blocks(p.geom), kThreads, 0, stream_of(context)>>>(device_copy(p));
  check_launch("spatial_soft_argmax_backward");
}

template void spatial_soft_argmax<float>(const core::SpatialSoftArgmaxProblem<float>&,
                                         const ExecutionContext&);
template void spatial_soft_argmax<double>(const core::SpatialSoftArgmaxProblem<double>&,
                                          const ExecutionContext&);
template void spatial_soft_argmax_backward<float>(const core::SpatialSoftArgmaxProblem<float>&,
                                                  const ExecutionContext&);
template void spatial_soft_argmax_backward<double>(const core::SpatialSoftArgmaxProblem<double>&,
                                                   const ExecutionContext&);

}  // namespace spatialsoftmax::cuda
