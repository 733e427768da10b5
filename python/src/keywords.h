// The keyword arguments shared by many bound functions, declared once: the
// options of cross-entropy and NLL, of KL and of the spatial soft-argmax,
// and the thread count. Each option word goes through the library's own
// parser (spatialsoftmax/options.h), so the Python spelling is the CLI's
// and the operators'.
//
// A bound function lists SPATIALSOFTMAX_<X>_PARAMS among its parameters and
// SPATIALSOFTMAX_<X>_ARGS among its nb::arg declarations, in the same place,
// and builds the options with <x>_options(arrays, SPATIALSOFTMAX_<X>_VALUES).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <optional>
#include <string>

#include "arrays.h"
#include "spatialsoftmax/device.h"
#include "spatialsoftmax/options.h"

namespace spatialsoftmax::python {

struct CrossEntropyKeywords {
  const std::string& layout;
  const std::optional<ArrayArg>& class_weight;
  const std::optional<ArrayArg>& pixel_weight;
  std::optional<std::int64_t> ignore_index;
  const std::string& reduction;
  double label_smoothing;
  const std::string& zero_weight_mean;
  double prob_floor;
  const std::string& zero_target_log;
};
CrossEntropyOptions cross_entropy_options(CallArrays& arrays, const CrossEntropyKeywords& keywords);

KlDivOptions kl_div_options(const std::string& op, const std::string& layout, bool log_target,
                            const std::string& reduction);

struct SpatialSoftArgmaxKeywords {
  const std::string& layout;
  double temperature;
  const std::string& temperature_mode;
  const std::string& coordinates;
  const std::string& singleton_coordinate;
};
SpatialSoftArgmaxOptions spatial_soft_argmax_options(const std::string& op,
                                                     const SpatialSoftArgmaxKeywords& keywords);

// The CUDA stream calls on this thread run on (a cudaStream_t as an integer;
// 0, the default stream, until set): spatialsoftmax.cuda_stream sets it, and
// the torch front sets it to torch's current stream around each device call.
std::uintptr_t& thread_cuda_stream();

inline ExecutionContext context_of(int num_threads) {
  ExecutionContext context;
  context.num_threads = num_threads;
  context.cuda_stream = reinterpret_cast<void*>(thread_cuda_stream());
  return context;
}

}  // namespace spatialsoftmax::python

// clang-format off
#define SPATIALSOFTMAX_CE_PARAMS                                                         \
  const std::string &layout, const std::optional<ArrayArg> &class_weight,               \
  const std::optional<ArrayArg> &pixel_weight, std::optional<std::int64_t> ignore_index, \
  const std::string &reduction, double label_smoothing,                                   \
  const std::string &zero_weight_mean, double prob_floor, const std::string &zero_target_log
#define SPATIALSOFTMAX_CE_ARGS                                                            \
  nb::arg("layout") = "NCHW", nb::arg("class_weight") = nb::none(),                      \
  nb::arg("pixel_weight") = nb::none(), nb::arg("ignore_index") = nb::none(),            \
  nb::arg("reduction") = "mean", nb::arg("label_smoothing") = 0.0,                        \
  nb::arg("zero_weight_mean") = "nan", nb::arg("prob_floor") = 0.0,                       \
  nb::arg("zero_target_log") = "ieee"
#define SPATIALSOFTMAX_CE_VALUES                                                          \
  {layout, class_weight, pixel_weight, ignore_index, reduction, label_smoothing,          \
   zero_weight_mean, prob_floor, zero_target_log}

#define SPATIALSOFTMAX_SSA_PARAMS                                                         \
  const std::string &layout, double temperature, const std::string &temperature_mode,    \
  const std::string &coordinates, const std::string &singleton_coordinate
#define SPATIALSOFTMAX_SSA_ARGS                                                           \
  nb::arg("layout") = "NCHW", nb::arg("temperature") = 1.0,                               \
  nb::arg("temperature_mode") = "divide", nb::arg("coordinates") = "normalized",          \
  nb::arg("singleton_coordinate") = "center"
#define SPATIALSOFTMAX_SSA_VALUES                                                         \
  {layout, temperature, temperature_mode, coordinates, singleton_coordinate}
// clang-format on

// Documentation of the shared keywords, appended to the functions' docstrings.
#define SPATIALSOFTMAX_CE_DOC                                                                    \
  "\n\nOptions (docs/semantics.md 3): layout 'NCHW' (class axis 1) or 'NHWC' (class axis "       \
  "last); class_weight (C,) and pixel_weight (N, d1..dk), finite and >= 0; ignore_index (any "   \
  "int, None: none); reduction 'none', 'sum' or 'mean'; label_smoothing in [0, 1]; "             \
  "zero_weight_mean 'nan' (PyTorch) or 'zero' (Caffe2); prob_floor > 0: loss -log(max(p_y, "     \
  "floor)) (Caffe2); zero_target_log 'ieee' or 'zero' (0 * log 0 of soft targets); num_threads " \
  "0 = spatialsoftmax.num_threads()."
#define SPATIALSOFTMAX_THREADS_DOC "\n\nnum_threads: CPU threads for this call, 0 = num_threads()."
