#include "keywords.h"

namespace spatialsoftmax::python {

std::uintptr_t& thread_cuda_stream() {
  thread_local std::uintptr_t stream = 0;
  return stream;
}

CrossEntropyOptions cross_entropy_options(CallArrays& arrays,
                                          const CrossEntropyKeywords& keywords) {
  CrossEntropyOptions options;
  const std::string op = arrays.op() + ": ";
  options.class_axis = parse_layout(keywords.layout, op + "layout");
  options.class_weight = arrays.optional_input(keywords.class_weight, "class_weight");
  options.pixel_weight = arrays.optional_input(keywords.pixel_weight, "pixel_weight");
  options.ignore_index = keywords.ignore_index;
  options.reduction = parse_reduction(keywords.reduction, op + "reduction");
  options.label_smoothing = keywords.label_smoothing;
  options.zero_weight_mean =
      parse_zero_weight_mean(keywords.zero_weight_mean, op + "zero_weight_mean");
  options.prob_floor = keywords.prob_floor;
  options.zero_target_log = parse_zero_target_log(keywords.zero_target_log, op + "zero_target_log");
  return options;
}

KlDivOptions kl_div_options(const std::string& op, const std::string& layout, bool log_target,
                            const std::string& reduction) {
  KlDivOptions options;
  options.class_axis = parse_layout(layout, op + ": layout");
  options.log_target = log_target;
  options.reduction = parse_reduction(reduction, op + ": reduction");
  return options;
}

SpatialSoftArgmaxOptions spatial_soft_argmax_options(const std::string& op,
                                                     const SpatialSoftArgmaxKeywords& keywords) {
  SpatialSoftArgmaxOptions options;
  options.channel_axis = parse_layout(keywords.layout, op + ": layout");
  options.temperature = keywords.temperature;
  options.temperature_mode =
      parse_temperature_mode(keywords.temperature_mode, op + ": temperature_mode");
  options.coordinates = parse_coordinates(keywords.coordinates, op + ": coordinates");
  options.singleton_coordinate =
      parse_singleton_coordinate(keywords.singleton_coordinate, op + ": singleton_coordinate");
  return options;
}

}  // namespace spatialsoftmax::python
