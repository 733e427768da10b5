// `spatialsoftmax eval CASE_DIR --out OUT_DIR`.
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <vector>

#include "cli/case_runner.h"
#include "cli/commands.h"
#include "spatialsoftmax/npy.h"

namespace spatialsoftmax::cli {
CLI::App* add_eval_command(CLI::App& app, EvalOptions& options) {
  CLI::App* command = app.add_subcommand(
      "eval",
      "Run the operator of one conformance case (a folder holding case.json and .npy "
      "inputs) and write each output as OUT_DIR/NAME.npy");
  command->add_option("CASE_DIR", options.case_dir, "Case folder (holds case.json)")->required();
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
