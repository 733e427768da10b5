// Options of the loss family (docs/semantics.md section 3 and 4).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax {

// Where the class axis is: (N, C, d1..dk) or (N, d1..dk, C).
enum class ClassAxis { kFirst, kLast };

// kBatchMean is valid for kl_div only.
enum class Reduction { kNone, kSum, kMean, kBatchMean };

// What a mean returns when its denominator is 0: NaN (PyTorch, ONNX) or 0
// (Caffe2).
enum class ZeroWeightMean { kNaN, kZero };

// Soft targets: whether 0 * log(0-probability) is NaN (IEEE; PyTorch) or 0
// (optax's safe variant).
enum class ZeroTargetLog { kIeee, kZero };

struct CrossEntropyOptions {
  ClassAxis class_axis = ClassAxis::kFirst;
  // Class weights, shape (C), same dtype as the logits, finite and >= 0.
  std::optional<TensorView> class_weight;
  // Per-position weights, shape (N, d1..dk), finite and >= 0.
  std::optional<TensorView> pixel_weight;
  // Positions whose label equals this value are ignored (any int64 value).
  // With probability targets it must be unset or negative; a negative one is
  // dropped there, as PyTorch does.
  std::optional<std::int64_t> ignore_index;
  Reduction reduction = Reduction::kMean;
  double label_smoothing = 0.0;  // epsilon in [0, 1]
  ZeroWeightMean zero_weight_mean = ZeroWeightMean::kNaN;
  // > 0: the index-target loss is -log(max(p_y, prob_floor)) from p (Caffe2).
  double prob_floor = 0.0;
  ZeroTargetLog zero_target_log = ZeroTargetLog::kIeee;
  // Optional outputs of the forward call.
  bool want_prob = false;
  bool want_log_prob = false;
  bool want_entropy = false;

  // PyTorch F.cross_entropy defaults (ignore_index -100; dropped for
  // probability targets, as PyTorch ignores negative values there).
  static CrossEntropyOptions pytorch();
  // ONNX SoftmaxCrossEntropyLoss defaults (no ignore_index).
  static CrossEntropyOptions onnx();
  // Caffe2 SpatialSoftmaxWithLoss: ignore -1, floor 1e-20, mean of 0 is 0.
  static CrossEntropyOptions caffe2_spatial();
};

struct KlDivOptions {
  ClassAxis class_axis = ClassAxis::kFirst;
  bool log_target = false;
  Reduction reduction = Reduction::kMean;
};

enum class TemperatureMode { kDivide, kMultiply };
enum class Coordinates { kNormalized, kPixel };
enum class SingletonCoordinate { kCenter, kMinusOne };

struct SpatialSoftArgmaxOptions {
  // kFirst: (N, C, d1..dk); kLast: (N, d1..dk, C). k >= 1.
  ClassAxis channel_axis = ClassAxis::kFirst;
  double temperature = 1.0;  // > 0 and finite
  TemperatureMode temperature_mode = TemperatureMode::kDivide;
  Coordinates coordinates = Coordinates::kNormalized;
  // Coordinate of an axis of length 1 in normalized mode: 0 or -1.
  SingletonCoordinate singleton_coordinate = SingletonCoordinate::kCenter;
  bool want_softmax = false;
  bool want_covariance = false;
};

// Every option value spelled as text (the operators' string arguments, the
// CLI, case files): "NCHW"/"NHWC", "none"/"sum"/"mean"/"batchmean",
// "nan"/"zero", "ieee"/"zero", "divide"/"multiply", "normalized"/"pixel",
// "center"/"minus_one". These are the only parsers of those words; an
// unknown one is an Error "<what>: '<text>', expected a, b or c".
ClassAxis parse_layout(std::string_view text, std::string_view what);
Reduction parse_reduction(std::string_view text, std::string_view what);
ZeroWeightMean parse_zero_weight_mean(std::string_view text, std::string_view what);
ZeroTargetLog parse_zero_target_log(std::string_view text, std::string_view what);
TemperatureMode parse_temperature_mode(std::string_view text, std::string_view what);
Coordinates parse_coordinates(std::string_view text, std::string_view what);
SingletonCoordinate parse_singleton_coordinate(std::string_view text, std::string_view what);
std::string_view to_string(ClassAxis axis);
std::string_view to_string(Reduction reduction);
std::string_view to_string(ZeroWeightMean value);
std::string_view to_string(ZeroTargetLog value);
std::string_view to_string(TemperatureMode value);
std::string_view to_string(Coordinates value);
std::string_view to_string(SingletonCoordinate value);

}  // namespace spatialsoftmax
