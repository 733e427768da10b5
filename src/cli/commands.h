// The subcommands of the `spatialsoftmax` program. Each registers its options
// on the CLI11 app and runs once parsing succeeded.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

namespace spatialsoftmax::cli {

// `eval CASE_DIR --out OUT_DIR`: run one conformance case, write its outputs.
struct EvalOptions {
  std::string case_dir;
  std::string out_dir;
};
CLI::App* add_eval_command(CLI::App& app, EvalOptions& options);
int run_eval(const EvalOptions& options);

// `demo`: a synthetic segmentation batch through the Caffe2 operator pair,
// checked against float64 and timed.
struct DemoOptions {
  std::int64_t batch = 2;  // Cityscapes-sized by default
  std::int64_t classes = 19;
  std::int64_t height = 512;
  std::int64_t width = 1024;
  std::uint64_t seed = 0;
  double ignore_fraction = 0.05;
  int repeats = 3;
};
CLI::App* add_demo_command(CLI::App& app, DemoOptions& options);
int run_demo(const DemoOptions& options);

// Replaces line breaks so that an error message stays on one line.
std::string one_line(std::string text);

}  // namespace spatialsoftmax::cli
