#include <string>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/options.h"

namespace spatialsoftmax {

ClassAxis parse_layout(std::string_view text, std::string_view what) {
  if (text == "NCHW") return ClassAxis::kFirst;
  if (text == "NHWC") return ClassAxis::kLast;
  throw Error(std::string(what) + ": '" + std::string(text) + "', expected NCHW or NHWC");
}

Reduction parse_reduction(std::string_view text, std::string_view what) {
  if (text == "none") return Reduction::kNone;
  if (text == "sum") return Reduction::kSum;
  if (text == "mean") return Reduction::kMean;
  if (text == "batchmean") return Reduction::kBatchMean;
  throw Error(std::string(what) + ": '" + std::string(text) +
              "', expected none, sum, mean or batchmean");
}

std::string_view to_string(Reduction reduction) {
  switch (reduction) {
    case Reduction::kNone: return "none";
    case Reduction::kSum: return "sum";
    case Reduction::kMean: return "mean";
    case Reduction::kBatchMean: return "batchmean";
  }
  return "?";
}

std::string_view to_string(ClassAxis axis) { return axis == ClassAxis::kFirst ? "NCHW" : "NHWC"; }

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
