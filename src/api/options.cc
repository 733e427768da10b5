#include "spatialsoftmax/options.h"

#include <string>
#include <utility>

#include "spatialsoftmax/error.h"

namespace spatialsoftmax {
namespace {

template <class E>
using Names = std::pair<std::string_view, E>;

constexpr Names<ClassAxis> kLayouts[] = {{"NCHW", ClassAxis::kFirst}, {"NHWC", ClassAxis::kLast}};
constexpr Names<Reduction> kReductions[] = {{"none", Reduction::kNone},
                                            {"sum", Reduction::kSum},
                                            {"mean", Reduction::kMean},
                                            {"batchmean", Reduction::kBatchMean}};
constexpr Names<ZeroWeightMean> kZeroWeightMeans[] = {{"nan", ZeroWeightMean::kNaN},
                                                      {"zero", ZeroWeightMean::kZero}};
constexpr Names<ZeroTargetLog> kZeroTargetLogs[] = {{"ieee", ZeroTargetLog::kIeee},
                                                    {"zero", ZeroTargetLog::kZero}};
constexpr Names<TemperatureMode> kTemperatureModes[] = {{"divide", TemperatureMode::kDivide},
                                                        {"multiply", TemperatureMode::kMultiply}};
constexpr Names<Coordinates> kCoordinates[] = {{"normalized", Coordinates::kNormalized},
                                               {"pixel", Coordinates::kPixel}};
constexpr Names<SingletonCoordinate> kSingletonCoordinates[] = {
    {"center", SingletonCoordinate::kCenter}, {"minus_one", SingletonCoordinate::kMinusOne}};

template <class E, std::size_t N>
E parse(const Names<E> (&names)[N], std::string_view text, std::string_view what) {
  std::string expected;
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i].first == text) return names[i].second;
    expected += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(names[i].first);
  }
  throw Error(std::string(what) + ": '" + std::string(text) + "', expected " + expected);
}

template <class E, std::size_t N>
std::string_view name(const Names<E> (&names)[N], E value) {
  for (const auto& [text, v] : names) {
    if (v == value) return text;
  }
  return "?";  // a value cast from an int outside the enumerators
}

}  // namespace

ClassAxis parse_layout(std::string_view text, std::string_view what) {
  return parse(kLayouts, text, what);
}
Reduction parse_reduction(std::string_view text, std::string_view what) {
  return parse(kReductions, text, what);
}
ZeroWeightMean parse_zero_weight_mean(std::string_view text, std::string_view what) {
  return parse(kZeroWeightMeans, text, what);
}
ZeroTargetLog parse_zero_target_log(std::string_view text, std::string_view what) {
  return parse(kZeroTargetLogs, text, what);
}
TemperatureMode parse_temperature_mode(std::string_view text, std::string_view what) {
  return parse(kTemperatureModes, text, what);
}
Coordinates parse_coordinates(std::string_view text, std::string_view what) {
  return parse(kCoordinates, text, what);
}
SingletonCoordinate parse_singleton_coordinate(std::string_view text, std::string_view what) {
  return parse(kSingletonCoordinates, text, what);
}

std::string_view to_string(ClassAxis axis) { return name(kLayouts, axis); }
std::string_view to_string(Reduction reduction) { return name(kReductions, reduction); }
std::string_view to_string(ZeroWeightMean value) { return name(kZeroWeightMeans, value); }
std::string_view to_string(ZeroTargetLog value) { return name(kZeroTargetLogs, value); }
std::string_view to_string(TemperatureMode value) { return name(kTemperatureModes, value); }
std::string_view to_string(Coordinates value) { return name(kCoordinates, value); }
std::string_view to_string(SingletonCoordinate value) { return name(kSingletonCoordinates, value); }

CrossEntropyOptions CrossEntropyOptions::pytorch() {
  CrossEntropyOptions o;
  o.ignore_index = -100;
  return o;
}

CrossEntropyOptions CrossEntropyOptions::onnx() { return CrossEntropyOptions{}; }

CrossEntropyOptions CrossEntropyOptions::caffe2_spatial() {
  CrossEntropyOptions o;
  o.ignore_index = -1;
  o.prob_floor = 1e-20;
  o.zero_weight_mean = ZeroWeightMean::kZero;
  return o;
}

}  // namespace spatialsoftmax
