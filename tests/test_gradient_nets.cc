// Gradient nets built by add_gradient_ops: their structure (seed ConstantFill,
// gradient ops, Sum of a shared blob's parts, SSA errors), the Caffe2 spatial
// conformance cases run through them, and every differentiable operator's
// registered gradient against central finite differences (float64) of its
// forward operator, both run through nets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cli/case_runner.h"
#include "test_support.h"

namespace spatialsoftmax::op {
namespace {

namespace fs = std::filesystem;
using namespace test;

constexpr DType f64 = DType::kFloat64;
constexpr DType i32 = DType::kInt32;
constexpr DType i64 = DType::kInt64;

// X (2, 3, 2, 3): N = 2, C = 3, H = 2, W = 3.
const Shape kX = {2, 3, 2, 3};
const Shape kMap = {2, 2, 3};
const Shape kNhwc = {2, 2, 3, 3};

// Replaces the ConstantFill that add_gradient_ops seeded `loss`'s gradient
// with by a supplied upstream gradient blob.
::testing::AssertionResult supply_upstream(NetDef& net, const std::string& loss, Workspace& ws,
                                           Tensor upstream) {
  const auto it = std::find_if(net.ops.begin(), net.ops.end(), [&](const OperatorDef& op) {
    return op.type == "ConstantFill" && op.inputs == std::vector<std::string>{loss} &&
           op.outputs == std::vector<std::string>{loss + "_grad"};
  });
  if (it == net.ops.end()) {
    return ::testing::AssertionFailure() << "no ConstantFill seeds " << loss << "_grad";
  }
  net.ops.erase(it);
  ws.set(loss + "_grad", std::move(upstream));
  return ::testing::AssertionSuccess();
}

NetDef net_of(std::vector<OperatorDef> ops) {
  NetDef net;
  net.name = "test_net";
  net.ops = std::move(ops);
  return net;
}

// --- 4. add_gradient_ops -------------------------------------------------------

TEST(AddGradientOps, SpatialSoftmaxWithLossSeedThenGradient) {
  OperatorDef fwd = make_def("SpatialSoftmaxWithLoss", {"X", "T"}, {"P", "avg_loss"},
                             {{"scale", 1.0f}, {"order", std::string("NCHW")}});
  NetDef net = net_of({fwd});
  add_gradient_ops(net, {"avg_loss"});
  ASSERT_EQ(net.ops.size(), 3u);
  EXPECT_EQ(net.ops[0], fwd);
  OperatorDef seed;
  seed.type = "ConstantFill";
  seed.inputs = {"avg_loss"};
  seed.outputs = {"avg_loss_grad"};
  seed.args = {{"value", 1.0f}};
  EXPECT_EQ(net.ops[1], seed);
  OperatorDef grad;
  grad.type = "SpatialSoftmaxWithLossGradient";
  grad.inputs = {"X", "T", "P", "avg_loss_grad"};
  grad.outputs = {"X_grad"};
  grad.args = fwd.args;
  grad.is_gradient_op = true;
  EXPECT_EQ(net.ops[2], grad);

  // With weights.
  NetDef weighted =
      net_of({make_def("SpatialSoftmaxWithLoss", {"X", "T", "W"}, {"P", "avg_loss"})});
  add_gradient_ops(weighted, {"avg_loss"});
  ASSERT_EQ(weighted.ops.size(), 3u);
  EXPECT_EQ(weighted.ops[1], seed);
  EXPECT_EQ(weighted.ops[2].inputs,
            (std::vector<std::string>{"X", "T", "W", "P", "avg_loss_grad"}));
  EXPECT_EQ(weighted.ops[2].outputs, std::vector<std::string>{"X_grad"});
}

// The Caffe2 spatial conformance cases, run through the net add_gradient_ops
// builds from the forward op alone.
std::vector<fs::path> caffe2_spatial_cases() {
  std::vector<fs::path> dirs;
  std::error_code ec;
  const fs::path root = testing::conformance_dir() / "caffe2-spatial";
  if (!fs::is_directory(root, ec)) return dirs;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (fs::is_regular_file(entry.path() / "case.json")) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

TEST(Caffe2SpatialNet, HasCases) {
  // The README lists 22 cases; some have d_avg_loss != 1.
  const std::vector<fs::path> dirs = caffe2_spatial_cases();
  EXPECT_EQ(dirs.size(), 22u) << testing::conformance_dir();
  int unit = 0, other = 0;
  for (const fs::path& dir : dirs) {
    const cases::Case c = cases::load_case(dir);
    (c.arrays.at("d_avg_loss").at(0) == 1.0 ? unit : other)++;
  }
  EXPECT_GT(unit, 0);
  EXPECT_GT(other, 0);
}

class Caffe2SpatialNet : public ::testing::TestWithParam<fs::path> {};

TEST_P(Caffe2SpatialNet, ReproducesTheCase) {
  const cases::Case c = cases::load_case(GetParam());
  ASSERT_EQ(c.op, "SpatialSoftmaxWithLoss");
  OperatorDef fwd = make_def("SpatialSoftmaxWithLoss", {"X", "T"}, {"P", "avg_loss"});
  if (c.arrays.contains("weight_tensor")) fwd.inputs.push_back("weight_tensor");
  if (c.attributes.contains("scale")) fwd.set_arg("scale", c.attributes.at("scale").get<float>());
  if (c.attributes.contains("order"))
    fwd.set_arg("order", c.attributes.at("order").get<std::string>());
  NetDef net = net_of({fwd});
  add_gradient_ops(net, {"avg_loss"});

  Workspace ws;
  for (const std::string& name : fwd.inputs) ws.set(name, copy(c.arrays.at(name)));
  const Tensor& d_avg_loss = c.arrays.at("d_avg_loss");
  if (d_avg_loss.at(0) != 1.0) {
    // An upstream gradient other than the seed's 1: the case's own blob.
    ASSERT_TRUE(supply_upstream(net, "avg_loss", ws, copy(d_avg_loss)));
  }
  run_net(net, ws);

  for (const auto& [blob, name] : std::vector<std::pair<std::string, std::string>>{
           {"P", "P"}, {"avg_loss", "avg_loss"}, {"X_grad", "dX"}}) {
    SCOPED_TRACE(c.dir.string() + ": " + name);
    ASSERT_TRUE(ws.has(blob));
    const Tensor& got = ws.get(blob);
    EXPECT_EQ(got.dtype(), DType::kFloat32);
    const std::string reference = cases::reference_name(c, name);
    const Tensor want = cases::read_array(c, reference);
    const testing::Tolerance tol = testing::conformance_tolerance(c.op, name, want);
    std::string why;
    EXPECT_TRUE(testing::all_close(got, want, tol.rtol, tol.atol, &why))
        << blob << " against " << reference << ": " << why;
  }
}

std::string case_dir_name(const ::testing::TestParamInfo<fs::path>& param_info) {
  std::string name = param_info.param.filename().string();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Cases, Caffe2SpatialNet, ::testing::ValuesIn(caffe2_spatial_cases()),
                         case_dir_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Caffe2SpatialNet);

// X feeds CrossEntropy (loss L1) and Softmax, whose output feeds an NLL loss
// (L2): X's gradient parts are summed by a Sum op.
std::vector<OperatorDef> shared_x_ops() {
  return {make_def("CrossEntropy", {"X", "T"}, {"L1"}),
          make_def("Softmax", {"X"}, {"S"}, {{"axis", std::int64_t{1}}}),
          make_def("NegativeLogLikelihoodLoss", {"S", "T"}, {"L2"})};
}

Blobs shared_x_inputs() {
  Blobs b;
  b.emplace("X", rnd(kX, 101));
  b.emplace("T", labels(i64, kMap, 3, 102));
  return b;
}

TEST(AddGradientOps, SharedBlobGradientsAreSummed) {
  NetDef net = net_of(shared_x_ops());
  add_gradient_ops(net, {"L1", "L2"});
  struct Expected {
    std::string type;
    std::vector<std::string> inputs, outputs;
  };
  const std::vector<Expected> want = {
      {"CrossEntropy", {"X", "T"}, {"L1"}},
      {"Softmax", {"X"}, {"S"}},
      {"NegativeLogLikelihoodLoss", {"S", "T"}, {"L2"}},
      {"ConstantFill", {"L1"}, {"L1_grad"}},
      {"ConstantFill", {"L2"}, {"L2_grad"}},
      {"NegativeLogLikelihoodLossGradient", {"S", "T", "L2_grad"}, {"S_grad"}},
      {"SoftmaxGradient", {"S", "S_grad"}, {"X_grad"}},
      {"CrossEntropyGradient", {"X", "T", "", "", "L1_grad"}, {"X_grad_autosplit_0"}},
      {"Sum", {"X_grad", "X_grad_autosplit_0"}, {"X_grad"}},
  };
  ASSERT_EQ(net.ops.size(), want.size());
  for (std::size_t k = 0; k < want.size(); ++k) {
    SCOPED_TRACE("op " + std::to_string(k));
    EXPECT_EQ(net.ops[k].type, want[k].type);
    EXPECT_EQ(net.ops[k].inputs, want[k].inputs);
    EXPECT_EQ(net.ops[k].outputs, want[k].outputs);
    EXPECT_EQ(net.ops[k].is_gradient_op, k >= 5 && k <= 7);
  }

  Workspace ws;
  put(ws, shared_x_inputs());
  run_net(net, ws);

  // The same gradients computed by separate nets.
  auto separate = [&](std::vector<OperatorDef> ops, const std::string& loss) {
    NetDef n = net_of(std::move(ops));
    add_gradient_ops(n, {loss});
    Workspace w;
    put(w, shared_x_inputs());
    run_net(n, w);
    return copy(w.get("X_grad"));
  };
  const std::vector<OperatorDef> ops = shared_x_ops();
  const Tensor g1 = separate({ops[0]}, "L1");
  const Tensor g2 = separate({ops[1], ops[2]}, "L2");
  const Tensor& sum = ws.get("X_grad");
  ASSERT_EQ(sum.shape(), kX);
  ASSERT_EQ(g1.shape(), kX);
  ASSERT_EQ(g2.shape(), kX);
  for (std::int64_t i = 0; i < sum.numel(); ++i) {
    EXPECT_EQ(sum.at(i), g1.at(i) + g2.at(i)) << "element " << i;
  }
  EXPECT_GT(testing::max_abs(g1), 1e-3);
  EXPECT_GT(testing::max_abs(g2), 1e-3);
  EXPECT_TRUE(testing::bitwise_equal(ws.get("X_grad_autosplit_0"), g1));
}

// semantics 2.3: the gradient flowing into SpatialSoftmaxWithLoss's P is not
// used, so a loss computed from P adds nothing to X's gradient (Caffe2).
TEST(AddGradientOps, SpatialSoftmaxWithLossDropsTheGradientOfP) {
  Blobs inputs;
  inputs.emplace("X", rnd(kX, 103));
  inputs.emplace("T", values(i32, kMap, {0, 1, 2, -1, 2, 1, 1, 0, -1, 2, 2, 0}));
  const OperatorDef loss = make_def("SpatialSoftmaxWithLoss", {"X", "T"}, {"P", "avg_loss"});
  NetDef net = net_of({loss, make_def("SpatialSoftArgmax", {"P"}, {"kp"})});
  add_gradient_ops(net, {"avg_loss", "kp"});
  Workspace ws;
  put(ws, inputs);
  run_net(net, ws);
  ASSERT_TRUE(ws.has("P_grad"));
  EXPECT_GT(testing::max_abs(ws.get("P_grad")), 1e-3);

  NetDef alone = net_of({loss});
  add_gradient_ops(alone, {"avg_loss"});
  Workspace ws_alone;
  put(ws_alone, inputs);
  run_net(alone, ws_alone);
  EXPECT_TRUE(testing::bitwise_equal(ws.get("X_grad"), ws_alone.get("X_grad")));
}

TEST(AddGradientOps, ThreeConsumersGiveTwoAutosplits) {
  NetDef net = net_of({make_def("KLDiv", {"X", "Q"}, {"kl"}),
                       make_def("LogSoftmax", {"X"}, {"LP"}, {{"axis", std::int64_t{1}}}),
                       make_def("NegativeLogLikelihoodLoss", {"LP", "T"}, {"nll"}),
                       make_def("SpatialSoftmax", {"X"}, {"S"})});
  add_gradient_ops(net, {"kl", "nll", "S"});
  const OperatorDef& sum = net.ops.back();
  EXPECT_EQ(sum.type, "Sum");
  EXPECT_EQ(sum.inputs,
            (std::vector<std::string>{"X_grad", "X_grad_autosplit_0", "X_grad_autosplit_1"}));
  EXPECT_EQ(sum.outputs, std::vector<std::string>{"X_grad"});
  EXPECT_FALSE(sum.is_gradient_op);
}

TEST(AddGradientOps, Errors) {
  // A blob written twice.
  NetDef twice = net_of({make_def("Softmax", {"X"}, {"Y"}), make_def("LogSoftmax", {"X"}, {"Y"}),
                         make_def("CrossEntropy", {"Y", "T"}, {"L"})});
  const NetDef twice_before = twice;
  EXPECT_ERROR_MENTIONS(add_gradient_ops(twice, {"L"}),
                        {"add_gradient_ops", "op 1", "LogSoftmax", "'Y'", "second time"});
  EXPECT_EQ(twice, twice_before);  // nothing appended
  // Overwriting an external input.
  NetDef overwrite = net_of({make_def("Softmax", {"X"}, {"X"})});
  overwrite.external_inputs = {"X"};
  EXPECT_ERROR_MENTIONS(add_gradient_ops(overwrite, {"X"}), {"'X'", "second time"});
  // Losses no op produces, or given twice.
  NetDef net = net_of({make_def("CrossEntropy", {"X", "T"}, {"L"})});
  EXPECT_ERROR_MENTIONS(add_gradient_ops(net, {"nope"}), {"'nope'", "not produced"});
  EXPECT_ERROR_MENTIONS(add_gradient_ops(net, {"L", "L"}), {"'L'", "given twice"});
  EXPECT_EQ(net.ops.size(), 1u);
  // An operator without a gradient on the way to the loss.
  NetDef no_grad =
      net_of({make_def("Sum", {"A", "B"}, {"X"}), make_def("CrossEntropy", {"X", "T"}, {"L"})});
  EXPECT_ERROR_MENTIONS(add_gradient_ops(no_grad, {"L"}),
                        {"op 0", "Sum", "no registered gradient"});
  EXPECT_EQ(no_grad.ops.size(), 2u);
  // A missing gradient the maker needs (SpatialSoftmaxWithLoss's P only).
  NetDef p_only = net_of({make_def("SpatialSoftmaxWithLoss", {"X", "T"}, {"P", "avg_loss"})});
  EXPECT_ERROR_MENTIONS(add_gradient_ops(p_only, {"P"}),
                        {"Gradient of output avg_loss is not provided!"});
}

// --- 5. every gradient operator against finite differences ---------------------

// The objective J = sum over `losses` of <U, output>: U is the given upstream
// tensor, or all ones (the ConstantFill seed) when none is given.
struct Upstream {
  std::string output;
  std::optional<Blob> tensor;
};

struct GradCase {
  std::string name;
  std::vector<OperatorDef> forward;
  Blobs inputs;
  std::vector<Upstream> losses;
  std::string wrt = "X";
  // analytic = factor * numeric (Caffe2's CPU forward ignores scale, its
  // gradient applies it).
  double factor = 1.0;
};

std::ostream& operator<<(std::ostream& out, const GradCase& c) { return out << c.name; }

Upstream seed(std::string output) { return {std::move(output), std::nullopt}; }
Upstream upstream(std::string output, Tensor t) { return {std::move(output), Blob(std::move(t))}; }

Tensor spatial_labels() { return values(i32, kMap, {0, 1, 2, -1, 2, 1, 1, 0, -1, 2, 2, 0}); }

std::vector<GradCase> grad_cases() {
  std::vector<GradCase> cs;
  auto add = [&](std::string name, std::vector<OperatorDef> forward, Blobs inputs,
                 std::vector<Upstream> losses, double factor = 1.0) {
    cs.push_back(
        {std::move(name), std::move(forward), std::move(inputs), std::move(losses), "X", factor});
  };
  auto str = [](const char* s) { return ArgValue(std::string(s)); };
  auto i = [](std::int64_t v) { return ArgValue(v); };
  const Tensor x = rnd(kX, 1);

  // Caffe2 SpatialSoftmaxWithLoss (logits in [-2, 2]: no probability near
  // the 1e-20 floor).
  const OperatorDef sswl = make_def("SpatialSoftmaxWithLoss", {"X", "T"}, {"P", "avg_loss"});
  add("SpatialSoftmaxWithLoss", {sswl}, {{"X", copy(x)}, {"T", spatial_labels()}},
      {seed("avg_loss")});
  add("SpatialSoftmaxWithLoss_weights",
      {make_def("SpatialSoftmaxWithLoss", {"X", "T", "W"}, {"P", "avg_loss"})},
      {{"X", copy(x)}, {"T", spatial_labels()}, {"W", rnd(kMap, 2, 0.0, 2.0)}}, {seed("avg_loss")});
  add("SpatialSoftmaxWithLoss_d_avg_loss", {sswl}, {{"X", copy(x)}, {"T", spatial_labels()}},
      {upstream("avg_loss", Tensor::scalar(f64, -1.7))});
  add("SpatialSoftmaxWithLoss_scale_half",
      {make_def("SpatialSoftmaxWithLoss", {"X", "T"}, {"P", "avg_loss"}, {{"scale", 0.5f}})},
      {{"X", copy(x)}, {"T", spatial_labels()}}, {seed("avg_loss")}, 0.5);
  add("SpatialSoftmaxWithLoss_cuda_variant_scale",
      {make_def("SpatialSoftmaxWithLoss", {"X", "T", "W"}, {"P", "avg_loss"},
                {{"scale", 0.5f}, {"caffe2_variant", str("cuda")}})},
      {{"X", copy(x)}, {"T", spatial_labels()}, {"W", rnd(kMap, 2, 0.0, 2.0)}}, {seed("avg_loss")});
  // Caffe2 SoftmaxWithLoss.
  add("SoftmaxWithLoss_2d", {make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"})},
      {{"X", rnd({4, 5}, 3)}, {"T", labels(i32, {4}, 5, 4)}}, {seed("L")});
  add("SoftmaxWithLoss_4d_axis1_scale",
      {make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"}, {{"scale", 0.5f}})},
      {{"X", copy(x)}, {"T", labels(i32, {2}, 18, 5)}}, {upstream("L", Tensor::scalar(f64, 1.3))});
  add("SoftmaxWithLoss_axis2_weights",
      {make_def("SoftmaxWithLoss", {"X", "T", "W"}, {"P", "L"}, {{"axis", i(2)}})},
      {{"X", copy(x)}, {"T", labels(i32, {2, 3}, 6, 6)}, {"W", rnd({6}, 7, 0.2, 1.5)}},
      {seed("L")});
  add("SoftmaxWithLoss_label_prob_weights",
      {make_def("SoftmaxWithLoss", {"X", "T", "W"}, {"P", "L"}, {{"label_prob", i(1)}})},
      {{"X", rnd({4, 5}, 3)}, {"T", probabilities({4, 5}, 1, 8)}, {"W", rnd({4}, 9, 0.2, 1.5)}},
      {seed("L")});
  add("SoftmaxWithLoss_average_by_batch_size",
      {make_def("SoftmaxWithLoss", {"X", "T", "W"}, {"P", "L"}, {{"average_by_batch_size", i(1)}})},
      {{"X", rnd({4, 5}, 3)}, {"T", labels(i32, {4}, 5, 4)}, {"W", rnd({4}, 9, 0.2, 1.5)}},
      {upstream("L", Tensor::scalar(f64, 0.7))});
  // ONNX SoftmaxCrossEntropyLoss.
  add("SoftmaxCrossEntropyLoss_mean", {make_def("SoftmaxCrossEntropyLoss", {"X", "y"}, {"L"})},
      {{"X", copy(x)}, {"y", labels(i64, kMap, 3, 10)}}, {seed("L")});
  add("SoftmaxCrossEntropyLoss_weights_ignore_index",
      {make_def("SoftmaxCrossEntropyLoss", {"X", "y", "w"}, {"L"}, {{"ignore_index", i(1)}})},
      {{"X", copy(x)}, {"y", labels(i64, kMap, 3, 10)}, {"w", rnd({3}, 11, 0.2, 1.5)}},
      {seed("L")});
  add("SoftmaxCrossEntropyLoss_sum_log_prob",
      {make_def("SoftmaxCrossEntropyLoss", {"X", "y"}, {"L", "LP"}, {{"reduction", str("sum")}})},
      {{"X", copy(x)}, {"y", labels(i32, kMap, 3, 12)}}, {seed("L"), upstream("LP", rnd(kX, 13))});
  add("SoftmaxCrossEntropyLoss_none",
      {make_def("SoftmaxCrossEntropyLoss", {"X", "y", "w"}, {"L"}, {{"reduction", str("none")}})},
      {{"X", copy(x)}, {"y", labels(i64, kMap, 3, 10)}, {"w", rnd({3}, 11, 0.2, 1.5)}},
      {upstream("L", rnd(kMap, 14))});
  add("SoftmaxCrossEntropyLoss_log_prob_only",
      {make_def("SoftmaxCrossEntropyLoss", {"X", "y"}, {"L", "LP"})},
      {{"X", copy(x)}, {"y", labels(i64, kMap, 3, 10)}}, {upstream("LP", rnd(kX, 13))});
  // ONNX NegativeLogLikelihoodLoss (input: any real log-probabilities).
  add("NegativeLogLikelihoodLoss_weights_ignore_index",
      {make_def("NegativeLogLikelihoodLoss", {"X", "y", "w"}, {"L"}, {{"ignore_index", i(2)}})},
      {{"X", copy(x)}, {"y", labels(i64, kMap, 3, 15)}, {"w", rnd({3}, 11, 0.2, 1.5)}},
      {seed("L")});
  add("NegativeLogLikelihoodLoss_none",
      {make_def("NegativeLogLikelihoodLoss", {"X", "y"}, {"L"}, {{"reduction", str("none")}})},
      {{"X", copy(x)}, {"y", labels(i32, kMap, 3, 15)}}, {upstream("L", rnd(kMap, 16))});
  add("LogSoftmax_then_NegativeLogLikelihoodLoss",
      {make_def("LogSoftmax", {"X"}, {"LP"}, {{"axis", i(1)}}),
       make_def("NegativeLogLikelihoodLoss", {"LP", "y"}, {"L"}, {{"reduction", str("sum")}})},
      {{"X", copy(x)}, {"y", labels(i64, kMap, 3, 15)}}, {seed("L")});
  // Softmax and LogSoftmax (a seed of ones would give a zero gradient).
  add("Softmax_axis1", {make_def("Softmax", {"X"}, {"Y"}, {{"axis", i(1)}})}, {{"X", copy(x)}},
      {upstream("Y", rnd(kX, 17))});
  add("Softmax_axis_neg1", {make_def("Softmax", {"X"}, {"Y"}, {{"axis", i(-1)}})}, {{"X", copy(x)}},
      {upstream("Y", rnd(kX, 18))});
  add("LogSoftmax_axis1", {make_def("LogSoftmax", {"X"}, {"Y"}, {{"axis", i(1)}})},
      {{"X", copy(x)}}, {upstream("Y", rnd(kX, 19))});
  add("LogSoftmax_axis_neg1", {make_def("LogSoftmax", {"X"}, {"Y"})}, {{"X", copy(x)}},
      {upstream("Y", rnd(kX, 20))});
  add("LogSoftmax_axis1_seed", {make_def("LogSoftmax", {"X"}, {"Y"}, {{"axis", i(1)}})},
      {{"X", copy(x)}}, {seed("Y")});
  // CrossEntropy.
  add("CrossEntropy_mean", {make_def("CrossEntropy", {"X", "T"}, {"L"})},
      {{"X", copy(x)}, {"T", labels(i64, kMap, 3, 21)}}, {seed("L")});
  add("CrossEntropy_weights_ignore_index",
      {make_def("CrossEntropy", {"X", "T", "cw", "pw"}, {"L"}, {{"ignore_index", i(0)}})},
      {{"X", copy(x)},
       {"T", labels(i32, kMap, 3, 22)},
       {"cw", rnd({3}, 23, 0.2, 1.5)},
       {"pw", rnd(kMap, 24, 0.0, 2.0)}},
      {seed("L")});
  add("CrossEntropy_label_smoothing_weights_ignore_index",
      {make_def("CrossEntropy", {"X", "T", "cw"}, {"L"},
                {{"label_smoothing", 0.2f}, {"ignore_index", i(2)}})},
      {{"X", copy(x)}, {"T", labels(i64, kMap, 3, 25)}, {"cw", rnd({3}, 23, 0.2, 1.5)}},
      {seed("L")});
  add("CrossEntropy_probability_targets_smoothing_weights",
      {make_def("CrossEntropy", {"X", "T", "cw", "pw"}, {"L"}, {{"label_smoothing", 0.1f}})},
      {{"X", copy(x)},
       {"T", probabilities(kX, 1, 26)},
       {"cw", rnd({3}, 23, 0.2, 1.5)},
       {"pw", rnd(kMap, 24, 0.0, 2.0)}},
      {seed("L")});
  add("CrossEntropy_probability_targets_sum",
      {make_def("CrossEntropy", {"X", "T"}, {"L"}, {{"reduction", str("sum")}})},
      {{"X", copy(x)}, {"T", probabilities(kX, 1, 27)}}, {seed("L")});
  add("CrossEntropy_nhwc_weights",
      {make_def("CrossEntropy", {"X", "T", "cw"}, {"L"}, {{"order", str("NHWC")}})},
      {{"X", rnd(kNhwc, 28)}, {"T", labels(i64, {2, 2, 3}, 3, 29)}, {"cw", rnd({3}, 23, 0.2, 1.5)}},
      {seed("L")});
  add("CrossEntropy_none_upstream",
      {make_def("CrossEntropy", {"X", "T", "", "pw"}, {"L"}, {{"reduction", str("none")}})},
      {{"X", copy(x)}, {"T", labels(i64, kMap, 3, 21)}, {"pw", rnd(kMap, 24, 0.0, 2.0)}},
      {upstream("L", rnd(kMap, 30))});
  add("CrossEntropy_every_output",
      {make_def("CrossEntropy", {"X", "T"}, {"L", "P", "LP", "H"}, {{"label_smoothing", 0.05f}})},
      {{"X", copy(x)}, {"T", labels(i64, kMap, 3, 21)}},
      {seed("L"), upstream("P", rnd(kX, 31)), upstream("LP", rnd(kX, 32)),
       upstream("H", rnd(kMap, 33))});
  add("CrossEntropy_entropy_only_nhwc",
      {make_def("CrossEntropy", {"X", "T"}, {"L", "", "", "H"}, {{"order", str("NHWC")}})},
      {{"X", rnd(kNhwc, 28)}, {"T", labels(i64, {2, 2, 3}, 3, 29)}},
      {upstream("H", rnd(kMap, 34))});
  // KLDiv.
  const Tensor q = probabilities(kX, 1, 35);
  add("KLDiv_mean", {make_def("KLDiv", {"X", "Q"}, {"kl"})}, {{"X", copy(x)}, {"Q", copy(q)}},
      {seed("kl")});
  add("KLDiv_batchmean", {make_def("KLDiv", {"X", "Q"}, {"kl"}, {{"reduction", str("batchmean")}})},
      {{"X", copy(x)}, {"Q", copy(q)}}, {upstream("kl", Tensor::scalar(f64, 2.5))});
  add("KLDiv_sum", {make_def("KLDiv", {"X", "Q"}, {"kl"}, {{"reduction", str("sum")}})},
      {{"X", copy(x)}, {"Q", copy(q)}}, {seed("kl")});
  add("KLDiv_none", {make_def("KLDiv", {"X", "Q"}, {"kl"}, {{"reduction", str("none")}})},
      {{"X", copy(x)}, {"Q", copy(q)}}, {upstream("kl", rnd(kX, 36))});
  add("KLDiv_log_target",
      {make_def("KLDiv", {"X", "Q"}, {"kl"}, {{"log_target", i(1)}, {"reduction", str("sum")}})},
      {{"X", copy(x)}, {"Q", rnd(kX, 37, -3.0, 0.0)}}, {seed("kl")});
  add("KLDiv_nhwc_none_log_target",
      {make_def("KLDiv", {"X", "Q"}, {"kl"},
                {{"order", str("NHWC")}, {"reduction", str("none")}, {"log_target", i(1)}})},
      {{"X", rnd(kNhwc, 38)}, {"Q", rnd(kNhwc, 39, -3.0, 0.0)}}, {upstream("kl", rnd(kNhwc, 40))});
  // Spatial softmax and soft-argmax.
  add("SpatialSoftmax", {make_def("SpatialSoftmax", {"X"}, {"S"}, {{"temperature", 0.7f}})},
      {{"X", copy(x)}}, {upstream("S", rnd(kX, 41))});
  add("SpatialSoftmax_nhwc_multiply",
      {make_def(
          "SpatialSoftmax", {"X"}, {"S"},
          {{"order", str("NHWC")}, {"temperature", 1.5f}, {"temperature_mode", str("multiply")}})},
      {{"X", rnd(kNhwc, 42)}}, {upstream("S", rnd(kNhwc, 43))});
  add("SpatialSoftArgmax_keypoints", {make_def("SpatialSoftArgmax", {"X"}, {"kp"})},
      {{"X", copy(x)}}, {upstream("kp", rnd({2, 3, 2}, 44))});
  add("SpatialSoftArgmax_S_and_covariance",
      {make_def("SpatialSoftArgmax", {"X"}, {"kp", "S", "cov"}, {{"temperature", 0.8f}})},
      {{"X", copy(x)}},
      {upstream("kp", rnd({2, 3, 2}, 45)), upstream("S", rnd(kX, 46)),
       upstream("cov", rnd({2, 3, 2, 2}, 47))});
  add("SpatialSoftArgmax_covariance_only_pixel_nhwc_3d",
      {make_def("SpatialSoftArgmax", {"X"}, {"kp", "", "cov"},
                {{"order", str("NHWC")}, {"coordinates", str("pixel")}})},
      {{"X", rnd({1, 2, 3, 2, 2}, 48)}}, {upstream("cov", rnd({1, 2, 3, 3}, 49))});
  add("SpatialSoftArgmax_seeded_keypoints", {make_def("SpatialSoftArgmax", {"X"}, {"kp"})},
      {{"X", copy(x)}}, {seed("kp")});
  // Several ops: X shared by two losses.
  add("Shared_X_Sum", shared_x_ops(), {{"X", copy(x)}, {"T", labels(i64, kMap, 3, 50)}},
      {seed("L1"), seed("L2")});
  return cs;
}

// J for one forward run.
double objective(const std::vector<OperatorDef>& forward, const Blobs& inputs,
                 const std::vector<Upstream>& losses, const std::string& wrt, const Tensor& x) {
  Workspace ws;
  put(ws, inputs);
  ws.set(wrt, copy(x));
  run_net(net_of(forward), ws);
  double j = 0;
  for (const Upstream& u : losses) {
    const Tensor& out = ws.get(u.output);
    EXPECT_EQ(out.dtype(), f64) << u.output;
    if (u.tensor) {
      EXPECT_EQ(out.shape(), u.tensor->get().shape()) << u.output;
    }
    for (std::int64_t k = 0; k < out.numel(); ++k) {
      j += (u.tensor ? u.tensor->get().at(k) : 1.0) * out.at(k);
    }
  }
  return j;
}

class FiniteDifferences : public ::testing::TestWithParam<GradCase> {};

TEST_P(FiniteDifferences, GradientNetMatches) {
  const GradCase& c = GetParam();
  // Analytic: the forward net plus add_gradient_ops, seeds replaced by the
  // given upstream tensors.
  NetDef net = net_of(c.forward);
  std::vector<std::string> names;
  for (const Upstream& u : c.losses) names.push_back(u.output);
  add_gradient_ops(net, names);
  Workspace ws;
  put(ws, c.inputs);
  for (const Upstream& u : c.losses) {
    if (u.tensor) {
      ASSERT_TRUE(supply_upstream(net, u.output, ws, copy(u.tensor->get())));
    }
  }
  ASSERT_NO_THROW(run_net(net, ws));
  const Tensor& x = c.inputs.at(c.wrt).get();
  ASSERT_TRUE(ws.has(c.wrt + "_grad"));
  const Tensor& analytic = ws.get(c.wrt + "_grad");
  ASSERT_EQ(analytic.dtype(), f64);
  ASSERT_EQ(analytic.shape(), x.shape());
  const double scale = testing::max_abs(analytic);
  EXPECT_GT(scale, 1e-4) << "a gradient this small checks little";

  // Numeric: central differences of the forward net alone.
  constexpr double h = 1e-6;
  const double tol = 1e-7 * std::max(scale, 1e-2);
  double worst = 0;
  for (std::int64_t k = 0; k < x.numel(); ++k) {
    Tensor plus = copy(x), minus = copy(x);
    plus.data_as<double>()[k] += h;
    minus.data_as<double>()[k] -= h;
    const double numeric = (objective(c.forward, c.inputs, c.losses, c.wrt, plus) -
                            objective(c.forward, c.inputs, c.losses, c.wrt, minus)) /
                           (2 * h);
    const double err = std::abs(analytic.at(k) - c.factor * numeric);
    worst = std::max(worst, err);
    EXPECT_LE(err, tol) << "element " << k << ": analytic " << analytic.at(k) << ", numeric "
                        << c.factor * numeric;
  }
  RecordProperty("worst_error_over_tolerance", std::to_string(worst / tol));
}

std::string grad_case_name(const ::testing::TestParamInfo<GradCase>& param_info) {
  return param_info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Operators, FiniteDifferences, ::testing::ValuesIn(grad_cases()),
                         grad_case_name);

TEST(FiniteDifferences, EveryDifferentiableOperatorHasACase) {
  std::set<std::string> covered;
  for (const GradCase& c : grad_cases()) {
    for (const OperatorDef& op : c.forward) covered.insert(op.type);
  }
  for (const std::string& type : schema_types()) {
    if (has_gradient(type)) {
      EXPECT_TRUE(covered.contains(type)) << type;
    }
  }
}

}  // namespace
}  // namespace spatialsoftmax::op
