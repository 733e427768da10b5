// The device's checks of labels and weights (checks.cuh) and the process's
// device error record.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "cuda/checks.cuh"
#include "cuda/kernels.h"

namespace spatialsoftmax::cuda {
namespace {

// The first error since the last take_error. `state` goes 0 (empty) -> 1
// (a kernel is writing `error`) -> 2 (complete, the host may read it) -> 0
// (taken). In mapped, portable host memory: every device writes it without
// a copy, and the host reads it without a synchronisation.
struct ErrorSlot {
  unsigned int state;
  core::DeviceError error;
};

std::atomic<ErrorSlot*> g_slot{nullptr};
ErrorSlot* g_device_slot = nullptr;  // the same memory as kernels address it; set with g_slot

// Allocated by the first device call (dispatch's check_device, so before any
// kernel that may record an error); take_error before then finds nothing,
// without touching the CUDA runtime. The allocation is made in the relaxed
// capture mode, so that a first call inside a CUDA graph capture does not
// invalidate it, and a failed one is tried again by the next call. Returns
// the kernels' address of the record.
ErrorSlot* device_error_slot(std::string_view op) {
  static std::mutex mutex;
  if (g_slot.load(std::memory_order_acquire)) return g_device_slot;
  const std::lock_guard lock(mutex);
  if (g_slot.load(std::memory_order_relaxed)) return g_device_slot;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  check_cuda(cudaThreadExchangeStreamCaptureMode(&mode), op, "cudaThreadExchangeStreamCaptureMode");
  void* host = nullptr;
  cudaError_t status =
      cudaHostAlloc(&host, sizeof(ErrorSlot), cudaHostAllocMapped | cudaHostAllocPortable);
  ErrorSlot* device = nullptr;
  if (status == cudaSuccess) {
    static_cast<ErrorSlot*>(host)->state = 0;
    status = cudaHostGetDevicePointer(reinterpret_cast<void**>(&device), host, 0);
    if (status != cudaSuccess) cudaFreeHost(host);
  }
  cudaThreadExchangeStreamCaptureMode(&mode);  // back to the caller's mode
  check_cuda(status, op, "allocating the device error record (cudaHostAlloc)");
  g_device_slot = device;
  g_slot.store(static_cast<ErrorSlot*>(host), std::memory_order_release);
  return g_device_slot;
}

__device__ void record_error(ErrorSlot* slot, const core::DeviceError& error) {
  // System scope: every GPU of the process shares the record.
  if (atomicCAS_system(&slot->state, 0u, 1u) != 0u) return;  // an earlier error is waiting
  slot->error = error;
  __threadfence_system();
  atomicExch_system(&slot->state, 2u);
}

constexpr unsigned long long kNone = ULLONG_MAX;
constexpr int kMaxCheckBlocks = 1024;
// Per block: the label total and the pixel-weight sum.
constexpr int kPartialsPerBlock = 2;

template <class T>
__device__ bool good_weight(T w) {
  return isfinite(w) && w >= 0;
}

// bad[0..2]: the first bad class weight, pixel weight and label (atomicMin
// of an integer: the same result in any order).
template <class T>
__global__ void check_kernel(CheckInputs<T> in, bool check_class, bool check_pixel,
                             bool check_labels, unsigned long long* bad, double* partials) {
  double label_total = 0, pixel_sum = 0;
  const std::int64_t n = in.count > in.classes ? in.count : in.classes;
  const std::int64_t stride = std::int64_t{gridDim.x} * kThreads;
  for (std::int64_t i = blockIdx.x * std::int64_t{kThreads} + threadIdx.x; i < n; i += stride) {
    if (check_class && i < in.classes && !good_weight(in.class_weight[i])) {
      atomicMin(&bad[0], static_cast<unsigned long long>(i));
    }
    if (i >= in.count) continue;
    const T a = in.pixel_weight ? in.pixel_weight[i] : T(1);
    if (check_pixel && !good_weight(a)) atomicMin(&bad[1], static_cast<unsigned long long>(i));
    pixel_sum += static_cast<double>(a);
    if (!check_labels) continue;
    const std::int64_t y = in.labels[i];
    if (in.has_ignore_index && y == in.ignore_index) continue;
    if (y < 0 || y >= in.classes) {
      atomicMin(&bad[2], static_cast<unsigned long long>(i));
      continue;
    }
    label_total +=
        static_cast<double>(a) * static_cast<double>(in.class_weight ? in.class_weight[y] : T(1));
  }
  label_total = block_sum(label_total);
  pixel_sum = block_sum(pixel_sum);
  if (threadIdx.x == 0) {
    partials[blockIdx.x * kPartialsPerBlock] = label_total;
    partials[blockIdx.x * kPartialsPerBlock + 1] = pixel_sum;
  }
}

template <class T>
__device__ core::DeviceError weight_error(const core::ErrorSite& site, std::int64_t index, T w) {
  core::DeviceError e;
  e.kind = core::DeviceError::Kind::kWeight;
  e.site = site;
  e.flat_index = index;
  e.weight = static_cast<double>(w);
  return e;
}

// One block: the denominator, and the first failed check into the record
// (in the CPU's order of checks: class weights, pixel weights, labels).
template <class T>
__global__ void finish_checks_kernel(CheckInputs<T> in, core::DeviceScalars<T> s,
                                     const unsigned long long* bad, const double* partials,
                                     int blocks, double* denominator, ErrorSlot* slot) {
  const double label_total = sum_partials(partials, blocks, kPartialsPerBlock);
  const double pixel_sum = sum_partials(partials + 1, blocks, kPartialsPerBlock);
  if (threadIdx.x != 0) return;
  switch (s.denominator_from) {
    case core::DenominatorFrom::kConstant:
      *denominator = s.denominator;
      break;
    case core::DenominatorFrom::kLabelWeights:
      *denominator = label_total;
      break;
    case core::DenominatorFrom::kPixelWeights:
      *denominator = pixel_sum;
      break;
  }
  if (bad[0] != kNone) {
    const auto i = static_cast<std::int64_t>(bad[0]);
    record_error(slot, weight_error(s.class_weight_site, i, in.class_weight[i]));
  } else if (bad[1] != kNone) {
    const auto i = static_cast<std::int64_t>(bad[1]);
    record_error(slot, weight_error(s.pixel_weight_site, i, in.pixel_weight[i]));
  } else if (bad[2] != kNone) {
    core::DeviceError e;
    e.kind = core::DeviceError::Kind::kLabel;
    e.site = s.label_site;
    e.flat_index = static_cast<std::int64_t>(bad[2]);
    e.label = in.labels[e.flat_index];
    record_error(slot, e);
  }
}

}  // namespace

template <class T>
Checked run_checks(const CheckInputs<T>& in, const core::DeviceScalars<T>& s, cudaStream_t stream,
                   const char* op) {
  const bool check_class = s.class_weight_site.op != 0 && in.class_weight;
  const bool check_pixel = s.pixel_weight_site.op != 0 && in.pixel_weight;
  const bool check_labels = s.label_site.op != 0 && in.labels.data;
  const bool device_denominator = s.denominator_from != core::DenominatorFrom::kConstant;
  if (!check_class && !check_pixel && !check_labels && !device_denominator) {
    return {Workspace(0, stream, op), Denominator{nullptr, s.denominator}};
  }
  ErrorSlot* device_slot = device_error_slot(op);
  const std::int64_t n = in.count > in.classes ? in.count : in.classes;
  const int blocks = static_cast<int>(
      std::min<std::int64_t>(std::max<std::int64_t>(blocks_for(n), 1), kMaxCheckBlocks));
  // bad[3], the denominator, then the partials.
  const std::size_t bad_bytes = 3 * sizeof(unsigned long long);
  const std::size_t partials_offset = bad_bytes + sizeof(double);
  Workspace ws(partials_offset + sizeof(double) * kPartialsPerBlock * blocks, stream, op);
  auto* bad = ws.at<unsigned long long>(0);
  auto* denominator = ws.at<double>(bad_bytes);
  auto* partials = ws.at<double>(partials_offset);
  check_cuda(cudaMemsetAsync(bad, 0xff, bad_bytes, stream), op, "cudaMemsetAsync");
  check_kernel<T>
      <<<blocks, kThreads, 0, stream>>>(in, check_class, check_pixel, check_labels, bad, partials);
  check_launch(op);
  finish_checks_kernel<T>
      <<<1, kThreads, 0, stream>>>(in, s, bad, partials, blocks, denominator, device_slot);
  check_launch(op);
  return {std::move(ws), Denominator{denominator, s.denominator}};
}

void check_current_device(int index, std::string_view op) {
  int current = -1;
  const cudaError_t e = cudaGetDevice(&current);
  if (e != cudaSuccess) {
    throw Error(std::string(op) + ": the tensors are on cuda:" + std::to_string(index) +
                ", and cudaGetDevice failed: " + cudaGetErrorString(e));
  }
  if (current != index) {
    throw Error(std::string(op) + ": the tensors are on cuda:" + std::to_string(index) +
                ", expected the current CUDA device (cuda:" + std::to_string(current) +
                "; cudaSetDevice or torch.cuda.device selects it)");
  }
  device_error_slot(op);  // before any kernel that may record an error
}

bool take_error(const ExecutionContext& context, bool wait, core::DeviceError* error) {
  constexpr const char* op = "check_device_errors";
  // No check ever ran: nothing to wait for (and no GPU needed to say so).
  ErrorSlot* slot = g_slot.load(std::memory_order_acquire);
  if (!slot) return false;
  if (wait) check_cuda(cudaStreamSynchronize(stream_of(context)), op, "cudaStreamSynchronize");
  std::atomic_ref<unsigned int> state(slot->state);
  if (state.load(std::memory_order_acquire) != 2u) return false;
  *error = slot->error;
  state.store(0u, std::memory_order_release);
  return true;
}

template Checked run_checks<float>(const CheckInputs<float>&, const core::DeviceScalars<float>&,
                                   cudaStream_t, const char*);
template Checked run_checks<double>(const CheckInputs<double>&, const core::DeviceScalars<double>&,
                                    cudaStream_t, const char*);

}  // namespace spatialsoftmax::cuda
