// The subcommands of the `spatialsoftmax` program. Each registers its options
// on the CLI11 app and runs once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "spatialsoftmax/tensor.h"

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

// `ops [NAME]`: list the registered operators, or print one's schema.
struct OpsOptions {
  std::string name;
};
CLI::App* add_ops_command(CLI::App& app, OpsOptions& options);
int run_ops(const OpsOptions& options);

// `run NET --input NAME=FILE.npy ... --out DIR [--gradients LOSS ...]`.
struct RunOptions {
  std::string net;
  std::vector<std::string> inputs;
  std::string out_dir;
  std::vector<std::string> gradients;
  std::string device;  // empty: each operator's own device_option
};
CLI::App* add_run_command(CLI::App& app, RunOptions& options);
int run_run(const RunOptions& options);

// `bench`: memory bandwidth, our cross-entropy forward and forward+backward
// and the peers (PyTorch, ONNX Runtime, oneDNN) on the same cases; a table or
// JSON lines. Empty strings mean the defaults described in `bench --help`.
struct BenchOptions {
  bool json = false;
  std::string shapes;
  std::string layouts = "NCHW,NHWC";
  std::string threads;
  std::string ops = "forward,forward_backward";
  std::string dtypes = "float32";  // --dtype: X's and dX's types
  int repeats = 5;
  double min_time = 0.5;
  int warmup = 1;
  int memcpy_mib = 256;
  std::string device = "cpu";
  std::string plot;  // --plot FILE.svg
  bool no_peers = false;
  std::string
      peers;  // empty: the device's (pytorch,onnxruntime,onednn,jax; cuda: pytorch,liger,quack)
  std::string python;
  std::string jax_python;
  std::string peers_dir;
  std::string onednn_peer;
};
CLI::App* add_bench_command(CLI::App& app, BenchOptions& options);
int run_bench(const BenchOptions& options);

// Replaces line breaks so that an error message stays on one line.
std::string one_line(std::string text);

// Writes OUT_DIR/NAME.npy for each tensor, all or nothing: every file is
// written and synced under a hidden temporary name first, and only then are
// they renamed over the final names, so an error while writing (a full disk,
// a name too long) leaves every older file in OUT_DIR as it was, and a kill
// leaves under each final name a complete older or a complete new file.
// Temporaries left by killed runs are removed by the next call.
void write_outputs(const std::filesystem::path& out_dir,
                   const std::map<std::string, Tensor>& outputs);

}  // namespace spatialsoftmax::cli
