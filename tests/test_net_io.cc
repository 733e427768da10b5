// NetDef reading and writing: round trips in the three forms, hand-written
// text and JSON, a binary encoded here by hand from caffe2.proto's field
// numbers (so wire compatibility is checked independently of our own .proto),
// device-option inheritance, and every error with the place it names.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/op/net_io.h"
#include "spatialsoftmax/op/operator_def.h"
#include "spatialsoftmax/op/schema.h"
#include "test_support.h"

namespace spatialsoftmax::op {
namespace {

using namespace std::string_literals;

NetDef parse_text(std::string_view text) { return parse_net(text, NetFormat::kText, "net.pbtxt"); }
NetDef parse_json(std::string_view json) { return parse_net(json, NetFormat::kJson, "net.json"); }

// The loss op as Caffe2 nets spell it, with one argument of every kind and
// values that stress each encoding: int64 beyond 2^53 (JSON writes int64 as
// strings), floats with no short decimal form, non-UTF-8 bytes (Argument.s is
// bytes), an escaped quote in a name.
NetDef rich_net() {
  OperatorDef loss;
  loss.type = "SpatialSoftmaxWithLoss";
  loss.name = "loss \"main\"";
  loss.inputs = {"X", "T", "W"};
  loss.outputs = {"P", "avg_loss"};
  loss.args = {{"scale", 0.1f},
               {"big", std::int64_t{-9007199254740993}},
               {"order", "NCHW"s},
               {"raw", "\0\xff\x80 bytes"s},
               {"weights", std::vector<float>{1e-30f, -3.4e38f, 0.333333343f}},
               {"dims", std::vector<std::int64_t>{0, -1, std::numeric_limits<std::int64_t>::max()}},
               {"names", std::vector<std::string>{"a", "", "c d"}},
               {"flag", std::monostate{}}};
  loss.device = {Device::kCuda, 3};
  loss.engine = "CUDNN";

  OperatorDef grad;
  grad.type = "SpatialSoftmaxWithLossGradient";
  grad.inputs = {"X", "T", "W", "P", "avg_loss_grad"};
  grad.outputs = {"X_grad"};
  grad.is_gradient_op = true;

  NetDef net;
  net.name = "train";
  net.ops = {loss, grad};
  net.external_inputs = {"X", "T", "W"};
  net.external_outputs = {"avg_loss", "X_grad"};
  return net;
}

class NetIoFormats : public ::testing::TestWithParam<NetFormat> {};

TEST_P(NetIoFormats, SerializeThenParseGivesTheSameNet) {
  const NetDef net = rich_net();
  EXPECT_EQ(parse_net(serialize_net(net, GetParam()), GetParam()), net);
}

TEST_P(NetIoFormats, EmptyNetRoundTrips) {
  EXPECT_EQ(parse_net(serialize_net(NetDef{}, GetParam()), GetParam()), NetDef{});
}

INSTANTIATE_TEST_SUITE_P(AllFormats, NetIoFormats,
                         ::testing::Values(NetFormat::kBinary, NetFormat::kText, NetFormat::kJson));

// ---- Hand-written text and JSON ---------------------------------------------

TEST(NetIo, ParsesHandWrittenText) {
  // Caffe2's own idioms, and fields this library accepts and ignores.
  const NetDef net = parse_text(R"(
    # A comment.
    name: "seg"
    type: "dag"
    num_workers: 4
    arg { name: "num_workers" i: 4 }
    op {
      input: "X" input: "T"
      output: "P" output: "avg_loss"
      name: "loss"
      type: "SpatialSoftmaxWithLoss"
      arg { name: "scale" f: 2.5 }
      arg { name: "order" s: "NCHW" }
      arg { name: "ignore_label" i: -1 }
      arg { name: "shape" ints: 1 ints: 2 }
      arg { name: "alphas" floats: [0.5, 0.25] }
      arg { name: "tags" strings: ["p", "q"] }
      arg { name: "unset" }
      device_option { device_type: 1 device_id: 2 random_seed: 7 node_name: "n0" }
      engine: "CUDNN"
      control_input: "ready"
      is_gradient_op: false
      debug_info: "from model.py:12"
      domain: "caffe2"
      op_version: 1
    }
    external_input: "X"
    external_input: "T"
    external_output: "avg_loss"
    partition_info { name: "p0" device_id: 0 backend_options { backend_name: "b" option { key: "k" val: "v" } } }
  )");

  OperatorDef op;
  op.type = "SpatialSoftmaxWithLoss";
  op.name = "loss";
  op.inputs = {"X", "T"};
  op.outputs = {"P", "avg_loss"};
  op.args = {{"scale", 2.5f},
             {"order", "NCHW"s},
             {"ignore_label", std::int64_t{-1}},
             {"shape", std::vector<std::int64_t>{1, 2}},
             {"alphas", std::vector<float>{0.5f, 0.25f}},
             {"tags", std::vector<std::string>{"p", "q"}},
             {"unset", std::monostate{}}};
  op.device = {Device::kCuda, 2};
  op.engine = "CUDNN";
  NetDef want;
  want.name = "seg";
  want.ops = {op};
  want.external_inputs = {"X", "T"};
  want.external_outputs = {"avg_loss"};
  EXPECT_EQ(net, want);
}

OperatorDef example_loss_op() {
  OperatorDef op;
  op.type = "SpatialSoftmaxWithLoss";
  op.inputs = {"X", "T"};
  op.outputs = {"P", "avg_loss"};
  op.args = {{"scale", 1.0f}};
  return op;
}

TEST(NetIo, ParsesHandWrittenJson) {
  const NetDef net = parse_json(R"({"name": "n", "op": [{"type": "SpatialSoftmaxWithLoss",
      "input": ["X", "T"], "output": ["P", "avg_loss"], "arg": [{"name": "scale", "f": 1.0}]}],
      "external_input": ["X","T"], "external_output": ["avg_loss"]})");
  NetDef want;
  want.name = "n";
  want.ops = {example_loss_op()};
  want.external_inputs = {"X", "T"};
  want.external_outputs = {"avg_loss"};
  EXPECT_EQ(net, want);
}

TEST(NetIo, JsonTakesCamelCaseNamesInt64StringsAndBase64Bytes) {
  // Protobuf's standard JSON mapping: lowerCamelCase names are accepted,
  // int64 may be a string, and bytes (Argument.s, .strings) are base64.
  const NetDef net = parse_json(R"({"op": [{"type": "Op",
      "arg": [{"name": "big", "i": "9007199254740993"},
              {"name": "order", "s": "TkNIVw=="},
              {"name": "tags", "strings": ["YQ==", ""]}],
      "deviceOption": {"deviceType": 1, "deviceId": 1},
      "isGradientOp": true}],
      "externalInput": ["X"]})");
  ASSERT_EQ(net.ops.size(), 1u);
  const OperatorDef& op = net.ops[0];
  EXPECT_EQ(op.find_arg("big")->value, ArgValue{std::int64_t{9007199254740993}});
  EXPECT_EQ(op.find_arg("order")->value, ArgValue{"NCHW"s});
  EXPECT_EQ(op.find_arg("tags")->value, (ArgValue{std::vector<std::string>{"a", ""}}));
  EXPECT_EQ(op.device, (DeviceOption{Device::kCuda, 1}));
  EXPECT_TRUE(op.is_gradient_op);
  EXPECT_EQ(net.external_inputs, std::vector<std::string>{"X"});
}

TEST(NetIo, JsonBytesThatLookLikeTextAreStillBase64) {
  // The standard mapping's trap, pinned so that a change is noticed: "NCHW"
  // is valid base64 and decodes to three bytes, not to the string NCHW.
  const NetDef net = parse_json(R"({"op": [{"arg": [{"name": "order", "s": "NCHW"}]}]})");
  EXPECT_EQ(net.ops.at(0).find_arg("order")->value, ArgValue{"\x34\x21\xd6"s});
}

TEST(NetIo, JsonIsWrittenWithCaffe2FieldNamesAndBase64) {
  NetDef net;
  net.ops = {example_loss_op()};
  net.ops[0].set_arg("order", "NCHW"s);
  net.ops[0].is_gradient_op = true;
  net.external_inputs = {"X"};
  const std::string json = serialize_net(net, NetFormat::kJson);
  EXPECT_NE(json.find("\"external_input\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"is_gradient_op\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"TkNIVw==\""), std::string::npos) << json;
}

// ---- Binary encoded by hand ---------------------------------------------------

// A minimal protobuf encoder, so the bytes below follow from caffe2.proto's
// field numbers alone and not from our .proto.
std::string varint(std::uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7f) | 0x80);
  return out + static_cast<char>(v);
}
std::string key(int field, int wire_type) {
  return varint(static_cast<std::uint64_t>(field) << 3 | static_cast<std::uint64_t>(wire_type));
}
std::string len_field(int field, const std::string& payload) {
  return key(field, 2) + varint(payload.size()) + payload;
}
std::string int_field(int field, std::int64_t v) {
  return key(field, 0) + varint(static_cast<std::uint64_t>(v));  // int64: two's complement
}
std::string float_field(int field, float v) {
  char bytes[4];
  std::memcpy(bytes, &v, 4);  // Little-endian hosts only, as is this library.
  return key(field, 5) + std::string(bytes, 4);
}

// caffe2.proto: OperatorDef input=1 output=2 name=3 type=4 arg=5
// device_option=6 engine=7 is_gradient_op=9; Argument name=1 f=2 i=3 s=4
// floats=5 ints=6 strings=7; DeviceOption device_type=1 device_id=2;
// NetDef name=1 op=2 external_input=7 external_output=8. Fields in number
// order and repeated scalars unpacked, as protobuf's proto2 writers emit them.
std::string hand_encoded_net() {
  const std::string op =
      len_field(1, "X") + len_field(1, "T") + len_field(2, "P") + len_field(2, "avg_loss") +
      len_field(3, "loss") + len_field(4, "SpatialSoftmaxWithLoss") +
      len_field(5, len_field(1, "scale") + float_field(2, 0.5f)) +
      len_field(5, len_field(1, "ignore_label") + int_field(3, -1)) +
      len_field(5, len_field(1, "order") + len_field(4, "NCHW")) +
      len_field(5, len_field(1, "alphas") + float_field(5, 1.0f) + float_field(5, 2.0f)) +
      len_field(5, len_field(1, "shape") + int_field(6, 3) + int_field(6, 300)) +
      len_field(5, len_field(1, "tags") + len_field(7, "p") + len_field(7, "q")) +
      len_field(6, int_field(1, 1) + int_field(2, 3)) + len_field(7, "CUDNN") + int_field(9, 1);
  return len_field(1, "n") + len_field(2, op) + len_field(7, "X") + len_field(7, "T") +
         len_field(8, "avg_loss");
}

NetDef hand_encoded_net_value() {
  OperatorDef op;
  op.type = "SpatialSoftmaxWithLoss";
  op.name = "loss";
  op.inputs = {"X", "T"};
  op.outputs = {"P", "avg_loss"};
  op.args = {{"scale", 0.5f},
             {"ignore_label", std::int64_t{-1}},
             {"order", "NCHW"s},
             {"alphas", std::vector<float>{1.0f, 2.0f}},
             {"shape", std::vector<std::int64_t>{3, 300}},
             {"tags", std::vector<std::string>{"p", "q"}}};
  op.device = {Device::kCuda, 3};
  op.engine = "CUDNN";
  op.is_gradient_op = true;
  NetDef net;
  net.name = "n";
  net.ops = {op};
  net.external_inputs = {"X", "T"};
  net.external_outputs = {"avg_loss"};
  return net;
}

TEST(NetIo, ParsesAHandEncodedCaffe2Binary) {
  EXPECT_EQ(parse_net(hand_encoded_net(), NetFormat::kBinary), hand_encoded_net_value());
}

TEST(NetIo, WritesTheSameBytesAsTheHandEncoding) {
  EXPECT_EQ(serialize_net(hand_encoded_net_value(), NetFormat::kBinary), hand_encoded_net());
}

TEST(NetIo, ParsesPackedRepeatedScalars) {
  // Writers such as proto3 runtimes pack repeated scalars; proto2 readers
  // must accept both encodings.
  const std::string arg = len_field(1, "shape") + len_field(6, varint(3) + varint(300));
  const std::string net = len_field(2, len_field(4, "Op") + len_field(5, arg));
  EXPECT_EQ(parse_net(net, NetFormat::kBinary).ops.at(0).find_arg("shape")->value,
            (ArgValue{std::vector<std::int64_t>{3, 300}}));
}

TEST(NetIo, SkipsFieldsUnknownToCaffe2InBinary) {
  // A newer writer's field 99 (string) on an op: proto2 skips it.
  const std::string net = len_field(2, len_field(4, "Op") + len_field(99, "future"));
  EXPECT_EQ(parse_net(net, NetFormat::kBinary).ops.at(0).type, "Op");
}

// ---- Device options ------------------------------------------------------------

TEST(NetIo, OpsWithoutDeviceOptionInheritTheNets) {
  const NetDef net = parse_text(R"(
    device_option { device_type: 1 device_id: 1 }
    op { type: "A" }
    op { type: "B" device_option { device_type: 0 } }
    op { type: "C" device_option { device_id: 5 } }
  )");
  ASSERT_EQ(net.ops.size(), 3u);
  EXPECT_EQ(net.ops[0].device, (DeviceOption{Device::kCuda, 1}));
  // An op's own option replaces the net's whole, as in Caffe2: C's
  // device_type defaults to CPU rather than taking the net's CUDA.
  EXPECT_EQ(net.ops[1].device, (DeviceOption{Device::kCpu, 0}));
  EXPECT_EQ(net.ops[2].device, (DeviceOption{Device::kCpu, 5}));
}

TEST(NetIo, NoDeviceOptionAnywhereMeansCpu0) {
  EXPECT_EQ(parse_text(R"(op { type: "A" })").ops.at(0).device, DeviceOption{});
}

// ---- Errors --------------------------------------------------------------------

TEST(NetIoErrors, ArgumentWithTwoValues) {
  EXPECT_ERROR_MENTIONS(
      parse_text(R"(op { type: "Softmax" name: "sm" arg { name: "axis" f: 1 i: 2 } })"),
      {"net.pbtxt", "argument 'axis'", "op 0", "Softmax 'sm'", "f, i", "at most one of"});
  EXPECT_ERROR_MENTIONS(
      parse_text(
          R"(op { type: "A" } op { type: "B" arg { name: "v" floats: 1 ints: 2 strings: "x" } })"),
      {"argument 'v'", "op 1 (B)", "floats, ints, strings"});
}

TEST(NetIoErrors, NetAndTensorArguments) {
  for (const char* value : {"n { name: \"sub\" }", "nets { }", "t { dims: 2 }", "tensors { }",
                            "qtensors { precision: 8 }"}) {
    const std::string text = "op { type: \"If\" arg { name: \"then_net\" "s + value + " } }";
    EXPECT_ERROR_MENTIONS(parse_text(text), {"argument 'then_net' of op 0 (If)",
                                             "net/tensor arguments are not supported"});
  }
}

TEST(NetIoErrors, ArgumentWithoutNameOrTwice) {
  EXPECT_ERROR_MENTIONS(parse_text(R"(op { type: "A" arg { i: 1 } })"),
                        {"op 0 (A)", "argument 0 has no name"});
  EXPECT_ERROR_MENTIONS(
      parse_text(R"(op { type: "A" arg { name: "k" i: 1 } arg { name: "k" i: 2 } })"),
      {"op 0 (A)", "argument 'k' is given more than once"});
}

TEST(NetIoErrors, UnsupportedDeviceType) {
  EXPECT_ERROR_MENTIONS(
      parse_text(R"(op { type: "A" } op { type: "B" device_option { device_type: 2 } })"),
      {"net.pbtxt", "op 1 (B)", "unsupported device type 2", "0 (CPU) or 1 (CUDA)"});
  EXPECT_ERROR_MENTIONS(parse_text(R"(device_option { device_type: 6 } op { type: "A" })"),
                        {"net device_option", "unsupported device type 6"});
}

TEST(NetIoErrors, MalformedTextNamesLineAndColumn) {
  EXPECT_ERROR_MENTIONS(parse_text("name: \"n\"\nop {\n  type: \"A\"\n  input \"X\"\n}\n"),
                        {"net.pbtxt: line 4, column"});
  EXPECT_ERROR_MENTIONS(parse_text("op {\n  type: \"A\"\n  inputs: \"X\"\n}\n"),
                        {"net.pbtxt: line 3, column ", "inputs"});
  EXPECT_ERROR_MENTIONS(parse_text("op { type: \"A\" is_gradient_op: maybe }"),
                        {"line 1", "maybe"});
}

TEST(NetIoErrors, MalformedJson) {
  EXPECT_ERROR_MENTIONS(parse_json(R"({"op": [{"type": "A"})"),
                        {"net.json: not a NetDef in protobuf JSON form: Unexpected end"});
  EXPECT_ERROR_MENTIONS(parse_json(R"({"ops": []})"), {"net.json", "ops"});
  EXPECT_ERROR_MENTIONS(parse_json(R"({"op": [{"arg": [{"name": "k", "i": "x"}]}]})"),
                        {"net.json", "op[0].arg[0].i", "\"x\""});
}

TEST(NetIoErrors, MalformedBinary) {
  // Field 2 (op) claims 100 bytes; 1 follows.
  EXPECT_ERROR_MENTIONS(parse_net("\x12\x64\x0a"s, NetFormat::kBinary, "model.pb"),
                        {"model.pb", "binary"});
}

// Protobuf 3.21's text parser recursed once per '{' without a limit and
// overflowed the stack at about 10,000 levels (issue 10, item 2); every
// form now stops at kMaxNetNesting.
std::string nested_text(int levels) {
  std::string text;
  for (int i = 0; i < levels; ++i) text += "op { arg { name: \"a\" n { ";
  for (int i = 0; i < levels; ++i) text += "} } } ";
  return text;
}

// The same nesting in protobuf binary: NetDef.op (2) > OperatorDef.arg (5) >
// Argument.n (8) > NetDef ..., each a length-delimited field; Argument.name
// is field 1.
std::string nested_binary(int levels) {
  std::string inner;
  const auto wrap = [](int field, const std::string& payload) {
    std::string out(1, static_cast<char>(field << 3 | 2));
    for (std::size_t n = payload.size();; n >>= 7) {  // varint length
      out += static_cast<char>((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      if (n <= 0x7f) break;
    }
    return out + payload;
  };
  for (int i = 0; i < levels; ++i) inner = wrap(2, wrap(5, wrap(1, "a") + wrap(8, inner)));
  return inner;
}

std::string nested_json(int levels) {
  std::string json;
  for (int i = 0; i < levels; ++i) json += R"({"op": [{"arg": [{"name": "a", "n": )";
  json += "{}";
  for (int i = 0; i < levels; ++i) json += "}]}]}";
  return json;
}

TEST(NetIoErrors, DeepNestingIsRefusedInEveryForm) {
  for (const int levels : {20, 10'000}) {
    EXPECT_ERROR_MENTIONS(parse_text(nested_text(levels)), {"net.pbtxt", "too deep"}) << levels;
    EXPECT_ERROR_MENTIONS(parse_net(nested_binary(levels), NetFormat::kBinary, "net.pb"),
                          {"net.pb", "nested deeper than 32"})
        << levels;
    EXPECT_ERROR_MENTIONS(parse_json(nested_json(levels)), {"net.json"}) << levels;
  }
  // Within the limit, nesting parses, and the nested net is then refused as
  // an argument this library does not run.
  EXPECT_ERROR_MENTIONS(parse_text(nested_text(2)), {"net/tensor arguments are not supported"});
  EXPECT_ERROR_MENTIONS(parse_net(nested_binary(2), NetFormat::kBinary, "net.pb"),
                        {"net/tensor arguments are not supported"});
}

// Blob and operator names that are not UTF-8: the binary and text forms
// hold them exactly, as Caffe2's proto2 did; JSON cannot, and protobuf's
// printer dropped the bytes, writing a net that read back different (found
// by fuzz/fuzz_net.cc's round trip). serialize_net refuses it by name.
TEST(NetIoErrors, NamesThatAreNotUtf8HaveNoJsonForm) {
  const NetDef net = parse_text(R"(op { type: "Softmax" input: "X" output: "P\244" })");
  ASSERT_EQ(net.ops.at(0).outputs.at(0), "P\xa4");
  for (const NetFormat format : {NetFormat::kBinary, NetFormat::kText}) {
    EXPECT_EQ(parse_net(serialize_net(net, format), format, "again"), net);
  }
  EXPECT_ERROR_MENTIONS(serialize_net(net, NetFormat::kJson),
                        {"no JSON form", "operator 0 output 0 is not valid UTF-8"});
  NetDef named = parse_text(
      R"(name: "n" external_input: "X" external_input: "\300\200" op { type: "Softmax" input: "X" output: "P" })");
  EXPECT_ERROR_MENTIONS(serialize_net(named, NetFormat::kJson),
                        {"external_input 1 is not valid UTF-8"});
  // Valid multi-byte text is kept.
  const NetDef text = parse_text(
      "op { type: \"Softmax\" input: \"X\" output: \"P\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\" }");
  EXPECT_EQ(parse_net(serialize_net(text, NetFormat::kJson), NetFormat::kJson, "again"), text);
}

// Two outputs of one operator naming one blob: the later silently won
// (issue 10, item 10).
TEST(NetIoErrors, DuplicateOutputBlobsAreRefused) {
  EXPECT_ERROR_MENTIONS(
      parse_text(
          R"(op { type: "A" input: "X" } op { type: "Softmax" name: "s" input: "X" output: "P" output: "Q" output: "P" })"),
      {"net.pbtxt", "op 1 (Softmax 's')", "outputs 0 and 2 are both blob 'P'"});
  EXPECT_ERROR_MENTIONS(
      parse_json(R"({"op": [{"type": "Softmax", "input": ["X"], "output": ["Y", "Y"]}]})"),
      {"net.json", "op 0", "outputs 0 and 1 are both blob 'Y'"});
  // Skipped optional outputs (empty names) are not duplicates.
  EXPECT_NO_THROW(parse_text(R"(op { type: "A" output: "" output: "" output: "Z" })"));
  // Nets built in C++ meet the same rule when validated against the schema.
  const OperatorDef twice = make_operator("SpatialSoftmaxWithLoss", {"X", "T"}, {"L", "L"});
  EXPECT_ERROR_MENTIONS(schema_of("SpatialSoftmaxWithLoss").validate(twice),
                        {"SpatialSoftmaxWithLoss", "outputs 0 and 1 are both blob 'L'"});
}

// ---- Files -----------------------------------------------------------------------

class NetFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("test_net_io_" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  std::filesystem::path dir_;
};

TEST_F(NetFiles, WriteThenReadEveryExtension) {
  const NetDef net = rich_net();
  for (const char* name : {"net.pb", "net.pbtxt", "net.prototxt", "net.json"}) {
    write_net(dir_ / name, net);
    EXPECT_EQ(read_net(dir_ / name), net) << name;
  }
  // Overwriting replaces the file, and no temporary file is left behind.
  write_net(dir_ / "net.pb", NetDef{});
  EXPECT_EQ(read_net(dir_ / "net.pb"), NetDef{});
  EXPECT_EQ(files().size(), 4u);
}

TEST_F(NetFiles, FormatFollowsTheExtension) {
  EXPECT_EQ(net_format_of("a/b.pb"), NetFormat::kBinary);
  EXPECT_EQ(net_format_of("b.pbtxt"), NetFormat::kText);
  EXPECT_EQ(net_format_of("b.prototxt"), NetFormat::kText);
  EXPECT_EQ(net_format_of("b.json"), NetFormat::kJson);
  EXPECT_ERROR_MENTIONS(net_format_of("dir/net.txt"),
                        {"dir/net.txt", "'.txt'", ".pb, .pbtxt, .prototxt, .json"});
  EXPECT_ERROR_MENTIONS(read_net(dir_ / "net"), {"net", "''"});
  EXPECT_ERROR_MENTIONS(write_net(dir_ / "net.yaml", NetDef{}), {"net.yaml", "'.yaml'"});
  EXPECT_TRUE(files().empty());
}

TEST_F(NetFiles, ReadErrorsNameThePath) {
  EXPECT_ERROR_MENTIONS(read_net(dir_ / "missing.pb"),
                        {"cannot read", "missing.pb", "No such file"});
  std::filesystem::create_directory(dir_ / "sub.pb");
  EXPECT_ERROR_MENTIONS(read_net(dir_ / "sub.pb"), {"cannot read", "sub.pb", "directory"});
  std::ofstream(dir_ / "bad.pbtxt") << "op {\n  type: 3\n";
  EXPECT_ERROR_MENTIONS(read_net(dir_ / "bad.pbtxt"), {(dir_ / "bad.pbtxt").string(), "line "});
}

TEST_F(NetFiles, OversizedFileIsRefusedBeforeItIsRead) {
  // Sparse: no disk space is used.
  std::ofstream(dir_ / "huge.pb").close();
  std::filesystem::resize_file(dir_ / "huge.pb", kMaxNetBytes + 1);
  EXPECT_ERROR_MENTIONS(read_net(dir_ / "huge.pb"),
                        {"huge.pb", std::to_string(kMaxNetBytes + 1) + " bytes", "at most"});
}

TEST_F(NetFiles, FailedWriteLeavesNothingBehind) {
  EXPECT_ERROR_MENTIONS(write_net(dir_ / "missing_dir" / "net.pb", rich_net()),
                        {"cannot write", "missing_dir/net.pb"});
  // A directory in the way: the temporary file is written, the rename fails.
  std::filesystem::create_directory(dir_ / "taken.pb");
  std::ofstream(dir_ / "taken.pb" / "keep") << "x";
  EXPECT_ERROR_MENTIONS(write_net(dir_ / "taken.pb", rich_net()), {"cannot write", "taken.pb"});
  EXPECT_EQ(files(), std::vector<std::string>{"taken.pb"});
}

// ---- operator_def.h ----------------------------------------------------------------

TEST(OperatorDef, ArgumentsByName) {
  OperatorDef op = example_loss_op();
  EXPECT_EQ(op.find_arg("scale")->value, ArgValue{1.0f});
  EXPECT_EQ(op.find_arg("missing"), nullptr);
  op.set_arg("scale", 2.0f);  // Replaces in place.
  op.set_arg("order", "NHWC"s);
  ASSERT_EQ(op.args.size(), 2u);
  EXPECT_EQ(op.args[0], (Argument{"scale", 2.0f}));
  EXPECT_EQ(op.args[1], (Argument{"order", "NHWC"s}));
}

TEST(OperatorDef, NamesForMessages) {
  EXPECT_EQ(device_name(Device::kCpu), "CPU");
  EXPECT_EQ(device_name(Device::kCuda), "CUDA");
  EXPECT_EQ(arg_kind_name(ArgValue{}), "none");
  EXPECT_EQ(arg_kind_name(1.0f), "float");
  EXPECT_EQ(arg_kind_name(std::int64_t{1}), "int");
  EXPECT_EQ(arg_kind_name("s"s), "string");
  EXPECT_EQ(arg_kind_name(std::vector<float>{}), "floats");
  EXPECT_EQ(arg_kind_name(std::vector<std::int64_t>{}), "ints");
  EXPECT_EQ(arg_kind_name(std::vector<std::string>{}), "strings");
  OperatorDef op;
  op.type = "Softmax";
  EXPECT_EQ(describe(op), "Softmax");
  op.name = "sm";
  EXPECT_EQ(describe(op), "Softmax 'sm'");
}

}  // namespace
}  // namespace spatialsoftmax::op
