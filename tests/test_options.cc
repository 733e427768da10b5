// The option words (spatialsoftmax/options.h): each enumerator's name parses
// back to it, and an unknown word is an Error naming the caller's argument,
// the word and every accepted spelling.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "spatialsoftmax/options.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

template <class E, class Parse>
void expect_round_trip(std::initializer_list<E> values, Parse parse,
                       std::string_view expected_words) {
  for (E v : values) EXPECT_EQ(parse(to_string(v), "x"), v) << to_string(v);
  EXPECT_ERROR_MENTIONS(parse("Nope", "argument 'a'"),
                        {"argument 'a'", "'Nope'", "expected " + std::string(expected_words)});
}

TEST(OptionWords, EveryEnumeratorRoundTripsAndUnknownWordsListTheChoices) {
  expect_round_trip({ClassAxis::kFirst, ClassAxis::kLast}, parse_layout, "NCHW or NHWC");
  expect_round_trip({Reduction::kNone, Reduction::kSum, Reduction::kMean, Reduction::kBatchMean},
                    parse_reduction, "none, sum, mean or batchmean");
  expect_round_trip({ZeroWeightMean::kNaN, ZeroWeightMean::kZero}, parse_zero_weight_mean,
                    "nan or zero");
  expect_round_trip({ZeroTargetLog::kIeee, ZeroTargetLog::kZero}, parse_zero_target_log,
                    "ieee or zero");
  expect_round_trip({TemperatureMode::kDivide, TemperatureMode::kMultiply}, parse_temperature_mode,
                    "divide or multiply");
  expect_round_trip({Coordinates::kNormalized, Coordinates::kPixel}, parse_coordinates,
                    "normalized or pixel");
  expect_round_trip({SingletonCoordinate::kCenter, SingletonCoordinate::kMinusOne},
                    parse_singleton_coordinate, "center or minus_one");
}

TEST(OptionWords, SpellingIsExact) {
  EXPECT_ERROR_MENTIONS(parse_layout("nchw", "--layout"), {"--layout", "'nchw'"});
  EXPECT_ERROR_MENTIONS(parse_reduction("Mean", "reduction"), {"'Mean'"});
  EXPECT_ERROR_MENTIONS(parse_reduction("", "reduction"), {"''"});
}

}  // namespace
}  // namespace spatialsoftmax
