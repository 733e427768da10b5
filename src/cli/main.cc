// `spatialsoftmax`: command-line front end of the library.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"

namespace {

constexpr const char* kDescription =
    "spatialsoftmax " SPATIALSOFTMAX_VERSION
    ": per-pixel softmax and cross-entropy (Caffe2's SpatialSoftmaxWithLoss and its peers)";

}  // namespace

int main(int argc, char** argv) {
  namespace cli = spatialsoftmax::cli;
  CLI::App app{kDescription, "spatialsoftmax"};
  app.set_version_flag("--version", "spatialsoftmax " SPATIALSOFTMAX_VERSION);
  cli::EvalOptions eval;
  cli::DemoOptions demo;
  cli::OpsOptions ops;
  cli::RunOptions run;
  cli::BenchOptions bench;
  CLI::App* eval_command = cli::add_eval_command(app, eval);
  CLI::App* demo_command = cli::add_demo_command(app, demo);
  CLI::App* ops_command = cli::add_ops_command(app, ops);
  CLI::App* run_command = cli::add_run_command(app, run);
  CLI::App* bench_command = cli::add_bench_command(app, bench);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, prefixed like the subcommands' own errors.
    std::string prefix = "spatialsoftmax";
    if (eval_command->parsed()) prefix += " eval";
    if (demo_command->parsed()) prefix += " demo";
    if (ops_command->parsed()) prefix += " ops";
    if (run_command->parsed()) prefix += " run";
    if (bench_command->parsed()) prefix += " bench";
    std::cerr << prefix << ": " << cli::one_line(e.what()) << " (see " << prefix << " --help)\n";
    return e.get_exit_code() != 0 ? e.get_exit_code() : 2;
  }
  if (eval_command->parsed()) return cli::run_eval(eval);
  if (demo_command->parsed()) return cli::run_demo(demo);
  if (ops_command->parsed()) return cli::run_ops(ops);
  if (run_command->parsed()) return cli::run_run(run);
  if (bench_command->parsed()) return cli::run_bench(bench);
  // No subcommand: say what there is, and fail, since nothing was done.
  std::cerr << app.help();
  return 2;
}
