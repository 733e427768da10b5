// The Caffe2-style operator layer: schema validation and its messages, the
// per-device registry, shape inference of every operator (checked against
// hand-written specs and against what the operator really produces), and the
// gradient makers' emitted OperatorDefs compared field by field with
// hand-written ones, errors of the API named in the operators' terms, and
// ConstantFill's value and Sum's overflow checks. Gradient values are checked
// in test_gradient_nets.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "test_support.h"

namespace spatialsoftmax::op {
namespace {

using namespace test;
using std::nullopt;

constexpr DType f64 = DType::kFloat64;
constexpr DType f32 = DType::kFloat32;
constexpr DType i32 = DType::kInt32;
constexpr DType i64 = DType::kInt64;

OperatorDef spatial_loss(std::vector<std::string> inputs = {"X", "T"},
                         std::vector<std::string> outputs = {"P", "avg_loss"},
                         std::vector<Argument> args = {}) {
  return make_def("SpatialSoftmaxWithLoss", std::move(inputs), std::move(outputs), std::move(args));
}

void validate(const OperatorDef& def) { schema_of(def.type).validate(def); }

// --- 1. schema validation ---------------------------------------------------

TEST(SchemaValidation, ValidDefsPass) {
  EXPECT_NO_THROW(validate(spatial_loss()));
  EXPECT_NO_THROW(validate(spatial_loss({"X", "T", "W"})));
  EXPECT_NO_THROW(validate(spatial_loss({"X", "T"}, {"P", "avg_loss"},
                                        {{"scale", 0.5f}, {"order", std::string("NCHW")}})));
  // Caffe2 front ends write integral floats as ints.
  EXPECT_NO_THROW(validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"scale", std::int64_t{2}}})));
  EXPECT_NO_THROW(validate(make_def("Sum", {"a", "b", "c", "d"}, {"s"})));
}

TEST(SchemaValidation, WrongNumberOfInputs) {
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X"})),
      {"SpatialSoftmaxWithLoss", "inputs", "expected 2 to 3", "X, T, [weight_tensor]", "got 1"});
  EXPECT_ERROR_MENTIONS(validate(spatial_loss({"X", "T", "W", "Z"})),
                        {"SpatialSoftmaxWithLoss", "inputs", "expected 2 to 3", "got 4"});
  EXPECT_ERROR_MENTIONS(
      validate(make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "P"}, {"dX"})),
      {"SpatialSoftmaxWithLossGradient", "inputs", "expected 4 to 5", "got 3"});
  EXPECT_ERROR_MENTIONS(validate(make_def("Softmax", {"a", "b"}, {"y"})),
                        {"Softmax", "inputs", "expected 1", "got 2"});
  EXPECT_ERROR_MENTIONS(validate(make_def("Sum", {}, {"s"})),
                        {"Sum", "inputs", "expected at least 1", "got 0"});
  // A named operator is named with its type.
  OperatorDef named = spatial_loss({"X"});
  named.name = "loss1";
  EXPECT_ERROR_MENTIONS(validate(named), {"SpatialSoftmaxWithLoss 'loss1'", "got 1"});
}

TEST(SchemaValidation, WrongNumberOfOutputs) {
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T"}, {"P"})),
      {"SpatialSoftmaxWithLoss", "outputs", "expected 2", "P, avg_loss", "got 1"});
  EXPECT_ERROR_MENTIONS(validate(spatial_loss({"X", "T"}, {"P", "L", "Z"})),
                        {"SpatialSoftmaxWithLoss", "outputs", "expected 2", "got 3"});
  // SoftmaxWithLoss takes a third (never written) output, as in Caffe2.
  EXPECT_NO_THROW(validate(make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L", "U"})));
  EXPECT_ERROR_MENTIONS(validate(make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L", "U", "V"})),
                        {"SoftmaxWithLoss", "outputs", "expected 2 to 3", "got 4"});
  EXPECT_ERROR_MENTIONS(validate(make_def("CrossEntropy", {"X", "T"}, {})),
                        {"CrossEntropy", "outputs", "expected 1 to 4", "got 0"});
}

TEST(SchemaValidation, UnknownArgument) {
  EXPECT_ERROR_MENTIONS(validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"scal", 1.0f}})),
                        {"SpatialSoftmaxWithLoss", "unknown argument 'scal'", "scale", "order"});
  EXPECT_ERROR_MENTIONS(validate(make_def("Sum", {"a"}, {"s"}, {{"axis", std::int64_t{1}}})),
                        {"Sum", "unknown argument 'axis'", "none"});
  // ignore_index is not a Caffe2 spatial argument (-1 is hard-wired).
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"ignore_index", std::int64_t{-1}}})),
      {"SpatialSoftmaxWithLoss", "'ignore_index'"});
}

TEST(SchemaValidation, WrongArgumentType) {
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"scale", std::string("1")}})),
      {"SpatialSoftmaxWithLoss", "argument 'scale'", "expected float", "got string"});
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"order", std::int64_t{0}}})),
      {"SpatialSoftmaxWithLoss", "argument 'order'", "expected string", "got int"});
  EXPECT_ERROR_MENTIONS(validate(make_def("Softmax", {"x"}, {"y"}, {{"axis", 1.0f}})),
                        {"Softmax", "argument 'axis'", "expected int", "got float"});
  EXPECT_ERROR_MENTIONS(
      validate(make_def("ConstantFill", {}, {"y"}, {{"shape", std::vector<float>{2.f}}})),
      {"ConstantFill", "argument 'shape'", "expected ints", "got floats"});
  EXPECT_ERROR_MENTIONS(
      validate(make_def("CrossEntropy", {"X", "T"}, {"L"}, {{"ignore_index", 1.0f}})),
      {"CrossEntropy", "argument 'ignore_index'", "expected int", "got float"});
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"scale", std::monostate{}}})),
      {"SpatialSoftmaxWithLoss", "argument 'scale'", "expected float", "none"});
}

TEST(SchemaValidation, DuplicateArgument) {
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"scale", 1.0f}, {"scale", 2.0f}})),
      {"SpatialSoftmaxWithLoss", "argument 'scale'", "given twice"});
  EXPECT_ERROR_MENTIONS(validate(make_def("Softmax", {"x"}, {"y"},
                                          {{"axis", std::int64_t{1}}, {"axis", std::int64_t{1}}})),
                        {"Softmax", "'axis'", "given twice"});
}

TEST(SchemaValidation, MissingBlobName) {
  EXPECT_ERROR_MENTIONS(validate(spatial_loss({"X", ""})),
                        {"SpatialSoftmaxWithLoss", "inputs 1 (T)", "expected a blob name"});
  EXPECT_ERROR_MENTIONS(validate(spatial_loss({"", "T"})),
                        {"SpatialSoftmaxWithLoss", "inputs 0 (X)", "expected a blob name"});
  // Caffe2's operators never skip an optional input by an empty name.
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T", ""})),
      {"SpatialSoftmaxWithLoss", "inputs 2 (weight_tensor)", "expected a blob name"});
  EXPECT_ERROR_MENTIONS(validate(spatial_loss({"X", "T"}, {"", "avg_loss"})),
                        {"SpatialSoftmaxWithLoss", "outputs 0 (P)", "expected a blob name"});
  // ONNX-style operators may skip optional ports, never required ones.
  EXPECT_NO_THROW(validate(make_def("SoftmaxCrossEntropyLoss", {"s", "l", ""}, {"loss", ""})));
  EXPECT_ERROR_MENTIONS(validate(make_def("SoftmaxCrossEntropyLoss", {"s", ""}, {"loss"})),
                        {"SoftmaxCrossEntropyLoss", "inputs 1 (labels)", "expected a blob name"});
  EXPECT_ERROR_MENTIONS(validate(make_def("CrossEntropy", {"X", "T"}, {"", "prob"})),
                        {"CrossEntropy", "outputs 0 (loss)", "expected a blob name"});
  EXPECT_ERROR_MENTIONS(validate(make_def("Sum", {"a", ""}, {"s"})),
                        {"Sum", "inputs 1", "expected a blob name"});
}

// SoftmaxWithLoss takes NCHW only, as in Caffe2; the spatial operators NHWC
// too (an extension).
TEST(SchemaValidation, Caffe2OrderNchwAndNhwcForTheSpatialOps) {
  const std::vector<OperatorDef> softmax_defs = {
      make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"}),
      make_def("SoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"}),
  };
  for (OperatorDef def : softmax_defs) {
    SCOPED_TRACE(def.type);
    EXPECT_NO_THROW(validate(def));
    def.set_arg("order", std::string("NHWC"));
    EXPECT_ERROR_MENTIONS(validate(def),
                          {def.type, "'order'", "NHWC", "Only NCHW order is supported right now."});
    EXPECT_ERROR_MENTIONS(create_operator(def),
                          {def.type, "Only NCHW order is supported right now."});
  }
  const std::vector<OperatorDef> spatial_defs = {
      spatial_loss(),
      make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"}),
  };
  for (OperatorDef def : spatial_defs) {
    SCOPED_TRACE(def.type);
    def.set_arg("order", std::string("NHWC"));
    EXPECT_NO_THROW(validate(def));
    def.set_arg("order", std::string("nchw"));
    EXPECT_ERROR_MENTIONS(validate(def), {def.type, "'order'", "nchw", "expected NCHW or NHWC"});
  }
}

TEST(SchemaValidation, NegativeScale) {
  for (const char* type : {"SpatialSoftmaxWithLoss", "SoftmaxWithLoss"}) {
    SCOPED_TRACE(type);
    OperatorDef def = make_def(type, {"X", "T"}, {"P", "L"}, {{"scale", -0.5f}});
    EXPECT_ERROR_MENTIONS(validate(def), {type, "'scale'", "-0.5", "expected >= 0"});
    EXPECT_ERROR_MENTIONS(create_operator(def), {type, "'scale'", "expected >= 0"});
    def.set_arg("scale", 0.0f);
    EXPECT_NO_THROW(validate(def));
  }
  EXPECT_ERROR_MENTIONS(validate(make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "P", "dL"},
                                          {"dX"}, {{"scale", std::int64_t{-1}}})),
                        {"SpatialSoftmaxWithLossGradient", "'scale'", "expected >= 0"});
}

TEST(SchemaValidation, UnknownArgumentValues) {
  EXPECT_ERROR_MENTIONS(
      validate(spatial_loss({"X", "T"}, {"P", "L"}, {{"caffe2_variant", std::string("gpu")}})),
      {"SpatialSoftmaxWithLoss", "caffe2_variant", "gpu", "cpu or cuda"});
  EXPECT_ERROR_MENTIONS(validate(make_def("CrossEntropy", {"X", "T"}, {"L"},
                                          {{"reduction", std::string("average")}})),
                        {"CrossEntropy", "reduction", "average"});
  EXPECT_ERROR_MENTIONS(validate(make_def("CrossEntropy", {"X", "T"}, {"L"},
                                          {{"reduction", std::string("batchmean")}})),
                        {"CrossEntropy", "reduction", "batchmean"});
  EXPECT_NO_THROW(
      validate(make_def("KLDiv", {"X", "T"}, {"L"}, {{"reduction", std::string("batchmean")}})));
  EXPECT_ERROR_MENTIONS(
      validate(make_def("KLDiv", {"X", "T"}, {"L"}, {{"order", std::string("NDHWC")}})),
      {"KLDiv", "order", "NDHWC"});
  EXPECT_ERROR_MENTIONS(validate(make_def("SoftmaxCrossEntropyLoss", {"s", "l"}, {"L"},
                                          {{"reduction", std::string("batchmean")}})),
                        {"SoftmaxCrossEntropyLoss", "reduction", "batchmean"});
  EXPECT_ERROR_MENTIONS(validate(make_def("SpatialSoftArgmax", {"X"}, {"kp"},
                                          {{"temperature_mode", std::string("square")}})),
                        {"SpatialSoftArgmax", "temperature_mode", "square"});
  EXPECT_ERROR_MENTIONS(validate(make_def("CrossEntropy", {"X", "T"}, {"L"},
                                          {{"zero_weight_mean", std::string("one")}})),
                        {"CrossEntropy", "zero_weight_mean", "one"});
  // Checked when the operator is created, so that a net reports it unrun.
  EXPECT_ERROR_MENTIONS(
      create_operator(make_def("ConstantFill", {}, {"y"}, {{"dtype", std::int64_t{7}}})),
      {"ConstantFill", "'dtype'", "7"});
  EXPECT_ERROR_MENTIONS(create_operator(make_def("ConstantFill", {"x"}, {"y"},
                                                 {{"shape", std::vector<std::int64_t>{2}}})),
                        {"ConstantFill", "'shape'"});
}

// --- registry ------------------------------------------------------------------

TEST(Registry, UnknownTypeIsNamed) {
  EXPECT_ERROR_MENTIONS(create_operator(make_def("SpatialSoftmaxWithLossV2", {"X"}, {"Y"})),
                        {"SpatialSoftmaxWithLossV2", "not registered"});
  EXPECT_ERROR_MENTIONS(schema_of("NoSuchOp"), {"NoSuchOp"});
  EXPECT_EQ(find_schema("NoSuchOp"), nullptr);
  EXPECT_TRUE(devices_of("NoSuchOp").empty());
}

TEST(Registry, TypeOnlyOnCpuNamesItsDevices) {
  // An operator of our own, registered on CPU only (the built-in ones gain
  // CUDA kernels in CUDA builds).
  static const bool registered = [] {
    define_schema("TestCpuOnlyOp").input("x", "any").output("y", "x");
    register_operator(Device::kCpu, "TestCpuOnlyOp",
                      [](const OperatorDef&) -> std::unique_ptr<Operator> { return nullptr; });
    return true;
  }();
  ASSERT_TRUE(registered);
  EXPECT_EQ(devices_of("TestCpuOnlyOp"), std::vector<Device>{Device::kCpu});
  OperatorDef def = make_def("TestCpuOnlyOp", {"x"}, {"y"});
  def.device.device = Device::kCuda;
  EXPECT_ERROR_MENTIONS(create_operator(def),
                        {"TestCpuOnlyOp", "not registered on device CUDA", "registered on: CPU"});
  // Registering twice, or without a schema, is an error naming the type.
  EXPECT_ERROR_MENTIONS(register_operator(Device::kCpu, "TestCpuOnlyOp", nullptr),
                        {"TestCpuOnlyOp", "already registered on CPU"});
  EXPECT_ERROR_MENTIONS(register_operator(Device::kCpu, "TestNoSchemaOp", nullptr),
                        {"TestNoSchemaOp", "no schema"});
  EXPECT_ERROR_MENTIONS(define_schema("Softmax"), {"Softmax", "already has a schema"});
}

TEST(Registry, BuiltinCpuOperatorOnCuda) {
  const std::vector<Device> devices = devices_of("SpatialSoftmaxWithLoss");
  ASSERT_NE(std::find(devices.begin(), devices.end(), Device::kCpu), devices.end());
  if (std::find(devices.begin(), devices.end(), Device::kCuda) != devices.end()) {
    GTEST_SKIP() << "a CUDA build registers SpatialSoftmaxWithLoss on CUDA";
  }
  OperatorDef def = spatial_loss();
  def.device.device = Device::kCuda;
  EXPECT_ERROR_MENTIONS(create_operator(def),
                        {"SpatialSoftmaxWithLoss", "CUDA", "registered on: CPU"});
}

TEST(Registry, EveryOperatorIsKnown) {
  const std::vector<std::string> expected = {
      "ConstantFill",
      "CrossEntropy",
      "CrossEntropyGradient",
      "KLDiv",
      "KLDivGradient",
      "LogSoftmax",
      "LogSoftmaxGradient",
      "NegativeLogLikelihoodLoss",
      "NegativeLogLikelihoodLossGradient",
      "Softmax",
      "SoftmaxCrossEntropyLoss",
      "SoftmaxCrossEntropyLossGradient",
      "SoftmaxGradient",
      "SoftmaxWithLoss",
      "SoftmaxWithLossGradient",
      "SpatialSoftArgmax",
      "SpatialSoftArgmaxGradient",
      "SpatialSoftmax",
      "SpatialSoftmaxWithLoss",
      "SpatialSoftmaxWithLossGradient",
      "Sum",
  };
  std::vector<std::string> types = schema_types();
  types.erase(std::remove_if(types.begin(), types.end(),
                             [](const std::string& t) { return t.starts_with("Test"); }),
              types.end());
  EXPECT_EQ(types, expected);
  for (const std::string& type : expected) {
    const std::vector<Device> devices = devices_of(type);
    EXPECT_NE(std::find(devices.begin(), devices.end(), Device::kCpu), devices.end()) << type;
    EXPECT_FALSE(schema_of(type).describe().empty());
  }
  const std::set<std::string> differentiable = {"CrossEntropy",    "KLDiv",
                                                "LogSoftmax",      "NegativeLogLikelihoodLoss",
                                                "Softmax",         "SoftmaxCrossEntropyLoss",
                                                "SoftmaxWithLoss", "SpatialSoftArgmax",
                                                "SpatialSoftmax",  "SpatialSoftmaxWithLoss"};
  for (const std::string& type : expected) {
    EXPECT_EQ(has_gradient(type), differentiable.contains(type)) << type;
  }
}

TEST(RunNet, UnknownOperatorInTheMiddleRunsNothing) {
  Workspace ws;
  ws.set("X", rnd({1, 2, 1, 2}, 1));
  ws.set("T", labels(i32, {1, 1, 2}, 2, 2));
  NetDef net;
  net.name = "train";
  net.ops = {spatial_loss(), make_def("NoSuchOp", {"P"}, {"Q"}),
             make_def("ConstantFill", {"avg_loss"}, {"G"}, {{"value", 1.0f}})};
  EXPECT_ERROR_MENTIONS(run_net(net, ws), {"train", "op 1", "NoSuchOp"});
  EXPECT_FALSE(ws.has("P"));
  EXPECT_FALSE(ws.has("avg_loss"));
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"T", "X"}));

  // A bad argument in a later op, likewise.
  net.ops[1] = make_def("Softmax", {"P"}, {"Q"}, {{"axes", std::int64_t{1}}});
  EXPECT_ERROR_MENTIONS(run_net(net, ws), {"op 1", "Softmax", "unknown argument 'axes'"});
  EXPECT_FALSE(ws.has("P"));
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"T", "X"}));
}

TEST(RunNet, FailingOperatorWritesNone) {
  Workspace ws;
  ws.set("X", rnd({1, 2, 1, 2}, 1));
  ws.set("T", values(i32, {1, 1, 2}, {0, 5}));  // 5 >= D = 2
  EXPECT_ERROR_MENTIONS(run_operator(spatial_loss(), ws), {"SpatialSoftmaxWithLoss", "5"});
  EXPECT_FALSE(ws.has("P"));
  EXPECT_FALSE(ws.has("avg_loss"));
  // A missing input blob is named.
  Workspace empty;
  EXPECT_ERROR_MENTIONS(run_operator(make_def("Softmax", {"nope"}, {"y"}), empty), {"nope"});
}

// --- 2. shape inference ---------------------------------------------------------

struct InferCase {
  std::string name;
  OperatorDef def;
  Blobs blobs;  // the inputs, by blob name
  std::vector<std::optional<TensorSpec>> expected;
};

std::ostream& operator<<(std::ostream& out, const InferCase& c) { return out << c.name; }

TensorSpec S(DType dtype, Shape shape) { return TensorSpec{dtype, std::move(shape)}; }

// X (2, 3, 2, 3) and friends: N = 2, C = D = 3, H = 2, W = 3.
const Shape kX = {2, 3, 2, 3};
const Shape kMap = {2, 2, 3};
const Shape kNhwc = {2, 2, 3, 3};

Tensor spatial_labels() { return values(i32, kMap, {0, 1, 2, -1, 2, 1, 1, 0, -1, 2, 2, 0}); }

std::vector<InferCase> infer_cases() {
  std::vector<InferCase> cs;
  auto add = [&](std::string name, OperatorDef def, Blobs blobs,
                 std::vector<std::optional<TensorSpec>> expected) {
    cs.push_back({std::move(name), std::move(def), std::move(blobs), std::move(expected)});
  };
  const Tensor x = rnd(kX, 11);
  // Caffe2 spatial.
  add("SpatialSoftmaxWithLoss", spatial_loss(), {{"X", copy(x)}, {"T", spatial_labels()}},
      {S(f64, kX), S(f64, {})});
  add("SpatialSoftmaxWithLoss_weights", spatial_loss({"X", "T", "W"}),
      {{"X", copy(x)}, {"T", spatial_labels()}, {"W", rnd(kMap, 12, 0, 2)}},
      {S(f64, kX), S(f64, {})});
  add("SpatialSoftmaxWithLoss_f32", spatial_loss({"X", "T", "W"}),
      {{"X", x.to(f32)}, {"T", spatial_labels()}, {"W", rnd(kMap, 12, 0, 2).to(f32)}},
      {S(f32, kX), S(f32, {})});
  add("SpatialSoftmaxWithLossGradient",
      make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"}),
      {{"X", copy(x)},
       {"T", spatial_labels()},
       {"P", probabilities(kX, 1, 13)},
       {"dL", Tensor::scalar(f64, 1.5)}},
      {S(f64, kX)});
  add("SpatialSoftmaxWithLossGradient_weights",
      make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "W", "P", "dL"}, {"dX"}),
      {{"X", copy(x)},
       {"T", spatial_labels()},
       {"W", rnd(kMap, 12, 0, 2)},
       {"P", probabilities(kX, 1, 13)},
       {"dL", Tensor::scalar(f64, 1.5)}},
      {S(f64, kX)});
  // Caffe2 non-spatial.
  add("SoftmaxWithLoss_2d", make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"}),
      {{"X", rnd({4, 5}, 14)}, {"T", labels(i32, {4}, 5, 15)}}, {S(f64, {4, 5}), S(f64, {})});
  add("SoftmaxWithLoss_4d_axis1", make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L", "U"}),
      {{"X", copy(x)}, {"T", labels(i32, {2}, 18, 16)}}, {S(f64, kX), S(f64, {}), nullopt});
  add("SoftmaxWithLoss_axis2",
      make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"}, {{"axis", std::int64_t{2}}}),
      {{"X", copy(x)}, {"T", labels(i32, {2, 3}, 6, 17)}}, {S(f64, kX), S(f64, {})});
  add("SoftmaxWithLoss_label_prob_weights",
      make_def("SoftmaxWithLoss", {"X", "T", "W"}, {"P", "L"}, {{"label_prob", std::int64_t{1}}}),
      {{"X", rnd({4, 5}, 14)}, {"T", probabilities({4, 5}, 1, 18)}, {"W", rnd({4}, 19, 0.5, 1)}},
      {S(f64, {4, 5}), S(f64, {})});
  add("SoftmaxWithLossGradient", make_def("SoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"}),
      {{"X", rnd({4, 5}, 14)},
       {"T", labels(i32, {4}, 5, 15)},
       {"P", probabilities({4, 5}, 1, 20)},
       {"dL", Tensor::scalar(f64, 2.0)}},
      {S(f64, {4, 5})});
  add("SoftmaxWithLossGradient_weights",
      make_def("SoftmaxWithLossGradient", {"X", "T", "W", "P", "dL"}, {"dX"}),
      {{"X", rnd({4, 5}, 14)},
       {"T", labels(i32, {4}, 5, 15)},
       {"W", rnd({4}, 19, 0.5, 1)},
       {"P", probabilities({4, 5}, 1, 20)},
       {"dL", Tensor::scalar(f64, 2.0)}},
      {S(f64, {4, 5})});
  // ONNX.
  add("SoftmaxCrossEntropyLoss_mean", make_def("SoftmaxCrossEntropyLoss", {"s", "l"}, {"L"}),
      {{"s", copy(x)}, {"l", labels(i64, kMap, 3, 21)}}, {S(f64, {})});
  add("SoftmaxCrossEntropyLoss_none_weights_log_prob",
      make_def("SoftmaxCrossEntropyLoss", {"s", "l", "w"}, {"L", "LP"},
               {{"reduction", std::string("none")}}),
      {{"s", copy(x)}, {"l", labels(i32, kMap, 3, 21)}, {"w", rnd({3}, 22, 0.5, 1)}},
      {S(f64, kMap), S(f64, kX)});
  add("SoftmaxCrossEntropyLoss_skipped_ports",
      make_def("SoftmaxCrossEntropyLoss", {"s", "l", ""}, {"L", ""},
               {{"reduction", std::string("sum")}}),
      {{"s", x.to(f32)}, {"l", labels(i64, kMap, 3, 21)}}, {S(f32, {}), nullopt});
  add("SoftmaxCrossEntropyLossGradient",
      make_def("SoftmaxCrossEntropyLossGradient", {"s", "l", "", "dL"}, {"ds"}),
      {{"s", copy(x)}, {"l", labels(i64, kMap, 3, 21)}, {"dL", Tensor::scalar(f64, 1.0)}},
      {S(f64, kX)});
  add("SoftmaxCrossEntropyLossGradient_none_log_prob",
      make_def("SoftmaxCrossEntropyLossGradient", {"s", "l", "w", "dL", "dLP"}, {"ds"},
               {{"reduction", std::string("none")}}),
      {{"s", copy(x)},
       {"l", labels(i64, kMap, 3, 21)},
       {"w", rnd({3}, 22, 0.5, 1)},
       {"dL", rnd(kMap, 23)},
       {"dLP", rnd(kX, 24)}},
      {S(f64, kX)});
  add("NegativeLogLikelihoodLoss", make_def("NegativeLogLikelihoodLoss", {"lp", "t", "w"}, {"L"}),
      {{"lp", copy(x)}, {"t", labels(i32, kMap, 3, 25)}, {"w", rnd({3}, 22, 0.5, 1)}},
      {S(f64, {})});
  add("NegativeLogLikelihoodLoss_none",
      make_def("NegativeLogLikelihoodLoss", {"lp", "t"}, {"L"},
               {{"reduction", std::string("none")}}),
      {{"lp", copy(x)}, {"t", labels(i64, kMap, 3, 25)}}, {S(f64, kMap)});
  add("NegativeLogLikelihoodLossGradient",
      make_def("NegativeLogLikelihoodLossGradient", {"lp", "t", "dL", "w"}, {"dlp"}),
      {{"lp", copy(x)},
       {"t", labels(i32, kMap, 3, 25)},
       {"dL", Tensor::scalar(f64, 1.0)},
       {"w", rnd({3}, 22, 0.5, 1)}},
      {S(f64, kX)});
  // Softmax family.
  add("Softmax_axis1", make_def("Softmax", {"x"}, {"y"}, {{"axis", std::int64_t{1}}}),
      {{"x", copy(x)}}, {S(f64, kX)});
  add("Softmax_default_axis_f32", make_def("Softmax", {"x"}, {"y"}), {{"x", x.to(f32)}},
      {S(f32, kX)});
  add("Softmax_rank1", make_def("Softmax", {"x"}, {"y"}, {{"axis", std::int64_t{0}}}),
      {{"x", rnd({5}, 26)}}, {S(f64, {5})});
  add("LogSoftmax_axis_neg3", make_def("LogSoftmax", {"x"}, {"y"}, {{"axis", std::int64_t{-3}}}),
      {{"x", copy(x)}}, {S(f64, kX)});
  add("SoftmaxGradient",
      make_def("SoftmaxGradient", {"y", "dy"}, {"dx"}, {{"axis", std::int64_t{1}}}),
      {{"y", probabilities(kX, 1, 27)}, {"dy", rnd(kX, 28)}}, {S(f64, kX)});
  add("LogSoftmaxGradient", make_def("LogSoftmaxGradient", {"y", "dy"}, {"dx"}),
      {{"y", rnd(kX, 29, -3, -0.1)}, {"dy", rnd(kX, 28)}}, {S(f64, kX)});
  // CrossEntropy.
  add("CrossEntropy_all_outputs", make_def("CrossEntropy", {"X", "T"}, {"L", "P", "LP", "H"}),
      {{"X", copy(x)}, {"T", labels(i64, kMap, 3, 30)}},
      {S(f64, {}), S(f64, kX), S(f64, kX), S(f64, kMap)});
  add("CrossEntropy_nhwc_none_weights",
      make_def("CrossEntropy", {"X", "T", "cw", "pw"}, {"L", "", "LP"},
               {{"order", std::string("NHWC")}, {"reduction", std::string("none")}}),
      {{"X", rnd(kNhwc, 31)},
       {"T", labels(i32, {2, 2, 3}, 3, 32)},
       {"cw", rnd({3}, 33, 0.5, 1)},
       {"pw", rnd({2, 2, 3}, 34, 0, 1)}},
      {S(f64, {2, 2, 3}), nullopt, S(f64, kNhwc)});
  add("CrossEntropy_probability_targets_pixel_weight_only",
      make_def("CrossEntropy", {"X", "T", "", "pw"}, {"L", "", "", "H"},
               {{"label_smoothing", 0.1f}}),
      {{"X", x.to(f32)},
       {"T", probabilities(kX, 1, 35).to(f32)},
       {"pw", rnd(kMap, 34, 0, 1).to(f32)}},
      {S(f32, {}), nullopt, nullopt, S(f32, kMap)});
  add("CrossEntropyGradient", make_def("CrossEntropyGradient", {"X", "T", "", "", "dL"}, {"dX"}),
      {{"X", copy(x)}, {"T", labels(i64, kMap, 3, 30)}, {"dL", Tensor::scalar(f64, 1.0)}},
      {S(f64, kX)});
  add("CrossEntropyGradient_none_every_upstream",
      make_def("CrossEntropyGradient", {"X", "T", "cw", "pw", "dL", "dP", "dLP", "dH"}, {"dX"},
               {{"reduction", std::string("none")}}),
      {{"X", copy(x)},
       {"T", labels(i64, kMap, 3, 30)},
       {"cw", rnd({3}, 33, 0.5, 1)},
       {"pw", rnd(kMap, 34, 0, 1)},
       {"dL", rnd(kMap, 36)},
       {"dP", rnd(kX, 37)},
       {"dLP", rnd(kX, 38)},
       {"dH", rnd(kMap, 39)}},
      {S(f64, kX)});
  // KLDiv.
  add("KLDiv_mean", make_def("KLDiv", {"X", "T"}, {"L"}),
      {{"X", copy(x)}, {"T", probabilities(kX, 1, 40)}}, {S(f64, {})});
  add("KLDiv_none_nhwc",
      make_def("KLDiv", {"X", "T"}, {"L"},
               {{"reduction", std::string("none")}, {"order", std::string("NHWC")}}),
      {{"X", rnd(kNhwc, 41)}, {"T", probabilities(kNhwc, -1, 42)}}, {S(f64, kNhwc)});
  add("KLDivGradient",
      make_def("KLDivGradient", {"X", "T", "dL"}, {"dX"},
               {{"reduction", std::string("batchmean")}}),
      {{"X", copy(x)}, {"T", probabilities(kX, 1, 40)}, {"dL", Tensor::scalar(f64, 1.0)}},
      {S(f64, kX)});
  // Spatial softmax and soft-argmax.
  add("SpatialSoftmax", make_def("SpatialSoftmax", {"X"}, {"S"}), {{"X", copy(x)}}, {S(f64, kX)});
  add("SpatialSoftmax_nhwc_3d",
      make_def("SpatialSoftmax", {"X"}, {"S"}, {{"order", std::string("NHWC")}}),
      {{"X", rnd({2, 2, 3, 2, 3}, 43).to(f32)}}, {S(f32, {2, 2, 3, 2, 3})});
  add("SpatialSoftArgmax_all_outputs", make_def("SpatialSoftArgmax", {"X"}, {"kp", "S", "cov"}),
      {{"X", copy(x)}}, {S(f64, {2, 3, 2}), S(f64, kX), S(f64, {2, 3, 2, 2})});
  add("SpatialSoftArgmax_nhwc_3d_skip_S",
      make_def("SpatialSoftArgmax", {"X"}, {"kp", "", "cov"}, {{"order", std::string("NHWC")}}),
      {{"X", rnd({2, 4, 3, 5, 3}, 44)}}, {S(f64, {2, 3, 3}), nullopt, S(f64, {2, 3, 3, 3})});
  add("SpatialSoftArgmax_keypoints_only", make_def("SpatialSoftArgmax", {"X"}, {"kp"}),
      {{"X", rnd({2, 3, 7}, 45)}}, {S(f64, {2, 3, 1})});
  add("SpatialSoftArgmaxGradient",
      make_def("SpatialSoftArgmaxGradient", {"X", "dkp", "dS", "dcov"}, {"dX"}),
      {{"X", copy(x)},
       {"dkp", rnd({2, 3, 2}, 46)},
       {"dS", rnd(kX, 47)},
       {"dcov", rnd({2, 3, 2, 2}, 48)}},
      {S(f64, kX)});
  add("SpatialSoftArgmaxGradient_keypoints_only",
      make_def("SpatialSoftArgmaxGradient", {"X", "dkp"}, {"dX"}),
      {{"X", copy(x)}, {"dkp", rnd({2, 3, 2}, 46)}}, {S(f64, kX)});
  // Utilities.
  add("ConstantFill_like_input", make_def("ConstantFill", {"L"}, {"G"}, {{"value", 1.0f}}),
      {{"L", Tensor::scalar(f64, 0.25)}}, {S(f64, {})});
  add("ConstantFill_like_input_int32",
      make_def("ConstantFill", {"x"}, {"G"}, {{"dtype", std::int64_t{2}}}), {{"x", copy(x)}},
      {S(i32, kX)});
  add("ConstantFill_shape_double",
      make_def("ConstantFill", {}, {"G"},
               {{"shape", std::vector<std::int64_t>{2, 3}}, {"dtype", std::int64_t{13}}}),
      {}, {S(f64, {2, 3})});
  add("ConstantFill_no_input_no_args", make_def("ConstantFill", {}, {"G"}), {}, {S(f32, {})});
  add("Sum", make_def("Sum", {"a", "b", "c"}, {"s"}),
      {{"a", rnd({2, 3}, 49)}, {"b", rnd({2, 3}, 50)}, {"c", rnd({2, 3}, 51)}}, {S(f64, {2, 3})});
  add("Sum_one_int64", make_def("Sum", {"a"}, {"s"}), {{"a", labels(i64, {4}, 9, 52)}},
      {S(i64, {4})});
  return cs;
}

class InferOutputs : public ::testing::TestWithParam<InferCase> {};

TEST_P(InferOutputs, MatchesHandWrittenSpecsAndTheRun) {
  const InferCase& c = GetParam();
  TensorSpecs in;
  for (const std::string& name : c.def.inputs) {
    if (name.empty()) {
      in.emplace_back();
    } else {
      ASSERT_TRUE(c.blobs.contains(name)) << name;
      in.emplace_back(spec_of(c.blobs.at(name).get()));
    }
  }
  const TensorSpecs inferred = schema_of(c.def.type).infer_outputs(c.def, in);
  ASSERT_EQ(inferred.size(), c.def.outputs.size());
  ASSERT_EQ(c.expected.size(), c.def.outputs.size());
  for (std::size_t i = 0; i < inferred.size(); ++i) {
    EXPECT_EQ(inferred[i], c.expected[i])
        << "output " << i << ": inferred " << spec_string(inferred[i]) << ", expected "
        << spec_string(c.expected[i]);
  }
  Workspace ws;
  put(ws, c.blobs);
  ASSERT_NO_THROW(run_operator(c.def, ws));
  for (std::size_t i = 0; i < c.def.outputs.size(); ++i) {
    const std::string& name = c.def.outputs[i];
    if (!inferred[i]) {
      if (!name.empty()) {
        EXPECT_FALSE(ws.has(name)) << name << " is an unused output";
      }
      continue;
    }
    ASSERT_TRUE(ws.has(name)) << name;
    const TensorSpec produced = spec_of(ws.get(name));
    EXPECT_EQ(produced, *inferred[i])
        << "output " << i << " (" << name << "): produced " << spec_string(produced)
        << ", inferred " << spec_string(inferred[i]);
  }
  // The inputs are not written.
  for (const auto& [name, b] : c.blobs) {
    EXPECT_TRUE(testing::bitwise_equal(ws.get(name), b.get())) << name;
  }
}

template <class Case>
std::string case_name(const ::testing::TestParamInfo<Case>& param_info) {
  return param_info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Operators, InferOutputs, ::testing::ValuesIn(infer_cases()),
                         case_name<InferCase>);

TEST(InferOutputs, EveryOperatorHasACase) {
  std::set<std::string> covered;
  for (const InferCase& c : infer_cases()) covered.insert(c.def.type);
  for (const std::string& type : schema_types()) {
    if (type.starts_with("Test")) continue;
    EXPECT_TRUE(covered.contains(type)) << type << " has no shape-inference case";
  }
}

// Bad input specs: inference must reject them, naming the operator and the
// culprit; the operator run on tensors of those specs must reject them too.
struct BadInferCase {
  std::string name;
  OperatorDef def;
  TensorSpecs inputs;
  std::vector<std::string> needles;
};

std::ostream& operator<<(std::ostream& out, const BadInferCase& c) { return out << c.name; }

std::vector<BadInferCase> bad_infer_cases() {
  std::vector<BadInferCase> cs;
  auto add = [&](std::string name, OperatorDef def, TensorSpecs inputs,
                 std::vector<std::string> needles) {
    needles.insert(needles.begin(), def.type);
    // An absent optional input is an empty name.
    for (std::size_t i = 0; i < inputs.size() && i < def.inputs.size(); ++i) {
      if (!inputs[i]) def.inputs[i].clear();
    }
    cs.push_back({std::move(name), std::move(def), std::move(inputs), std::move(needles)});
  };
  const TensorSpec X = S(f64, kX), T = S(i32, kMap), W = S(f64, kMap), L = S(f64, {});
  const OperatorDef sswl = spatial_loss(), sswl_w = spatial_loss({"X", "T", "W"});
  add("SSWL_X_rank3", sswl, {S(f64, {2, 3, 6}), S(i32, {2, 6})}, {"X rank", "expected 4", "got 3"});
  add("SSWL_X_rank5", sswl, {S(f64, {2, 3, 2, 3, 1}), T}, {"X rank", "got 5"});
  add("SSWL_X_int", sswl, {S(i32, kX), T}, {"X dtype", "int32"});
  add("SSWL_T_int64", sswl, {X, S(i64, kMap)}, {"T dtype", "expected int32", "got int64"});
  add("SSWL_T_float", sswl, {X, S(f64, kMap)}, {"T dtype", "float64"});
  add("SSWL_T_rank2", sswl, {X, S(i32, {2, 6})}, {"T shape", "(2, 6)"});
  add("SSWL_T_N", sswl, {X, S(i32, {3, 2, 3})}, {"T shape", "(2, 2, 3)", "(3, 2, 3)"});
  add("SSWL_T_H", sswl, {X, S(i32, {2, 3, 3})}, {"T shape", "(2, 2, 3)", "(2, 3, 3)"});
  add("SSWL_T_W", sswl, {X, S(i32, {2, 2, 4})}, {"T shape", "(2, 2, 4)"});
  add("SSWL_weight_length", sswl_w, {X, T, S(f64, {2, 6})}, {"weight_tensor shape", "(2, 6)"});
  add("SSWL_weight_per_class", sswl_w, {X, T, S(f64, {3})}, {"weight_tensor shape", "(3,)"});
  add("SSWL_weight_dtype", sswl_w, {X, T, S(f32, kMap)}, {"weight_tensor dtype", "float32"});
  const OperatorDef sswl_grad =
      make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"});
  add("SSWLGrad_P_shape", sswl_grad, {X, T, S(f64, {2, 3, 2, 2}), L}, {"P shape", "(2, 3, 2, 2)"});
  add("SSWLGrad_P_dtype", sswl_grad, {X, T, S(f32, kX), L}, {"P dtype", "float32"});
  add("SSWLGrad_T_W", sswl_grad, {X, S(i32, {2, 2, 2}), X, L}, {"T shape"});
  add("SSWLGrad_d_loss_empty", sswl_grad, {X, T, X, S(f64, {0})}, {"d_avg_loss", "(0,)"});
  add("SSWLGrad_d_loss_int", sswl_grad, {X, T, X, S(i32, {})}, {"d_avg_loss", "int32"});
  add("SSWLGrad_weight_length",
      make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "W", "P", "dL"}, {"dX"}),
      {X, T, S(f64, {2, 2}), X, L}, {"weight_tensor shape"});
  const OperatorDef swl = make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"});
  add("SWL_T_count", swl, {S(f64, {4, 5}), S(i32, {3})}, {"T shape", "4 labels", "(3,)"});
  add("SWL_T_dtype", swl, {S(f64, {4, 5}), S(i64, {4})}, {"T dtype", "int64"});
  add("SWL_axis", make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"}, {{"axis", std::int64_t{2}}}),
      {S(f64, {4, 5}), S(i32, {4})}, {"'axis'", "2", "(4, 5)"});
  add("SWL_label_prob_shape",
      make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L"}, {{"label_prob", std::int64_t{1}}}),
      {S(f64, {4, 5}), S(f64, {4, 4})}, {"T shape", "probabilities", "(4, 4)"});
  add("SWL_weight_length", make_def("SoftmaxWithLoss", {"X", "T", "W"}, {"P", "L"}),
      {S(f64, {4, 5}), S(i32, {4}), S(f64, {5})}, {"weight_tensor shape", "(5,)"});
  add("SWLGrad_P_shape", make_def("SoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"}),
      {S(f64, {4, 5}), S(i32, {4}), S(f64, {4, 4}), L}, {"P shape", "(4, 4)"});
  add("SWLGrad_d_loss_empty", make_def("SoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"}),
      {S(f64, {4, 5}), S(i32, {4}), S(f64, {4, 5}), S(f64, {0})}, {"d_avg_loss", "(0,)"});
  const OperatorDef sce = make_def("SoftmaxCrossEntropyLoss", {"s", "l", "w"}, {"L"});
  add("SCE_labels_shape", sce, {X, S(i64, {2, 2, 4}), nullopt}, {"labels shape", "(2, 2, 4)"});
  add("SCE_labels_float", sce, {X, S(f64, kMap), nullopt}, {"labels dtype", "float64"});
  add("SCE_weights_length", sce, {X, S(i64, kMap), S(f64, {4})},
      {"weights shape", "one per class"});
  add("SCE_weights_dtype", sce, {X, S(i64, kMap), S(f32, {3})}, {"weights dtype"});
  add("SCE_scores_rank1", sce, {S(f64, {3}), S(i64, {}), nullopt}, {"scores rank", "got 1"});
  add("SCE_scores_int", sce, {S(i64, kX), S(i64, kMap), nullopt}, {"scores dtype"});
  const OperatorDef sce_grad =
      make_def("SoftmaxCrossEntropyLossGradient", {"s", "l", "", "dL", "dLP"}, {"ds"});
  add("SCEGrad_labels", sce_grad, {X, S(i64, {2, 3, 3}), nullopt, L, X}, {"labels shape"});
  add("SCEGrad_d_output_map_for_mean", sce_grad, {X, S(i64, kMap), nullopt, S(f64, kMap), X},
      {"d_output", "(2, 2, 3)"});
  add("SCEGrad_d_log_prob_shape", sce_grad, {X, S(i64, kMap), nullopt, L, S(f64, kMap)},
      {"d_log_prob", "(2, 2, 3)"});
  add("SCEGrad_d_output_scalar_for_none",
      make_def("SoftmaxCrossEntropyLossGradient", {"s", "l", "", "dL"}, {"ds"},
               {{"reduction", std::string("none")}}),
      {X, S(i64, kMap), nullopt, L}, {"d_output", "(2, 2, 3)"});
  const OperatorDef nll = make_def("NegativeLogLikelihoodLoss", {"lp", "t", "w"}, {"L"});
  add("NLL_target_shape", nll, {X, S(i64, {2, 3, 2}), nullopt}, {"target shape", "(2, 3, 2)"});
  add("NLL_weight_length", nll, {X, S(i64, kMap), S(f64, {2})}, {"weight shape", "(2,)"});
  const OperatorDef nll_grad =
      make_def("NegativeLogLikelihoodLossGradient", {"lp", "t", "dL", "w"}, {"dlp"});
  add("NLLGrad_weight_length", nll_grad, {X, S(i64, kMap), L, S(f64, {4})},
      {"weight shape", "(4,)"});
  add("NLLGrad_d_loss_shape", nll_grad, {X, S(i64, kMap), S(f64, {2}), S(f64, {3})},
      {"d_loss", "(2,)"});
  add("NLLGrad_d_loss_dtype", nll_grad, {X, S(i64, kMap), S(f32, {}), S(f64, {3})},
      {"d_loss", "float32"});
  add("Softmax_axis_4", make_def("Softmax", {"x"}, {"y"}, {{"axis", std::int64_t{4}}}), {X},
      {"'axis'", "4", "(2, 3, 2, 3)"});
  add("LogSoftmax_axis_neg5", make_def("LogSoftmax", {"x"}, {"y"}, {{"axis", std::int64_t{-5}}}),
      {X}, {"'axis'", "-5"});
  add("Softmax_int", make_def("Softmax", {"x"}, {"y"}), {S(i32, kX)}, {"input dtype", "int32"});
  add("Softmax_scalar", make_def("Softmax", {"x"}, {"y"}), {L}, {"'axis'"});
  add("SoftmaxGradient_dy_shape", make_def("SoftmaxGradient", {"y", "dy"}, {"dx"}),
      {X, S(f64, {2, 3, 2, 2})}, {"d_output shape", "(2, 3, 2, 2)"});
  add("LogSoftmaxGradient_dy_dtype", make_def("LogSoftmaxGradient", {"y", "dy"}, {"dx"}),
      {X, S(f32, kX)}, {"d_output dtype", "float32"});
  const OperatorDef ce = make_def("CrossEntropy", {"X", "T", "cw", "pw"}, {"L"});
  add("CE_prob_targets_shape", ce, {X, S(f64, {2, 3, 2, 2}), nullopt, nullopt},
      {"targets shape", "(2, 3, 2, 2)"});
  add("CE_prob_targets_dtype", ce, {X, S(f32, kX), nullopt, nullopt}, {"targets dtype", "float32"});
  add("CE_class_weight_length", ce, {X, S(i64, kMap), S(f64, {2}), nullopt},
      {"class_weight shape", "(2,)"});
  add("CE_pixel_weight_shape", ce, {X, S(i64, kMap), nullopt, S(f64, {2, 3, 2})},
      {"pixel_weight shape", "(2, 3, 2)"});
  add("CE_pixel_weight_dtype", ce, {X, S(i64, kMap), nullopt, S(f32, kMap)},
      {"pixel_weight dtype"});
  add("CE_nhwc_labels_of_nchw",
      make_def("CrossEntropy", {"X", "T"}, {"L"}, {{"order", std::string("NHWC")}}),
      {X, S(i64, kMap)}, {"targets shape", "(2, 3, 2)", "(2, 2, 3)"});
  add("CE_rank11", ce,
      {S(f64, {1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1}), S(i64, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}), nullopt,
       nullopt},
      {"X rank", "got 11"});
  add("CE_rank1", ce, {S(f64, {3}), S(i64, {}), nullopt, nullopt}, {"X rank", "got 1"});
  const OperatorDef ce_grad =
      make_def("CrossEntropyGradient", {"X", "T", "", "", "dL", "dP", "dLP", "dH"}, {"dX"});
  add("CEGrad_targets", ce_grad, {X, S(i64, {2, 2, 2}), nullopt, nullopt, L, X, X, S(f64, kMap)},
      {"targets shape"});
  add("CEGrad_d_loss_map_for_mean", ce_grad,
      {X, S(i64, kMap), nullopt, nullopt, S(f64, kMap), X, X, S(f64, kMap)},
      {"d_loss", "(2, 2, 3)"});
  add("CEGrad_d_prob_shape", ce_grad,
      {X, S(i64, kMap), nullopt, nullopt, L, S(f64, kMap), X, S(f64, kMap)}, {"d_prob"});
  add("CEGrad_d_log_prob_dtype", ce_grad,
      {X, S(i64, kMap), nullopt, nullopt, L, X, S(f32, kX), S(f64, kMap)},
      {"d_log_prob", "float32"});
  add("CEGrad_d_entropy_shape", ce_grad, {X, S(i64, kMap), nullopt, nullopt, L, X, X, X},
      {"d_entropy", "(2, 3, 2, 3)"});
  const OperatorDef kl = make_def("KLDiv", {"X", "T"}, {"L"});
  add("KLDiv_target_shape", kl, {X, S(f64, {2, 3, 2, 2})}, {"target shape", "(2, 3, 2, 2)"});
  add("KLDiv_target_dtype", kl, {X, S(f32, kX)}, {"target dtype", "float32"});
  add("KLDiv_X_rank1", kl, {S(f64, {3}), S(f64, {3})}, {"X rank", "got 1"});
  add("KLDivGradient_target", make_def("KLDivGradient", {"X", "T", "dL"}, {"dX"}),
      {X, S(f64, kMap), L}, {"target shape"});
  add("KLDivGradient_d_output_map_for_mean", make_def("KLDivGradient", {"X", "T", "dL"}, {"dX"}),
      {X, X, X}, {"d_output", "(2, 3, 2, 3)"});
  add("KLDivGradient_d_output_scalar_for_none",
      make_def("KLDivGradient", {"X", "T", "dL"}, {"dX"}, {{"reduction", std::string("none")}}),
      {X, X, L}, {"d_output", "()"});
  add("SpatialSoftmax_rank2", make_def("SpatialSoftmax", {"X"}, {"S"}), {S(f64, {2, 3})},
      {"X rank", "got 2"});
  add("SpatialSoftmax_int", make_def("SpatialSoftmax", {"X"}, {"S"}), {S(i64, kX)}, {"X dtype"});
  add("SpatialSoftArgmax_rank11", make_def("SpatialSoftArgmax", {"X"}, {"kp"}),
      {S(f64, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})}, {"X rank", "got 11"});
  const OperatorDef ssa_grad =
      make_def("SpatialSoftArgmaxGradient", {"X", "dkp", "dS", "dcov"}, {"dX"});
  add("SSAGrad_d_keypoints", ssa_grad, {X, S(f64, {2, 3, 3}), nullopt, nullopt},
      {"d_keypoints shape", "(2, 3, 2)", "(2, 3, 3)"});
  add("SSAGrad_d_S", ssa_grad, {X, nullopt, S(f64, kMap), nullopt}, {"d_S shape"});
  add("SSAGrad_d_covariance", ssa_grad, {X, nullopt, nullopt, S(f64, {2, 3, 2})},
      {"d_covariance shape", "(2, 3, 2, 2)"});
  add("SSAGrad_dtype", ssa_grad, {X, S(f32, {2, 3, 2}), nullopt, nullopt}, {"d_keypoints dtype"});
  add("ConstantFill_input_and_shape",
      make_def("ConstantFill", {"x"}, {"y"}, {{"shape", std::vector<std::int64_t>{2}}}), {X},
      {"'shape'"});
  add("ConstantFill_bad_dtype",
      make_def("ConstantFill", {"x"}, {"y"}, {{"dtype", std::int64_t{3}}}), {X}, {"'dtype'", "3"});
  add("Sum_shape", make_def("Sum", {"a", "b"}, {"s"}), {S(f64, {2, 3}), S(f64, {3, 2})},
      {"input 1 shape", "(3, 2)"});
  add("Sum_dtype", make_def("Sum", {"a", "b", "c"}, {"s"}),
      {S(f64, {2, 3}), S(f64, {2, 3}), S(f32, {2, 3})}, {"input 2 dtype", "float32"});
  return cs;
}

// A tensor of `spec`: zeros, valid as labels and weights.
Tensor zeros_of(const TensorSpec& s) { return Tensor(s.dtype, s.shape); }

class InferRejects : public ::testing::TestWithParam<BadInferCase> {};

TEST_P(InferRejects, BadShapes) {
  const BadInferCase& c = GetParam();
  const OpSchema& schema = schema_of(c.def.type);
  try {
    (void)schema.infer_outputs(c.def, c.inputs);
    ADD_FAILURE() << "inference accepted " << c.name;
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const std::string& needle : c.needles) {
      EXPECT_NE(what.find(needle), std::string::npos) << "'" << needle << "' not in: " << what;
    }
  }
  // The run rejects the same inputs, writing nothing.
  Workspace ws;
  for (std::size_t i = 0; i < c.inputs.size(); ++i) {
    if (c.inputs[i]) ws.set(c.def.inputs[i], zeros_of(*c.inputs[i]));
  }
  const std::vector<std::string> before = ws.names();
  EXPECT_ERROR_MENTIONS(run_operator(c.def, ws), {c.def.type});
  EXPECT_EQ(ws.names(), before);
}

// The run names the culprit input as inference does, in the operator's terms
// ("input 'labels' (blob 'l')"), not as the API function it calls names its
// argument (issue 10, item 12).
TEST_P(InferRejects, RunNamesTheInputAsInferenceDoes) {
  const BadInferCase& c = GetParam();
  const std::string& needle = c.needles.at(1);  // needles[0] is the type
  const std::string culprit = needle.substr(0, needle.find(' '));
  // Inference's names of inputs: the schema's ports, and the roles of the
  // ports of Caffe2's gradients (P_or_weight_tensor, ...).
  std::set<std::string> names = {"P", "d_avg_loss", "weight_tensor"};
  for (const PortSchema& p : schema_of(c.def.type).inputs()) names.insert(p.name);
  if (!names.contains(culprit)) return;  // about an argument, or Sum's own check
  Workspace ws;
  for (std::size_t i = 0; i < c.inputs.size(); ++i) {
    if (c.inputs[i]) ws.set(c.def.inputs[i], zeros_of(*c.inputs[i]));
  }
  const std::string named = c.def.type + ": input '" + culprit + "' (blob '";
  EXPECT_ERROR_MENTIONS(run_operator(c.def, ws), {named});
}

INSTANTIATE_TEST_SUITE_P(Operators, InferRejects, ::testing::ValuesIn(bad_infer_cases()),
                         case_name<BadInferCase>);

TEST(InferOutputs, SpecCountMustMatchTheDef) {
  EXPECT_ERROR_MENTIONS(schema_of("Softmax").infer_outputs(make_def("Softmax", {"x"}, {"y"}), {}),
                        {"Softmax", "expected 1 input specs, got 0"});
  EXPECT_ERROR_MENTIONS(
      schema_of("Softmax").infer_outputs(make_def("Softmax", {"x"}, {"y"}), {nullopt}),
      {"Softmax", "input 0 (x) has no spec"});
  // Inference validates the def first.
  EXPECT_ERROR_MENTIONS(
      schema_of("SpatialSoftmaxWithLoss")
          .infer_outputs(spatial_loss({"X", "T"}, {"P", "L"}, {{"order", std::string("NDHW")}}),
                         {S(f64, kX), S(i32, kMap)}),
      {"expected NCHW or NHWC"});
}

// infer_net through a forward-and-backward net: every blob the net produces
// gets the spec it really has after the run.
TEST(InferNet, MatchesEveryBlobOfARun) {
  NetDef net;
  net.name = "train";
  net.ops = {
      make_def("LogSoftmax", {"X"}, {"LP"}, {{"axis", std::int64_t{1}}}),
      make_def("NegativeLogLikelihoodLoss", {"LP", "T"}, {"nll"}),
      make_def("CrossEntropy", {"X", "T", "cw"}, {"ce", "P", "", "H"},
               {{"reduction", std::string("none")}}),
      make_def("SpatialSoftArgmax", {"P"}, {"kp", "", "cov"}),
      make_def("SpatialSoftmaxWithLoss", {"X", "T32"}, {"P2", "avg_loss"}),
      make_def("Sum", {"P", "P2"}, {"PP"}),
  };
  add_gradient_ops(net, {"nll", "ce", "kp", "cov", "avg_loss"});
  Blobs blobs;
  blobs.emplace("X", rnd(kX, 60));
  blobs.emplace("T", labels(i64, kMap, 3, 61));
  blobs.emplace("T32", spatial_labels());
  blobs.emplace("cw", rnd({3}, 62, 0.5, 1.5));
  SpecMap known;
  for (const auto& [name, b] : blobs) known.emplace(name, spec_of(b.get()));
  const SpecMap inferred = infer_net(net, known);
  Workspace ws;
  put(ws, blobs);
  ASSERT_NO_THROW(run_net(net, ws));
  EXPECT_EQ(ws.names().size(), inferred.size());
  for (const std::string& name : ws.names()) {
    SCOPED_TRACE(name);
    const auto it = inferred.find(name);
    ASSERT_NE(it, inferred.end()) << "not inferred";
    EXPECT_EQ(it->second, spec_of(ws.get(name)))
        << "inferred " << spec_string(it->second) << ", produced "
        << spec_string(spec_of(ws.get(name)));
  }
  // Spot checks by hand.
  EXPECT_EQ(inferred.at("X_grad"), S(f64, kX));
  EXPECT_EQ(inferred.at("ce"), S(f64, kMap));
  EXPECT_EQ(inferred.at("cov"), S(f64, {2, 3, 2, 2}));
  EXPECT_EQ(inferred.at("avg_loss"), S(f64, {}));
}

TEST(InferNet, Errors) {
  NetDef net;
  net.ops = {make_def("Softmax", {"X"}, {"Y"}), make_def("Softmax", {"Q"}, {"Z"})};
  EXPECT_ERROR_MENTIONS(infer_net(net, {{"X", S(f64, {2, 3})}}),
                        {"op 1", "Softmax", "'Q'", "neither an external input"});
  net.ops[1] = make_def("NoSuchOp", {"Y"}, {"Z"});
  EXPECT_ERROR_MENTIONS(infer_net(net, {{"X", S(f64, {2, 3})}}), {"NoSuchOp"});
  net.ops[1] = make_def("KLDiv", {"Y", "V"}, {"Z"});
  EXPECT_ERROR_MENTIONS(infer_net(net, {{"X", S(f64, {2, 3, 2})}, {"V", S(f64, {2, 3})}}),
                        {"op 1", "KLDiv", "target shape"});
}

// --- 3. gradient makers -----------------------------------------------------------

OperatorDef forward_spatial(std::vector<std::string> inputs) {
  OperatorDef fwd = spatial_loss(
      std::move(inputs), {"P", "avg_loss"},
      {{"scale", 0.5f}, {"order", std::string("NCHW")}, {"caffe2_variant", std::string("cpu")}});
  fwd.name = "the_loss";
  fwd.device = DeviceOption{Device::kCuda, 3};
  fwd.engine = "CUDNN";
  return fwd;
}

// Compares field by field (for readable failures), then as a whole.
void expect_def(const OperatorDef& got, const OperatorDef& want) {
  EXPECT_EQ(got.type, want.type);
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.inputs, want.inputs);
  EXPECT_EQ(got.outputs, want.outputs);
  EXPECT_EQ(got.args.size(), want.args.size());
  for (const Argument& a : want.args) {
    const Argument* g = got.find_arg(a.name);
    ASSERT_NE(g, nullptr) << "argument " << a.name << " missing";
    EXPECT_EQ(g->value, a.value) << "argument " << a.name;
  }
  EXPECT_EQ(got.device, want.device);
  EXPECT_EQ(got.engine, want.engine);
  EXPECT_EQ(got.is_gradient_op, want.is_gradient_op);
  EXPECT_EQ(got, want);
}

OperatorDef expected_grad(std::string type, std::vector<std::string> inputs,
                          std::vector<std::string> outputs, const OperatorDef& fwd) {
  OperatorDef g;
  g.type = std::move(type);
  g.inputs = std::move(inputs);
  g.outputs = std::move(outputs);
  g.args = fwd.args;
  g.device = fwd.device;
  g.engine = fwd.engine;
  g.is_gradient_op = true;
  return g;
}

TEST(GradientMaker, SpatialSoftmaxWithLoss) {
  const OperatorDef fwd = forward_spatial({"X", "T"});
  const GradientOps g = make_gradient(fwd, {"", "avg_loss_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  OperatorDef want;
  want.type = "SpatialSoftmaxWithLossGradient";
  want.name = "";
  want.inputs = {"X", "T", "P", "avg_loss_grad"};
  want.outputs = {"X_grad"};
  want.args = {
      {"scale", 0.5f}, {"order", std::string("NCHW")}, {"caffe2_variant", std::string("cpu")}};
  want.device = DeviceOption{Device::kCuda, 3};
  want.engine = "CUDNN";
  want.is_gradient_op = true;
  expect_def(g.ops[0], want);
  EXPECT_EQ(g.input_grads, (std::vector<std::string>{"X_grad", ""}));
  // The emitted op is a valid def of its schema.
  EXPECT_NO_THROW(validate(g.ops[0]));
}

TEST(GradientMaker, SpatialSoftmaxWithLossWeights) {
  const OperatorDef fwd = forward_spatial({"X", "T", "W"});
  // A gradient flowing into P is not used (semantics 2.3).
  const GradientOps g = make_gradient(fwd, {"P_grad", "avg_loss_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0], expected_grad("SpatialSoftmaxWithLossGradient",
                                     {"X", "T", "W", "P", "avg_loss_grad"}, {"X_grad"}, fwd));
  EXPECT_EQ(g.input_grads, (std::vector<std::string>{"X_grad", "", ""}));
  EXPECT_NO_THROW(validate(g.ops[0]));
}

TEST(GradientMaker, SpatialSoftmaxWithLossDefaultsAndMissingGradient) {
  // No arguments on the forward op: none on the gradient op either.
  const OperatorDef fwd = spatial_loss({"logits", "labels"}, {"prob", "loss"});
  const GradientOps g = make_gradient(fwd, {"", "dloss"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0], expected_grad("SpatialSoftmaxWithLossGradient",
                                     {"logits", "labels", "prob", "dloss"}, {"logits_grad"}, fwd));
  EXPECT_TRUE(g.ops[0].args.empty());
  EXPECT_ERROR_MENTIONS(make_gradient(forward_spatial({"X", "T"}), {"", ""}),
                        {"Gradient of output avg_loss is not provided!"});
  EXPECT_ERROR_MENTIONS(make_gradient(forward_spatial({"X", "T"}), {"P_grad", ""}),
                        {"Gradient of output avg_loss is not provided!"});
  EXPECT_ERROR_MENTIONS(make_gradient(forward_spatial({"X", "T"}), {"avg_loss_grad"}),
                        {"SpatialSoftmaxWithLoss", "expected 2 output gradient names, got 1"});
  EXPECT_ERROR_MENTIONS(make_gradient(make_def("Sum", {"a", "b"}, {"s"}), {"s_grad"}),
                        {"Sum", "no gradient registered"});
}

TEST(GradientMaker, SoftmaxWithLoss) {
  OperatorDef fwd =
      make_def("SoftmaxWithLoss", {"X", "T", "W"}, {"P", "L"},
               {{"label_prob", std::int64_t{0}}, {"axis", std::int64_t{1}}, {"scale", 2.0f}});
  fwd.engine = "EIGEN";
  const GradientOps g = make_gradient(fwd, {"", "L_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0], expected_grad("SoftmaxWithLossGradient", {"X", "T", "W", "P", "L_grad"},
                                     {"X_grad"}, fwd));
  EXPECT_EQ(g.input_grads, (std::vector<std::string>{"X_grad", "", ""}));
  const OperatorDef unweighted = make_def("SoftmaxWithLoss", {"X", "T"}, {"P", "L", "U"});
  const GradientOps g2 = make_gradient(unweighted, {"", "L_grad", ""});
  ASSERT_EQ(g2.ops.size(), 1u);
  expect_def(g2.ops[0], expected_grad("SoftmaxWithLossGradient", {"X", "T", "P", "L_grad"},
                                      {"X_grad"}, unweighted));
  EXPECT_ERROR_MENTIONS(make_gradient(unweighted, {"P_grad", "", ""}),
                        {"Gradient of output L is not provided!"});
  for (const OperatorDef& op : {g.ops[0], g2.ops[0]}) EXPECT_NO_THROW(validate(op));
}

TEST(GradientMaker, SoftmaxCrossEntropyLoss) {
  const OperatorDef fwd =
      make_def("SoftmaxCrossEntropyLoss", {"s", "l", "w"}, {"out", "lp"},
               {{"reduction", std::string("sum")}, {"ignore_index", std::int64_t{-1}}});
  expect_def(make_gradient(fwd, {"out_grad", "lp_grad"}).ops.at(0),
             expected_grad("SoftmaxCrossEntropyLossGradient",
                           {"s", "l", "w", "out_grad", "lp_grad"}, {"s_grad"}, fwd));
  expect_def(make_gradient(fwd, {"out_grad", ""}).ops.at(0),
             expected_grad("SoftmaxCrossEntropyLossGradient", {"s", "l", "w", "out_grad"},
                           {"s_grad"}, fwd));
  expect_def(make_gradient(fwd, {"", "lp_grad"}).ops.at(0),
             expected_grad("SoftmaxCrossEntropyLossGradient", {"s", "l", "w", "", "lp_grad"},
                           {"s_grad"}, fwd));
  const OperatorDef plain = make_def("SoftmaxCrossEntropyLoss", {"s", "l"}, {"out"});
  const GradientOps g = make_gradient(plain, {"out_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0], expected_grad("SoftmaxCrossEntropyLossGradient", {"s", "l", "", "out_grad"},
                                     {"s_grad"}, plain));
  EXPECT_EQ(g.input_grads, (std::vector<std::string>{"s_grad", ""}));
  EXPECT_NO_THROW(validate(g.ops[0]));
  EXPECT_EQ(make_gradient(fwd, {"out_grad", ""}).input_grads,
            (std::vector<std::string>{"s_grad", "", ""}));
}

TEST(GradientMaker, NegativeLogLikelihoodLoss) {
  const OperatorDef fwd = make_def("NegativeLogLikelihoodLoss", {"lp", "t", "w"}, {"loss"},
                                   {{"ignore_index", std::int64_t{2}}});
  const GradientOps g = make_gradient(fwd, {"loss_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0], expected_grad("NegativeLogLikelihoodLossGradient",
                                     {"lp", "t", "loss_grad", "w"}, {"lp_grad"}, fwd));
  EXPECT_EQ(g.input_grads, (std::vector<std::string>{"lp_grad", "", ""}));
  const OperatorDef plain = make_def("NegativeLogLikelihoodLoss", {"lp", "t"}, {"loss"});
  expect_def(
      make_gradient(plain, {"g"}).ops.at(0),
      expected_grad("NegativeLogLikelihoodLossGradient", {"lp", "t", "g"}, {"lp_grad"}, plain));
  EXPECT_ERROR_MENTIONS(make_gradient(plain, {""}), {"Gradient of output loss is not provided!"});
  EXPECT_NO_THROW(validate(g.ops[0]));
}

TEST(GradientMaker, SoftmaxAndLogSoftmax) {
  for (const char* type : {"Softmax", "LogSoftmax"}) {
    SCOPED_TRACE(type);
    const OperatorDef fwd = make_def(type, {"x"}, {"y"}, {{"axis", std::int64_t{1}}});
    const GradientOps g = make_gradient(fwd, {"y_grad"});
    ASSERT_EQ(g.ops.size(), 1u);
    expect_def(g.ops[0],
               expected_grad(std::string(type) + "Gradient", {"y", "y_grad"}, {"x_grad"}, fwd));
    EXPECT_EQ(g.input_grads, std::vector<std::string>{"x_grad"});
    EXPECT_ERROR_MENTIONS(make_gradient(fwd, {""}), {"Gradient of output y is not provided!"});
    EXPECT_NO_THROW(validate(g.ops[0]));
  }
}

TEST(GradientMaker, CrossEntropy) {
  const OperatorDef fwd = make_def("CrossEntropy", {"X", "T", "cw", "pw"}, {"L", "P", "LP", "H"},
                                   {{"label_smoothing", 0.1f}, {"order", std::string("NHWC")}});
  expect_def(make_gradient(fwd, {"L_grad", "P_grad", "LP_grad", "H_grad"}).ops.at(0),
             expected_grad("CrossEntropyGradient",
                           {"X", "T", "cw", "pw", "L_grad", "P_grad", "LP_grad", "H_grad"},
                           {"X_grad"}, fwd));
  // Absent trailing ports are dropped, absent middle ones are empty names.
  expect_def(
      make_gradient(fwd, {"L_grad", "", "", ""}).ops.at(0),
      expected_grad("CrossEntropyGradient", {"X", "T", "cw", "pw", "L_grad"}, {"X_grad"}, fwd));
  expect_def(make_gradient(fwd, {"", "", "LP_grad", ""}).ops.at(0),
             expected_grad("CrossEntropyGradient", {"X", "T", "cw", "pw", "", "", "LP_grad"},
                           {"X_grad"}, fwd));
  const OperatorDef plain = make_def("CrossEntropy", {"X", "T"}, {"L"});
  const GradientOps g = make_gradient(plain, {"L_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0], expected_grad("CrossEntropyGradient", {"X", "T", "", "", "L_grad"},
                                     {"X_grad"}, plain));
  EXPECT_EQ(g.input_grads, (std::vector<std::string>{"X_grad", ""}));
  EXPECT_NO_THROW(validate(g.ops[0]));
  const OperatorDef skipped = make_def("CrossEntropy", {"X", "T", "", "pw"}, {"L", "", "", "H"});
  expect_def(make_gradient(skipped, {"", "", "", "H_grad"}).ops.at(0),
             expected_grad("CrossEntropyGradient", {"X", "T", "", "pw", "", "", "", "H_grad"},
                           {"X_grad"}, skipped));
  EXPECT_EQ(make_gradient(skipped, {"", "", "", "H_grad"}).input_grads,
            (std::vector<std::string>{"X_grad", "", "", ""}));
}

TEST(GradientMaker, KLDiv) {
  const OperatorDef fwd =
      make_def("KLDiv", {"X", "T"}, {"kl"},
               {{"log_target", std::int64_t{1}}, {"reduction", std::string("batchmean")}});
  const GradientOps g = make_gradient(fwd, {"kl_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0], expected_grad("KLDivGradient", {"X", "T", "kl_grad"}, {"X_grad"}, fwd));
  EXPECT_EQ(g.input_grads, (std::vector<std::string>{"X_grad", ""}));
  EXPECT_ERROR_MENTIONS(make_gradient(fwd, {""}), {"Gradient of output kl is not provided!"});
  EXPECT_NO_THROW(validate(g.ops[0]));
}

TEST(GradientMaker, SpatialSoftmaxAndSoftArgmax) {
  const OperatorDef sm = make_def("SpatialSoftmax", {"X"}, {"S"}, {{"temperature", 0.5f}});
  const GradientOps g = make_gradient(sm, {"S_grad"});
  ASSERT_EQ(g.ops.size(), 1u);
  expect_def(g.ops[0],
             expected_grad("SpatialSoftArgmaxGradient", {"X", "", "S_grad"}, {"X_grad"}, sm));
  EXPECT_ERROR_MENTIONS(make_gradient(sm, {""}), {"Gradient of output S is not provided!"});
  EXPECT_NO_THROW(validate(g.ops[0]));

  const OperatorDef sa = make_def("SpatialSoftArgmax", {"X"}, {"kp", "S", "cov"},
                                  {{"coordinates", std::string("pixel")}});
  expect_def(make_gradient(sa, {"kp_grad", "S_grad", "cov_grad"}).ops.at(0),
             expected_grad("SpatialSoftArgmaxGradient", {"X", "kp_grad", "S_grad", "cov_grad"},
                           {"X_grad"}, sa));
  expect_def(make_gradient(sa, {"kp_grad", "", ""}).ops.at(0),
             expected_grad("SpatialSoftArgmaxGradient", {"X", "kp_grad"}, {"X_grad"}, sa));
  expect_def(make_gradient(sa, {"", "", "cov_grad"}).ops.at(0),
             expected_grad("SpatialSoftArgmaxGradient", {"X", "", "", "cov_grad"}, {"X_grad"}, sa));
  EXPECT_EQ(make_gradient(sa, {"kp_grad", "", ""}).input_grads, std::vector<std::string>{"X_grad"});
}

// --- 4. API errors in the operator's terms (issue 10, item 12) ---------------

// The message of the Error `f` throws; "" when it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Runs `def` on `blobs` and returns the error's message ("" if none); the run
// must write nothing.
std::string run_error(const OperatorDef& def, const Blobs& blobs) {
  Workspace ws;
  put(ws, blobs);
  const std::vector<std::string> before = ws.names();
  const std::string what = error_of([&] { run_operator(def, ws); });
  EXPECT_EQ(ws.names(), before) << what;
  return what;
}

void expect_named(const std::string& what, const std::string& starts,
                  std::initializer_list<const char*> absent) {
  EXPECT_EQ(what.rfind(starts, 0), 0u) << "expected to start with \"" << starts << "\": " << what;
  for (const char* a : absent) EXPECT_EQ(what.find(a), std::string::npos) << a << " in: " << what;
}

// (2, 5, 3, 4) scores, (2, 3, 4) labels with a 7 at [1, 2, 3] (flat 23).
Tensor scores() { return rnd({2, 5, 3, 4}, 81); }
Tensor bad_labels(DType dtype) {
  Tensor t(dtype, {2, 3, 4});
  if (dtype == i32)
    t.data_as<std::int32_t>()[23] = 7;
  else
    t.data_as<std::int64_t>()[23] = 7;
  return t;
}

TEST(OperatorErrors, BadLabelNamesTheOperatorsInputAndItsBlob) {
  expect_named(run_error(make_def("SoftmaxCrossEntropyLoss", {"S", "T"}, {"L"}),
                         {{"S", scores()}, {"T", bad_labels(i64)}}),
               "SoftmaxCrossEntropyLoss: input 'labels' (blob 'T') [1, 2, 3] (flat index 23) = 7, "
               "expected in [0, 5)",
               {"targets", "cross_entropy"});
  expect_named(run_error(make_def("SoftmaxCrossEntropyLossGradient", {"S", "T", "", "dL"}, {"dS"}),
                         {{"S", scores()}, {"T", bad_labels(i32)}, {"dL", Tensor(f64, {})}}),
               "SoftmaxCrossEntropyLossGradient: input 'labels' (blob 'T') [1, 2, 3]", {"targets"});
  expect_named(run_error(make_def("NegativeLogLikelihoodLoss", {"LP", "Y"}, {"L"}),
                         {{"LP", scores()}, {"Y", bad_labels(i64)}}),
               "NegativeLogLikelihoodLoss: input 'target' (blob 'Y') [1, 2, 3] (flat index 23) = 7",
               {"labels", "nll_loss"});
  expect_named(run_error(make_def("CrossEntropy", {"X", "Y"}, {"L"}),
                         {{"X", scores()}, {"Y", bad_labels(i32)}}),
               "CrossEntropy: input 'targets' (blob 'Y') [1, 2, 3]", {"cross_entropy"});
  // Caffe2's functions name themselves as the operator: a named operator is
  // named once.
  OperatorDef c2 = make_def("SpatialSoftmaxWithLoss", {"logits", "labels"}, {"P", "L"});
  c2.name = "loss1";
  Tensor t(i32, {2, 3, 4});
  t.data_as<std::int32_t>()[23] = 7;
  const std::string what = run_error(c2, {{"logits", scores()}, {"labels", std::move(t)}});
  expect_named(
      what, "SpatialSoftmaxWithLoss 'loss1': input 'T' (blob 'labels') [1, 2, 3] (flat index 23)",
      {});
  EXPECT_EQ(what.find("SpatialSoftmaxWithLoss", 1), std::string::npos) << what;
  // In a net, after the net's and the op's place.
  NetDef net;
  net.name = "seg";
  net.ops = {make_def("SoftmaxCrossEntropyLoss", {"S", "T"}, {"L"})};
  Workspace ws;
  ws.set("S", scores());
  ws.set("T", bad_labels(i64));
  EXPECT_ERROR_MENTIONS(run_net(net, ws),
                        {"net 'seg', op 0: SoftmaxCrossEntropyLoss: input 'labels' (blob 'T') ["});
}

TEST(OperatorErrors, BadWeightNamesTheOperatorsWeightInput) {
  expect_named(run_error(make_def("SoftmaxCrossEntropyLoss", {"S", "T", "W"}, {"L"}),
                         {{"S", scores()}, {"T", Tensor(i64, {2, 3, 4})}, {"W", Tensor(f64, {4})}}),
               "SoftmaxCrossEntropyLoss: input 'weights' (blob 'W') shape: expected (5,)",
               {"class_weight"});
  expect_named(run_error(make_def("NegativeLogLikelihoodLoss", {"LP", "Y", "w"}, {"L"}),
                         {{"LP", scores()},
                          {"Y", Tensor(i64, {2, 3, 4})},
                          {"w", values(f64, {5}, {1, -1, 1, 1, 1})}}),
               "NegativeLogLikelihoodLoss: input 'weight' (blob 'w') [flat index 1] = -1",
               {"class_weight"});
  expect_named(
      run_error(make_def("CrossEntropy", {"X", "Y", "", "A"}, {"L"}),
                {{"X", scores()}, {"Y", Tensor(i64, {2, 3, 4})}, {"A", Tensor(f64, {2, 3})}}),
      "CrossEntropy: input 'pixel_weight' (blob 'A') shape", {});
  expect_named(run_error(make_def("SoftmaxWithLoss", {"X", "T", "W"}, {"P", "L"}),
                         {{"X", rnd({4, 5}, 3)}, {"T", Tensor(i32, {4})}, {"W", Tensor(f64, {5})}}),
               "SoftmaxWithLoss: input 'weight_tensor' (blob 'W') shape", {});
  // Caffe2's 5-input gradient: port 2 is the weights.
  expect_named(
      run_error(make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "W", "P", "dL"}, {"dX"}),
                {{"X", scores()},
                 {"T", Tensor(i32, {2, 3, 4})},
                 {"W", Tensor(f64, {2, 3})},
                 {"P", scores()},
                 {"dL", Tensor(f64, {})}}),
      "SpatialSoftmaxWithLossGradient: input 'weight_tensor' (blob 'W') shape", {});
}

TEST(OperatorErrors, UpstreamGradientNamedAsTheGradientOperatorNamesIt) {
  const Tensor lp = scores();
  expect_named(
      run_error(make_def("SoftmaxCrossEntropyLossGradient", {"S", "T", "", "dL"}, {"dS"}),
                {{"S", scores()}, {"T", Tensor(i64, {2, 3, 4})}, {"dL", Tensor(f64, {2})}}),
      "SoftmaxCrossEntropyLossGradient: input 'd_output' (blob 'dL') shape", {"grad_loss"});
  expect_named(
      run_error(
          make_def("SoftmaxCrossEntropyLossGradient", {"S", "T", "", "", "dLP"}, {"dS"}),
          {{"S", scores()}, {"T", Tensor(i64, {2, 3, 4})}, {"dLP", Tensor(f32, {2, 5, 3, 4})}}),
      "SoftmaxCrossEntropyLossGradient: input 'd_log_prob' (blob 'dLP') dtype", {"grad_log_prob"});
  expect_named(
      run_error(make_def("NegativeLogLikelihoodLossGradient", {"LP", "Y", "dL"}, {"dLP"}),
                {{"LP", scores()}, {"Y", Tensor(i64, {2, 3, 4})}, {"dL", Tensor(f32, {})}}),
      "NegativeLogLikelihoodLossGradient: input 'd_loss' (blob 'dL') dtype", {"grad_loss"});
  expect_named(
      run_error(make_def("CrossEntropyGradient", {"X", "Y", "", "", "", "dP"}, {"dX"}),
                {{"X", scores()}, {"Y", Tensor(i64, {2, 3, 4})}, {"dP", Tensor(f64, {2, 3, 4})}}),
      "CrossEntropyGradient: input 'd_prob' (blob 'dP') shape", {"grad_prob"});
  expect_named(run_error(make_def("KLDivGradient", {"X", "Q", "dL"}, {"dX"}),
                         {{"X", scores()}, {"Q", scores()}, {"dL", Tensor(f64, {3})}}),
               "KLDivGradient: input 'd_output' (blob 'dL') shape", {"grad_output"});
  expect_named(run_error(make_def("SoftmaxGradient", {"y", "dy"}, {"dx"}),
                         {{"y", rnd({2, 3}, 5)}, {"dy", Tensor(f32, {2, 3})}}),
               "SoftmaxGradient: input 'd_output' (blob 'dy') dtype", {"grad_prob"});
  expect_named(run_error(make_def("SoftmaxGradient", {"y", "dy"}, {"dx"}),
                         {{"y", rnd({2, 3}, 5)}, {"dy", Tensor(f64, {3, 2})}}),
               "SoftmaxGradient: input 'd_output' (blob 'dy') shape", {});
  expect_named(run_error(make_def("LogSoftmaxGradient", {"y", "dy"}, {"dx"}),
                         {{"y", rnd({2, 3}, 5)}, {"dy", Tensor(f32, {2, 3})}}),
               "LogSoftmaxGradient: input 'd_output' (blob 'dy') dtype", {"grad_log_prob"});
  expect_named(run_error(make_def("SpatialSoftArgmaxGradient", {"X", "", "dS"}, {"dX"}),
                         {{"X", scores()}, {"dS", Tensor(f64, {2, 5})}}),
               "SpatialSoftArgmaxGradient: input 'd_S' (blob 'dS') shape", {"grad_softmax"});
  expect_named(run_error(make_def("SpatialSoftmaxWithLossGradient", {"X", "T", "P", "dL"}, {"dX"}),
                         {{"X", scores()},
                          {"T", Tensor(i32, {2, 3, 4})},
                          {"P", scores()},
                          {"dL", Tensor(i32, {})}}),
               "SpatialSoftmaxWithLossGradient: input 'd_avg_loss' (blob 'dL') dtype", {"d_loss"});
  expect_named(run_error(make_def("SoftmaxWithLossGradient", {"X", "T", "W", "P", "dL"}, {"dX"}),
                         {{"X", rnd({4, 5}, 3)},
                          {"T", Tensor(i32, {4})},
                          {"W", Tensor(f64, {4})},
                          {"P", Tensor(f32, {4, 5})},
                          {"dL", Tensor(f64, {})}}),
               "SoftmaxWithLossGradient: input 'P' (blob 'P') dtype", {});
}

// The API's options are the operators' arguments, named as such.
TEST(OperatorErrors, OptionsNamedAsTheOperatorsArguments) {
  expect_named(run_error(make_def("CrossEntropy", {"X", "Y"}, {"L"}, {{"label_smoothing", 2.0f}}),
                         {{"X", scores()}, {"Y", Tensor(i64, {2, 3, 4})}}),
               "CrossEntropy: argument 'label_smoothing' = 2, expected in [0, 1]",
               {"cross_entropy"});
  expect_named(
      run_error(make_def("CrossEntropy", {"X", "Y"}, {"L"}, {{"ignore_index", std::int64_t{0}}}),
                {{"X", scores()}, {"Y", scores()}}),
      "CrossEntropy: argument 'ignore_index' = 0", {});
  expect_named(run_error(make_def("SpatialSoftmax", {"X"}, {"S"}, {{"temperature", -1.0f}}),
                         {{"X", scores()}}),
               "SpatialSoftmax: argument 'temperature' = -1", {"spatial_soft_argmax"});
}

// ONNX labels are class indices: float labels of the scores' shape are not
// taken as probabilities.
TEST(OperatorErrors, OnnxLabelsMustBeIndices) {
  expect_named(run_error(make_def("SoftmaxCrossEntropyLoss", {"S", "T"}, {"L"}),
                         {{"S", scores()}, {"T", scores()}}),
               "SoftmaxCrossEntropyLoss: input 'labels' (blob 'T') dtype: expected int32 or int64, "
               "got float64",
               {});
}

// --- 5. ConstantFill's value and Sum's overflow (issue 10, item 9) ----------

constexpr std::int64_t kFloatCode = 1, kInt32Code = 2, kInt64Code = 10, kDoubleCode = 13;

OperatorDef fill_def(ArgValue value, std::int64_t dtype, std::vector<std::string> inputs = {}) {
  std::vector<Argument> args = {{"value", std::move(value)}, {"dtype", dtype}};
  if (inputs.empty()) args.push_back({"shape", std::vector<std::int64_t>{3}});
  return make_def("ConstantFill", std::move(inputs), {"y"}, std::move(args));
}

Tensor run_fill(const OperatorDef& def) {
  Workspace ws;
  run_operator(def, ws);
  return copy(ws.get("y"));
}

TEST(ConstantFillValue, IntArgumentIsExactForInt64) {
  const std::int64_t odd = (std::int64_t{1} << 53) + 1;  // not a double
  for (const std::int64_t v : {odd, -odd, std::numeric_limits<std::int64_t>::max(),
                               std::numeric_limits<std::int64_t>::min()}) {
    const Tensor y = run_fill(fill_def(v, kInt64Code));
    ASSERT_EQ(y.dtype(), i64);
    for (std::int64_t i = 0; i < y.numel(); ++i) EXPECT_EQ(y.data_as<std::int64_t>()[i], v) << v;
  }
  const Tensor y = run_fill(fill_def(std::int64_t{-2147483648}, kInt32Code));
  EXPECT_EQ(y.data_as<std::int32_t>()[0], std::numeric_limits<std::int32_t>::min());
}

// An integer dtype takes a float value only if it is an integer in its range
// (Caffe2 cast it: UB, 3e9 became INT_MIN); an int value must fit int32.
// Checked when the operator is created (the dtype is known) and by shape
// inference, with the operator, the argument, the range and the value.
TEST(ConstantFillValue, IntegerDtypesRefuseWhatTheyCannotHold) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::string i32_range = "[-2147483648, 2147483647] (the range of int32";
  const std::string i64_range = "[-9223372036854775808, 9223372036854775807] (the range of int64";
  struct Case {
    ArgValue value;
    std::int64_t dtype;
    std::string range, got;
  };
  const Case cases[] = {
      {std::int64_t{3000000000}, kInt32Code, i32_range, "got 3000000000"},
      {std::int64_t{-2147483649}, kInt32Code, i32_range, "got -2147483649"},
      {3e9f, kInt32Code, i32_range, "got 3e+09"},
      {2147483648.0f, kInt32Code, i32_range, "got 2.14748365e+09"},
      {std::numeric_limits<float>::quiet_NaN(), kInt32Code, i32_range, "got nan"},
      {-inf, kInt32Code, i32_range, "got -inf"},
      {inf, kInt64Code, i64_range, "got inf"},
      {9223372036854775808.0f, kInt64Code, i64_range, "got 9.22337204e+18"},
      {2.5f, kInt32Code, i32_range, "got 2.5 (not an integer"},
      {-0.5f, kInt64Code, i64_range, "got -0.5 (not an integer"},
  };
  for (const Case& c : cases) {
    const OperatorDef def = fill_def(c.value, c.dtype);
    const std::string created = error_of([&] { (void)create_operator(def); });
    for (const std::string& needle :
         {std::string("ConstantFill: argument 'value'"), c.range, c.got}) {
      EXPECT_NE(created.find(needle), std::string::npos) << needle << " not in: " << created;
    }
    EXPECT_ERROR_MENTIONS(schema_of("ConstantFill").infer_outputs(def, {}), {"'value'", c.got});
  }
}

TEST(ConstantFillValue, IntegerDtypesTakeIntegralFloats) {
  EXPECT_EQ(run_fill(fill_def(-2147483648.0f, kInt32Code)).data_as<std::int32_t>()[2],
            std::numeric_limits<std::int32_t>::min());
  EXPECT_EQ(run_fill(fill_def(-9223372036854775808.0f, kInt64Code)).data_as<std::int64_t>()[1],
            std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(run_fill(fill_def(16777216.0f, kInt32Code)).data_as<std::int32_t>()[0], 16777216);
  EXPECT_EQ(run_fill(fill_def(-3.0f, kInt64Code)).data_as<std::int64_t>()[0], -3);
  // No value: the default 0.
  EXPECT_EQ(run_fill(make_def("ConstantFill", {}, {"y"}, {{"dtype", kInt32Code}})).numel(), 1);
}

// With the dtype taken from the input, the check runs with the operator; the
// run writes nothing.
TEST(ConstantFillValue, DtypeFromTheInputIsCheckedWhenRun) {
  const OperatorDef def = make_def("ConstantFill", {"x"}, {"y"}, {{"value", 2.5f}});
  EXPECT_NO_THROW((void)create_operator(def));
  Workspace ws;
  ws.set("x", Tensor(i32, {2, 2}));
  EXPECT_ERROR_MENTIONS(run_operator(def, ws), {"ConstantFill", "'value'", "int32", "got 2.5"});
  EXPECT_FALSE(ws.has("y"));
  ws.set("x", Tensor(f64, {2, 2}));
  run_operator(def, ws);
  EXPECT_EQ(ws.get("y").at(3), 2.5);
}

// Float dtypes follow IEEE: NaN and infinities are filled as given, an int
// value rounds to nearest (the schema doc of `value` says so).
TEST(ConstantFillValue, FloatDtypesFollowIeee) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(run_fill(fill_def(inf, kFloatCode)).data_as<float>()[0], inf);
  EXPECT_EQ(run_fill(fill_def(-inf, kDoubleCode)).data_as<double>()[1], -static_cast<double>(inf));
  EXPECT_TRUE(std::isnan(run_fill(fill_def(std::numeric_limits<float>::quiet_NaN(), kDoubleCode))
                             .data_as<double>()[2]));
  const std::int64_t odd53 = (std::int64_t{1} << 53) + 1, odd24 = (1 << 24) + 1;
  EXPECT_EQ(run_fill(fill_def(odd53, kDoubleCode)).data_as<double>()[0], 9007199254740992.0);
  EXPECT_EQ(run_fill(fill_def(odd24, kFloatCode)).data_as<float>()[0], 16777216.0f);
  EXPECT_EQ(run_fill(fill_def(0.1f, kDoubleCode)).data_as<double>()[0], static_cast<double>(0.1f));
  const std::string& doc = schema_of("ConstantFill").find_arg("value")->doc;
  EXPECT_NE(doc.find("IEEE"), std::string::npos) << doc;
  EXPECT_NE(doc.find("not an integer"), std::string::npos) << doc;
}

TEST(SumOverflow, IntegerOverflowIsAnErrorNamingTheElement) {
  Workspace ws;
  ws.set("a", values(i32, {2}, {2147483646, 5}));
  ws.set("b", values(i32, {2}, {1, 1}));
  ws.set("c", values(i32, {2}, {1, 1}));
  const std::string what = error_of([&] {
    run_operator(make_def("Sum", {"a", "b", "c"}, {"s"}), ws);
  });
  for (const char* needle :
       {"Sum: output 'sum' (blob 's') [flat index 0]", "2147483647 (the sum of inputs 0..1)",
        "+ 1 (input 2, blob 'c')", "overflows int32", "[-2147483648, 2147483647]"}) {
    EXPECT_NE(what.find(needle), std::string::npos) << needle << " not in: " << what;
  }
  EXPECT_FALSE(ws.has("s"));

  Tensor low(i64, {2});
  low.data_as<std::int64_t>()[1] = std::numeric_limits<std::int64_t>::min();
  ws.set("p", std::move(low));
  ws.set("q", values(i64, {2}, {1, -1}));
  EXPECT_ERROR_MENTIONS(run_operator(make_def("Sum", {"p", "q"}, {"s"}), ws),
                        {"blob 's'", "flat index 1", "-9223372036854775808 (input 0, blob 'p')",
                         "+ -1 (input 1, blob 'q')", "overflows int64"});
  EXPECT_FALSE(ws.has("s"));
}

TEST(SumOverflow, SumsInRangeAndFloatSumsAreUnchanged) {
  Workspace ws;
  ws.set("a", values(i32, {2}, {2147483646, -2147483647}));
  ws.set("b", values(i32, {2}, {1, -1}));
  run_operator(make_def("Sum", {"a", "b"}, {"s"}), ws);
  EXPECT_EQ(ws.get("s").data_as<std::int32_t>()[0], 2147483647);
  EXPECT_EQ(ws.get("s").data_as<std::int32_t>()[1], -2147483648);
  // Float sums stay IEEE: an overflow gives inf.
  const float big = std::numeric_limits<float>::max();
  ws.set("f", values(f32, {1}, {big}));
  run_operator(make_def("Sum", {"f", "f"}, {"g"}), ws);
  EXPECT_EQ(ws.get("g").data_as<float>()[0], std::numeric_limits<float>::infinity());
}

// Every operator has a CUDA entry where the library has the CUDA backend,
// and a CUDA operator refuses host blobs, naming the input and the device,
// before it computes anything (so this runs without a GPU).
TEST(CudaOperators, EveryOperatorIsRegisteredOnCudaAndWantsDeviceBlobs) {
  bool cuda = false;
  for (const std::string& name : backend_names()) cuda |= name.ends_with("(cuda)");
  if (!cuda) GTEST_SKIP() << "this build has no CUDA backend";
  for (const std::string& type : schema_types()) {
    const std::vector<Device> devices = devices_of(type);
    EXPECT_NE(std::find(devices.begin(), devices.end(), Device::kCuda), devices.end()) << type;
  }
  Workspace ws;
  ws.set("X", rnd({2, 3, 4, 5}, 1));
  OperatorDef def = make_def("Softmax", {"X"}, {"P"});
  def.device.device = Device::kCuda;
  EXPECT_ERROR_MENTIONS(run_operator(def, ws),
                        {"Softmax", "blob 'X'", "cpu memory", "expected cuda:0", "device_option"});
  def = make_def("ConstantFill", {"X"}, {"Y"});
  def.device.device = Device::kCuda;
  def.device.device_id = 1;
  EXPECT_ERROR_MENTIONS(run_operator(def, ws), {"ConstantFill", "expected cuda:1"});
  EXPECT_FALSE(ws.has("P"));
}

}  // namespace
}  // namespace spatialsoftmax::op
