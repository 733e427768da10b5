// Where a tensor's memory lives (Device) and how one call runs
// (ExecutionContext). Every function checks that its inputs and outputs sit
// on one device and runs there, on the first backend that serves that
// device (backend_names() lists them); a device that no backend serves is an
// Error naming the operation and the device.
#pragma once

#include <string>
#include <vector>

namespace spatialsoftmax {

enum class DeviceType { kCpu, kCuda };

// The CPU, or one CUDA device by its ordinal (torch.device("cuda:1")).
struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;  // 0 for the CPU

  static constexpr Device cpu() { return {}; }
  static constexpr Device cuda(int index) { return {DeviceType::kCuda, index}; }
  bool operator==(const Device&) const = default;
};

// "cpu", "cuda:0".
std::string device_name(const Device& device);

// How one call runs; the defaults are the global settings.
struct ExecutionContext {
  // CPU threads for this call, in [1, kMaxThreads] (threads.h); 0 takes
  // num_threads(). Results do not depend on it.
  int num_threads = 0;
  // CUDA: the cudaStream_t to run on, null for the default stream. The CPU
  // ignores it.
  void* cuda_stream = nullptr;
};

// Waits for the context's CUDA stream and raises, as the Error a CPU call
// would raise, the first bad label or weight that a device kernel found
// since the last check. Device calls never wait for the device, so they
// cannot raise such an error themselves: a later device call raises it if
// the failing kernel has finished by then, and this function always does.
// Without a CUDA backend, or before any device check ran, it returns.
void check_device_errors(const ExecutionContext& context = {});

// The backends compiled in, best first, as "name (device type)": for
// example {"highway (cpu)", "reference (cpu)"}. SPATIALSOFTMAX_BACKEND=name
// forces one.
std::vector<std::string> backend_names();

}  // namespace spatialsoftmax
