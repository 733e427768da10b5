// The `spatialsoftmax` program, run as a user would: eval on one case of each
// conformance folder, eval failures, ops, run (nets and their gradients), demo
// and --help.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

// A fresh temporary folder, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("ss_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct RunResult {
  int status = -1;  // exit status, or -1 if the program did not exit normally
  std::string out;
  std::string err;
};

// Runs the program with `args` (each quoted for the shell).
// `shell_prefix` runs before the program in the same shell (ulimit, trap).
RunResult run_cli(const std::vector<std::string>& args, const std::string& shell_prefix = "") {
  const TempDir capture;
  std::string command = shell_prefix + quote(cli_path().string());
  // Appended piecewise: GCC 12 warns (-Wrestrict, a false positive) on
  // `const char* + std::string&&`.
  for (const std::string& arg : args) command.append(" ").append(quote(arg));
  command.append(" >").append(quote((capture.path() / "out").string()));
  command.append(" 2>").append(quote((capture.path() / "err").string()));
  const int raw = std::system(command.c_str());
  RunResult result;
  result.status = (raw != -1 && WIFEXITED(raw)) ? WEXITSTATUS(raw) : -1;
  result.out = read_text(capture.path() / "out");
  result.err = read_text(capture.path() / "err");
  return result;
}

std::size_t line_count(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

std::set<std::string> file_names(const fs::path& dir) {
  std::set<std::string> names;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

TEST(Cli, ProgramWasBuilt) { ASSERT_TRUE(fs::exists(cli_path())) << cli_path(); }

// --- eval on one case of each folder -----------------------------------------

struct EvalCase {
  const char* folder;
  const char* name;
  const char* op;
  std::vector<std::string> outputs;
};

const EvalCase kEvalCases[] = {
    {"onnx-sce",
     "test_sce_mean_weight_ii_log_prob",
     "SoftmaxCrossEntropyLoss",
     {"log_prob", "loss"}},
    {"onnx-nll", "test_nllloss_NCd1d2d3_sum_weight_high_ii", "NegativeLogLikelihoodLoss", {"loss"}},
    {"torch-ce", "ce_nhwc_none_smooth", "cross_entropy", {"grad_input", "output"}},
    {"caffe2-spatial", "c2s_weights", "SpatialSoftmaxWithLoss", {"P", "avg_loss", "dX"}},
    {"spatial-softargmax", "softargmax_2d_t05", "spatial_soft_argmax", {"grad_input", "output"}},
};

void PrintTo(const EvalCase& c, std::ostream* os) { *os << c.folder << "/" << c.name; }

class CliEval : public ::testing::TestWithParam<EvalCase> {};

TEST_P(CliEval, WritesTheCaseOutputs) {
  const EvalCase& ec = GetParam();
  const fs::path case_dir = conformance_dir() / ec.folder / ec.name;
  ASSERT_TRUE(fs::exists(case_dir / "case.json")) << case_dir;
  const TempDir tmp;
  const fs::path out = tmp.path() / "new" / "out";  // created by eval
  const RunResult run = run_cli({"eval", case_dir.string(), "--out", out.string()});
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.err, "");

  std::set<std::string> want_files;
  for (const std::string& name : ec.outputs) want_files.insert(name + ".npy");
  EXPECT_EQ(file_names(out), want_files);
  for (const std::string& name : ec.outputs) {
    SCOPED_TRACE(case_dir.string() + ": " + name);
    const Tensor got = read_npy(out / (name + ".npy"));
    const fs::path twin = case_dir / (name + "_f64.npy");
    const Tensor want = read_npy(fs::exists(twin) ? twin : case_dir / (name + ".npy"));
    const Tolerance tol = conformance_tolerance(ec.op, name, want);
    std::string why;
    EXPECT_TRUE(all_close(got, want, tol.rtol, tol.atol, &why)) << why;
  }
}

std::string eval_case_name(const ::testing::TestParamInfo<EvalCase>& info) {
  std::string name = std::string(info.param.folder) + "_" + info.param.name;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(OnePerFolder, CliEval, ::testing::ValuesIn(kEvalCases), eval_case_name);

// --- eval failures ----------------------------------------------------------

// A valid softmax case written from scratch, which each test then breaks.
class CliEvalError : public ::testing::Test {
 protected:
  void SetUp() override {
    case_dir_ = tmp_.path() / "case";
    out_dir_ = tmp_.path() / "out";
    fs::create_directories(case_dir_);
    write_case("cross_entropy", R"({"reduction": "mean", "targets": "indices"})");
    const Tensor input = random_uniform(DType::kFloat32, {2, 3, 4}, -2, 2, 1);
    Tensor target = random_labels(DType::kInt64, {2, 4}, 3, 2);
    write_npy(case_dir_ / "input.npy", input);
    write_npy(case_dir_ / "target.npy", target);
  }

  void write_case(const std::string& op, const std::string& attributes) const {
    std::ofstream(case_dir_ / "case.json")
        << R"({"name": "broken", "op": ")" << op << R"(", "attributes": )" << attributes
        << R"(, "arrays": {"input": {"shape": [2, 3, 4], "dtype": "float32"},)"
        << R"( "target": {"shape": [2, 4], "dtype": "int64"},)"
        << R"( "output": {"shape": [], "dtype": "float32"},)"
        << R"( "grad_input": {"shape": [2, 3, 4], "dtype": "float32"}}})";
  }

  // The run must fail with one line on stderr naming `culprit`, and leave no
  // file (no .npy, no temporary) in the output folder.
  void expect_failure(const std::string& culprit) const {
    const RunResult run = run_cli({"eval", case_dir_.string(), "--out", out_dir_.string()});
    EXPECT_NE(run.status, 0);
    EXPECT_EQ(line_count(run.err), 1u) << run.err;
    EXPECT_EQ(run.err.rfind("spatialsoftmax eval: ", 0), 0u) << run.err;
    EXPECT_NE(run.err.find(culprit), std::string::npos) << run.err;
    EXPECT_TRUE(file_names(out_dir_).empty()) << "left behind in " << out_dir_;
  }

  TempDir tmp_;
  fs::path case_dir_;
  fs::path out_dir_;
};

TEST_F(CliEvalError, ValidCaseSucceeds) {
  const RunResult run = run_cli({"eval", case_dir_.string(), "--out", out_dir_.string()});
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(file_names(out_dir_), (std::set<std::string>{"grad_input.npy", "output.npy"}));
}

TEST_F(CliEvalError, UnknownOp) {
  write_case("no_such_op", "{}");
  expect_failure("no_such_op");
}

TEST_F(CliEvalError, UnknownAttribute) {
  write_case("cross_entropy", R"({"reduktion": "mean"})");
  expect_failure("reduktion");
}

TEST_F(CliEvalError, MissingNpy) {
  fs::remove(case_dir_ / "target.npy");
  expect_failure("target.npy");
}

// The library rejects the inputs only when it runs: still nothing is written,
// even into an output folder that already exists.
TEST_F(CliEvalError, LabelOutOfRange) {
  Tensor target = read_npy(case_dir_ / "target.npy");
  target.data_as<std::int64_t>()[5] = 7;
  write_npy(case_dir_ / "target.npy", target);
  fs::create_directories(out_dir_);
  expect_failure("7");
}

TEST_F(CliEvalError, MissingCaseFolder) {
  fs::remove_all(case_dir_);
  expect_failure("case");
}

TEST(CliEvalUsage, MissingOutIsAnError) {
  const RunResult run = run_cli({"eval", "somewhere"});
  EXPECT_NE(run.status, 0);
  EXPECT_EQ(line_count(run.err), 1u) << run.err;
  EXPECT_NE(run.err.find("--out"), std::string::npos) << run.err;
}

// --- demo -------------------------------------------------------------------

TEST(CliDemo, SmallBatchPassesItsCheck) {
  const RunResult run =
      run_cli({"demo", "--batch", "1", "--classes", "5", "--height", "16", "--width", "24"});
  EXPECT_EQ(run.status, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("loss"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("PASS"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("GB/s"), std::string::npos) << run.out;
}

TEST(CliDemo, RejectsBadOptions) {
  const RunResult run = run_cli({"demo", "--classes", "0"});
  EXPECT_NE(run.status, 0);
  EXPECT_EQ(line_count(run.err), 1u) << run.err;
}

// --- ops ------------------------------------------------------------------------

TEST(CliOps, ListsEveryOperatorWithItsDevices) {
  const RunResult run = run_cli({"ops"});
  ASSERT_EQ(run.status, 0) << run.err;
  for (const char* type :
       {"SpatialSoftmaxWithLoss", "SpatialSoftmaxWithLossGradient", "SoftmaxWithLoss",
        "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss", "Softmax", "LogSoftmax",
        "CrossEntropy", "KLDiv", "SpatialSoftmax", "SpatialSoftArgmax"}) {
    const auto line_start = run.out.find(std::string("\n") + type + " ");
    ASSERT_NE(line_start, std::string::npos) << type << " missing from\n" << run.out;
    const std::string line =
        run.out.substr(line_start + 1, run.out.find('\n', line_start + 1) - line_start - 1);
    EXPECT_NE(line.find("CPU"), std::string::npos) << line;
  }
}

TEST(CliOps, PrintsOneSchema) {
  const RunResult run = run_cli({"ops", "SpatialSoftmaxWithLoss"});
  ASSERT_EQ(run.status, 0) << run.err;
  for (const char* text :
       {"X", "T", "weight_tensor (optional)", "P", "avg_loss", "scale (float, default 1)",
        "order (string, default \"NCHW\")", "devices: CPU", "gradient: registered"}) {
    EXPECT_NE(run.out.find(text), std::string::npos) << text << " not in\n" << run.out;
  }
}

TEST(CliOps, UnknownOperatorFails) {
  const RunResult run = run_cli({"ops", "NoSuchOp"});
  EXPECT_NE(run.status, 0);
  EXPECT_EQ(line_count(run.err), 1u) << run.err;
  EXPECT_NE(run.err.find("NoSuchOp"), std::string::npos) << run.err;
}

// --- run ------------------------------------------------------------------------

constexpr const char* kSpatialNetJson =
    R"({"name": "seg", "op": [{"type": "SpatialSoftmaxWithLoss", "input": ["X", "T"],)"
    R"( "output": ["P", "avg_loss"], "arg": [{"name": "scale", "f": 1.0}]}],)"
    R"( "external_input": ["X", "T"], "external_output": ["avg_loss"]})";

constexpr const char* kSpatialNetText = R"(name: "seg"
op {
  type: "SpatialSoftmaxWithLoss"
  input: "X"
  input: "T"
  output: "P"
  output: "avg_loss"
  arg { name: "order" s: "NCHW" }
}
external_input: "X"
external_input: "T"
)";

// The forward net only; its gradient comes from the registry (--gradients),
// and must reproduce the Caffe2 conformance vectors (d_avg_loss = 1 there).
class CliRun : public ::testing::TestWithParam<const char*> {};

TEST_P(CliRun, ForwardNetAndRegistryGradientMatchCaffe2Vectors) {
  const std::string format = GetParam();
  const fs::path case_dir = conformance_dir() / "caffe2-spatial" / "c2s_basic";
  const TempDir tmp;
  const fs::path net = tmp.path() / ("net." + format);
  std::ofstream(net) << (format == "json" ? kSpatialNetJson : kSpatialNetText);
  const fs::path out = tmp.path() / "out";
  const RunResult run = run_cli(
      {"run", net.string(), "--input", "X=" + (case_dir / "X.npy").string(), "--input",
       "T=" + (case_dir / "T.npy").string(), "--out", out.string(), "--gradients", "avg_loss"});
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(file_names(out), (std::set<std::string>{"P.npy", "T.npy", "X.npy", "X_grad.npy",
                                                    "avg_loss.npy", "avg_loss_grad.npy"}));
  const std::pair<const char*, const char*> compared[] = {
      {"P", "P"}, {"avg_loss", "avg_loss"}, {"X_grad", "dX"}};
  for (const auto& [blob, expected] : compared) {
    SCOPED_TRACE(blob);
    const Tensor want = read_npy(case_dir / (std::string(expected) + "_f64.npy"));
    const Tolerance tol = conformance_tolerance("SpatialSoftmaxWithLoss", expected, want);
    std::string why;
    EXPECT_TRUE(
        all_close(read_npy(out / (std::string(blob) + ".npy")), want, tol.rtol, tol.atol, &why))
        << why;
  }
  EXPECT_EQ(read_npy(out / "avg_loss_grad.npy").at(0), 1.0);
}

INSTANTIATE_TEST_SUITE_P(JsonAndText, CliRun, ::testing::Values("json", "pbtxt"));

TEST(CliRunDevice, DeviceCpuIsTheDefaultsRun) {
  const fs::path case_dir = conformance_dir() / "caffe2-spatial" / "c2s_basic";
  const TempDir tmp;
  const fs::path net = tmp.path() / "net.json";
  std::ofstream(net) << kSpatialNetJson;
  for (const char* device : {"", "cpu"}) {
    std::vector<std::string> args = {
        "run",         net.string(),
        "--input",     "X=" + (case_dir / "X.npy").string(),
        "--input",     "T=" + (case_dir / "T.npy").string(),
        "--out",       (tmp.path() / (std::string("out") + device)).string(),
        "--gradients", "avg_loss"};
    if (*device) args.insert(args.end(), {"--device", device});
    const RunResult run = run_cli(args);
    ASSERT_EQ(run.status, 0) << run.err;
  }
  for (const char* blob : {"P.npy", "avg_loss.npy", "X_grad.npy"}) {
    EXPECT_TRUE(
        bitwise_equal(read_npy(tmp.path() / "out" / blob), read_npy(tmp.path() / "outcpu" / blob)))
        << blob;
  }
}

class CliRunError : public ::testing::Test {
 protected:
  void SetUp() override {
    case_dir_ = conformance_dir() / "caffe2-spatial" / "c2s_basic";
    out_ = tmp_.path() / "out";
  }
  // Fails with one line naming `culprit`, leaving no file behind.
  void expect_failure(const std::vector<std::string>& args, const std::string& culprit) const {
    std::vector<std::string> full = {"run"};
    full.insert(full.end(), args.begin(), args.end());
    full.insert(full.end(), {"--out", out_.string()});
    const RunResult run = run_cli(full);
    EXPECT_NE(run.status, 0);
    EXPECT_EQ(line_count(run.err), 1u) << run.err;
    EXPECT_EQ(run.err.rfind("spatialsoftmax run: ", 0), 0u) << run.err;
    EXPECT_NE(run.err.find(culprit), std::string::npos) << run.err;
    EXPECT_TRUE(file_names(out_).empty()) << "left behind in " << out_;
  }
  fs::path write_net(const std::string& text, const std::string& ext = "json") const {
    const fs::path net = tmp_.path() / ("net." + ext);
    std::ofstream(net) << text;
    return net;
  }
  std::string x() const { return "X=" + (case_dir_ / "X.npy").string(); }
  std::string t() const { return "T=" + (case_dir_ / "T.npy").string(); }

  TempDir tmp_;
  fs::path case_dir_;
  fs::path out_;
};

TEST_F(CliRunError, UnknownOperatorIsNamedAndNothingRuns) {
  std::string net = kSpatialNetJson;
  net.replace(net.find("]}]"), 3, R"(]}, {"type": "NoSuchOp", "input": ["P"], "output": ["Q"]}])");
  expect_failure({write_net(net).string(), "--input", x(), "--input", t()}, "NoSuchOp");
}

TEST_F(CliRunError, ABadDeviceIsNamed) {
  expect_failure(
      {write_net(kSpatialNetJson).string(), "--input", x(), "--input", t(), "--device", "gpu"},
      "--device: 'gpu', expected cpu, cuda or cuda:N");
  // cuda:999 is no device on any machine: refused before anything runs.
  expect_failure(
      {write_net(kSpatialNetJson).string(), "--input", x(), "--input", t(), "--device", "cuda:999"},
      "cuda:999");
}

TEST_F(CliRunError, MissingInputBlob) {
  expect_failure({write_net(kSpatialNetJson).string(), "--input", x()}, "'T'");
}

TEST_F(CliRunError, MalformedInputFlag) {
  expect_failure({write_net(kSpatialNetJson).string(), "--input", "X"}, "NAME=FILE.npy");
}

TEST_F(CliRunError, MalformedNet) {
  expect_failure({write_net("op { type: ", "pbtxt").string()}, "net.pbtxt");
}

TEST_F(CliRunError, UnknownNetExtension) {
  expect_failure({write_net(kSpatialNetJson, "yaml").string()}, "net.yaml");
}

TEST_F(CliRunError, GradientOfAnUnknownLoss) {
  expect_failure(
      {write_net(kSpatialNetJson).string(), "--input", x(), "--input", t(), "--gradients", "nope"},
      "nope");
}

// --- run: what --out holds after a failed or killed run ------------------------

// A write error must leave every older file in --out as it was (issue 10,
// item 4): before, the files written before the error were removed, older
// files of the same names with them.
class CliRunOutputs : public ::testing::Test {
 protected:
  void SetUp() override {
    out_ = tmp_.path() / "out";
    fs::create_directories(out_);
    // X: float32 (1, 4, 64, 64), 64 KiB; T: int32 (1, 64, 64), 16 KiB.
    write_npy(tmp_.path() / "X.npy", random_uniform(DType::kFloat32, {1, 4, 64, 64}, -3, 3, 1));
    write_npy(tmp_.path() / "T.npy", random_labels(DType::kInt32, {1, 64, 64}, 4, 2));
  }
  // A net whose blobs sort as T, X, then the loss's outputs.
  fs::path net_with_outputs(const std::string& prob, const std::string& loss) const {
    const fs::path net = tmp_.path() / "net.json";
    std::ofstream(net) << R"({"op": [{"type": "SpatialSoftmaxWithLoss", "input": ["X", "T"],)"
                       << R"( "output": [")" << prob << R"(", ")" << loss << R"("]}]})";
    return net;
  }
  std::vector<std::string> run_args(const fs::path& net) const {
    return {"run",     net.string(),
            "--input", "X=" + (tmp_.path() / "X.npy").string(),
            "--input", "T=" + (tmp_.path() / "T.npy").string(),
            "--out",   out_.string()};
  }
  void put_older(const std::string& name) const { std::ofstream(out_ / name) << "older " << name; }
  void expect_older(const std::string& name) const {
    EXPECT_EQ(read_text(out_ / name), "older " + name) << name << " was replaced or removed";
  }

  TempDir tmp_;
  fs::path out_;
};

TEST_F(CliRunOutputs, NameTooLongLeavesOlderFilesAsTheyWere) {
  for (const char* name : {"P.npy", "T.npy", "X.npy"}) put_older(name);
  const std::string long_name(300, 'L');
  const RunResult run = run_cli(run_args(net_with_outputs("P", long_name)));
  EXPECT_NE(run.status, 0);
  EXPECT_NE(run.err.find(long_name), std::string::npos) << run.err;
  for (const char* name : {"P.npy", "T.npy", "X.npy"}) expect_older(name);
  EXPECT_EQ(file_names(out_), (std::set<std::string>{"P.npy", "T.npy", "X.npy"}));
}

// A full disk, as a file size limit: T.npy fits, X.npy does not.
TEST_F(CliRunOutputs, FullDiskLeavesOlderFilesAsTheyWere) {
  for (const char* name : {"T.npy", "X.npy", "a_prob.npy"}) put_older(name);
  const RunResult run =
      run_cli(run_args(net_with_outputs("a_prob", "avg_loss")), "ulimit -f 64 && trap '' XFSZ && ");
  EXPECT_NE(run.status, 0);
  EXPECT_EQ(line_count(run.err), 1u) << run.err;
  EXPECT_NE(run.err.find("X.npy"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("File too large"), std::string::npos) << run.err;
  for (const char* name : {"T.npy", "X.npy", "a_prob.npy"}) expect_older(name);
  EXPECT_EQ(file_names(out_), (std::set<std::string>{"T.npy", "X.npy", "a_prob.npy"}));
  // The same run without the limit replaces them all.
  ASSERT_EQ(run_cli(run_args(net_with_outputs("a_prob", "avg_loss"))).status, 0);
  EXPECT_EQ(file_names(out_),
            (std::set<std::string>{"T.npy", "X.npy", "a_prob.npy", "avg_loss.npy"}));
  EXPECT_EQ(read_npy(out_ / "X.npy").shape(), (Shape{1, 4, 64, 64}));
}

// A killed run leaves its temporaries; the next run removes those of dead
// processes and keeps those of live ones (a concurrent writer's).
TEST_F(CliRunOutputs, NextRunRemovesTemporariesOfKilledRuns) {
  const std::string dead = ".spatialsoftmax-999999999-0123456789abcdef.tmp";
  const std::string live =
      ".spatialsoftmax-" + std::to_string(::getpid()) + "-0123456789abcdef.tmp";
  std::ofstream(out_ / dead) << "partial";
  std::ofstream(out_ / live) << "being written";
  std::ofstream(out_ / ".spatialsoftmax-notes.txt") << "not ours";
  ASSERT_EQ(run_cli(run_args(net_with_outputs("P", "avg_loss"))).status, 0);
  EXPECT_EQ(file_names(out_), (std::set<std::string>{live, ".spatialsoftmax-notes.txt", "P.npy",
                                                     "T.npy", "X.npy", "avg_loss.npy"}));
}

// --- help and version ---------------------------------------------------------

TEST(CliHelp, EachSubcommandHasHelp) {
  for (const char* command : {"eval", "demo", "ops", "run"}) {
    const RunResult run = run_cli({command, "--help"});
    EXPECT_EQ(run.status, 0) << command << ": " << run.err;
    EXPECT_NE(run.out.find(command), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("Usage"), std::string::npos) << run.out;
  }
  const RunResult eval_help = run_cli({"eval", "--help"});
  EXPECT_NE(eval_help.out.find("--out"), std::string::npos) << eval_help.out;
  const RunResult demo_help = run_cli({"demo", "--help"});
  EXPECT_NE(demo_help.out.find("--classes"), std::string::npos) << demo_help.out;
  const RunResult run_help = run_cli({"run", "--help"});
  for (const char* flag : {"--input", "--out", "--gradients"}) {
    EXPECT_NE(run_help.out.find(flag), std::string::npos) << run_help.out;
  }
}

TEST(CliHelp, TopLevelHelpListsSubcommands) {
  const RunResult run = run_cli({"--help"});
  EXPECT_EQ(run.status, 0);
  EXPECT_NE(run.out.find("eval"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("demo"), std::string::npos) << run.out;
}

TEST(CliHelp, NoSubcommandPrintsHelpAndFails) {
  const RunResult run = run_cli({});
  EXPECT_NE(run.status, 0);
  EXPECT_NE((run.out + run.err).find("eval"), std::string::npos) << run.out << run.err;
  EXPECT_NE((run.out + run.err).find("Usage"), std::string::npos) << run.out << run.err;
}

TEST(CliHelp, Version) {
  const RunResult run = run_cli({"--version"});
  EXPECT_EQ(run.status, 0);
  EXPECT_NE(run.out.find("spatialsoftmax"), std::string::npos) << run.out;
}

}  // namespace
}  // namespace spatialsoftmax::testing
