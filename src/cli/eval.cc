// `spatialsoftmax eval CASE_DIR --out OUT_DIR`.
#include <algorithm>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <vector>

#include "cases/case_runner.h"
#include "cli/commands.h"
#include "spatialsoftmax/npy.h"

namespace spatialsoftmax::cli {
namespace {

namespace fs = std::filesystem;

// Writes NAME.npy for each output. write_npy never leaves a partial file; if
// a later file fails, the ones written before it are removed as well, so a
// failed run leaves no outputs behind.
void write_outputs(const fs::path& out_dir, const std::map<std::string, Tensor>& outputs) {
  fs::create_directories(out_dir);
  std::vector<fs::path> written;
  try {
    for (const auto& [name, tensor] : outputs) {
      const fs::path file = out_dir / (name + ".npy");
      write_npy(file, tensor);
      written.push_back(file);
    }
  } catch (...) {
    std::error_code ignored;
    for (const fs::path& file : written) fs::remove(file, ignored);
    throw;
  }
}

}  // namespace

std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  return text;
}

CLI::App* add_eval_command(CLI::App& app, EvalOptions& options) {
  CLI::App* command = app.add_subcommand(
      "eval",
      "Run the operator of one conformance case (a folder holding case.json and .npy "
      "inputs) and write each output as OUT_DIR/NAME.npy");
  command->add_option("CASE_DIR", options.case_dir, "Case folder (holds case.json)")
      ->required();
  command->add_option("--out", options.out_dir, "Folder for the outputs (created if missing)")
      ->type_name("OUT_DIR")
      ->required();
  return command;
}

int run_eval(const EvalOptions& options) {
  try {
    const cases::Case c = cases::load_case(options.case_dir);
    // Everything is computed before the first file is written.
    const std::map<std::string, Tensor> outputs = cases::run_case(c);
    write_outputs(options.out_dir, outputs);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "spatialsoftmax eval: " << one_line(e.what()) << "\n";
    return 1;
  }
}

}  // namespace spatialsoftmax::cli
