// NetDef <-> caffe2_net.proto messages <-> bytes. All checking of a parsed
// net happens here, once, so the plain structs never hold what Caffe2 could
// express but this library cannot run (net/tensor arguments, other devices).
//
// Two lossy corners, both inherited from protobuf itself:
//  * An argument whose value is an empty list is indistinguishable on the
//    wire from one with no value, so it reads back as std::monostate. Caffe2
//    treated the two alike (GetRepeatedArgument returned an empty list).
//  * JSON uses protobuf's standard mapping, in which bytes fields (Argument.s
//    and .strings, bytes in caffe2.proto) are base64: "NCHW" is written
//    "TkNIVw==". A plain "NCHW" in hand-written JSON is itself valid base64
//    and silently decodes to three other bytes, so JSON authors must encode.
#include "spatialsoftmax/op/net_io.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "caffe2_net.pb.h"
#include "io/staged_file.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::op {
namespace {

namespace pb = ::spatialsoftmax::caffe2;

// ---- proto -> struct -------------------------------------------------------

Device device_from_proto(const pb::DeviceOption& option, const std::string& where) {
  switch (option.device_type()) {
    case 0:
      return Device::kCpu;
    case 1:
      return Device::kCuda;
    default:
      throw Error(where + ": unsupported device type " + std::to_string(option.device_type()) +
                  "; expected 0 (CPU) or 1 (CUDA)");
  }
}

DeviceOption device_option_from_proto(const pb::DeviceOption& option, const std::string& where) {
  return DeviceOption{device_from_proto(option, where), option.device_id()};
}

ArgValue arg_value_from_proto(const pb::Argument& arg, const std::string& where) {
  if (arg.has_n() || arg.nets_size() > 0 || arg.has_t() || arg.tensors_size() > 0 ||
      arg.qtensors_size() > 0) {
    // Caffe2 used these only for control-flow ops (If, While, ...).
    throw Error(where + ": net/tensor arguments are not supported");
  }
  std::string set;  // The value fields present, for the message below.
  int count = 0;
  const auto note = [&](bool present, const char* field) {
    if (!present) return;
    set += (count++ == 0 ? "" : ", ");
    set += field;
  };
  note(arg.has_f(), "f");
  note(arg.has_i(), "i");
  note(arg.has_s(), "s");
  note(arg.floats_size() > 0, "floats");
  note(arg.ints_size() > 0, "ints");
  note(arg.strings_size() > 0, "strings");
  if (count > 1) {
    throw Error(where + ": has " + set +
                " set; expected at most one of f, i, s, floats, ints, strings");
  }
  if (arg.has_f()) return arg.f();
  if (arg.has_i()) return std::int64_t{arg.i()};
  if (arg.has_s()) return arg.s();
  if (arg.floats_size() > 0) return std::vector<float>(arg.floats().begin(), arg.floats().end());
  if (arg.ints_size() > 0) return std::vector<std::int64_t>(arg.ints().begin(), arg.ints().end());
  if (arg.strings_size() > 0) {
    return std::vector<std::string>(arg.strings().begin(), arg.strings().end());
  }
  return std::monostate{};
}

OperatorDef op_from_proto(const pb::OperatorDef& proto, int index, const DeviceOption* net_device,
                          std::string_view source) {
  OperatorDef def;
  def.type = proto.type();
  def.name = proto.name();
  const std::string where =
      std::string(source) + ": op " + std::to_string(index) + " (" + describe(def) + ")";

  def.inputs.assign(proto.input().begin(), proto.input().end());
  def.outputs.assign(proto.output().begin(), proto.output().end());
  check_distinct_outputs(def, where);
  for (int a = 0; a < proto.arg_size(); ++a) {
    const pb::Argument& arg = proto.arg(a);
    // Caffe2's ArgumentHelper rejected these too; find_arg would otherwise
    // silently pick one of two same-named arguments.
    if (arg.name().empty()) {
      throw Error(where + ": argument " + std::to_string(a) + " has no name");
    }
    if (def.find_arg(arg.name()) != nullptr) {
      throw Error(where + ": argument '" + arg.name() + "' is given more than once");
    }
    const std::string arg_where = std::string(source) + ": argument '" + arg.name() + "' of op " +
                                  std::to_string(index) + " (" + describe(def) + ")";
    def.args.push_back(Argument{arg.name(), arg_value_from_proto(arg, arg_where)});
  }
  // Caffe2 semantics: an op without a device option runs on the net's.
  if (proto.has_device_option()) {
    def.device = device_option_from_proto(proto.device_option(), where + ": device_option");
  } else if (net_device != nullptr) {
    def.device = *net_device;
  }
  def.engine = proto.engine();
  def.is_gradient_op = proto.is_gradient_op();
  return def;
}

NetDef net_from_proto(const pb::NetDef& proto, std::string_view source) {
  NetDef net;
  net.name = proto.name();
  std::optional<DeviceOption> net_device;
  if (proto.has_device_option()) {
    net_device = device_option_from_proto(proto.device_option(),
                                          std::string(source) + ": net device_option");
  }
  for (int i = 0; i < proto.op_size(); ++i) {
    net.ops.push_back(op_from_proto(proto.op(i), i, net_device ? &*net_device : nullptr, source));
  }
  net.external_inputs.assign(proto.external_input().begin(), proto.external_input().end());
  net.external_outputs.assign(proto.external_output().begin(), proto.external_output().end());
  // Net-level args (num_workers and the like) steer Caffe2's executors, which
  // this library does not have; they are ignored.
  return net;
}

// ---- struct -> proto -------------------------------------------------------

void arg_to_proto(const Argument& arg, pb::Argument& proto) {
  proto.set_name(arg.name);
  std::visit(
      [&](const auto& value) {
        using T = std::decay_t<decltype(value)>;
        if constexpr (std::is_same_v<T, float>) {
          proto.set_f(value);
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          proto.set_i(value);
        } else if constexpr (std::is_same_v<T, std::string>) {
          proto.set_s(value);
        } else if constexpr (std::is_same_v<T, std::vector<float>>) {
          proto.mutable_floats()->Add(value.begin(), value.end());
        } else if constexpr (std::is_same_v<T, std::vector<std::int64_t>>) {
          proto.mutable_ints()->Add(value.begin(), value.end());
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          for (const std::string& s : value) proto.add_strings(s);
        }
      },
      arg.value);
}

void op_to_proto(const OperatorDef& def, pb::OperatorDef& proto) {
  for (const std::string& input : def.inputs) proto.add_input(input);
  for (const std::string& output : def.outputs) proto.add_output(output);
  // Unset rather than empty optional fields keep the text and JSON forms as
  // short as a hand-written net.
  if (!def.name.empty()) proto.set_name(def.name);
  proto.set_type(def.type);
  for (const Argument& arg : def.args) arg_to_proto(arg, *proto.add_arg());
  if (def.device != DeviceOption{}) {
    pb::DeviceOption& option = *proto.mutable_device_option();
    option.set_device_type(static_cast<std::int32_t>(def.device.device));
    if (def.device.device_id != 0) option.set_device_id(def.device.device_id);
  }
  if (!def.engine.empty()) proto.set_engine(def.engine);
  if (def.is_gradient_op) proto.set_is_gradient_op(true);
}

pb::NetDef net_to_proto(const NetDef& net) {
  pb::NetDef proto;
  if (!net.name.empty()) proto.set_name(net.name);
  for (const OperatorDef& def : net.ops) op_to_proto(def, *proto.add_op());
  for (const std::string& input : net.external_inputs) proto.add_external_input(input);
  for (const std::string& output : net.external_outputs) proto.add_external_output(output);
  return proto;
}

// ---- bytes ----------------------------------------------------------------

// Keeps the first error only: later ones are usually consequences of it.
class FirstTextError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!error_.empty()) return;
    // Protobuf counts from 0; editors count from 1. A negative line means
    // the error concerns the whole message.
    if (line >= 0) {
      error_ = "line " + std::to_string(line + 1) + ", column " + std::to_string(column + 1) + ": ";
    }
    error_ += message;
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

pb::NetDef parse_proto(std::string_view bytes, NetFormat format, std::string_view source) {
  if (bytes.size() > kMaxNetBytes) {
    throw Error(std::string(source) + ": " + std::to_string(bytes.size()) +
                " bytes, expected at most " + std::to_string(kMaxNetBytes));
  }
  const int size = static_cast<int>(bytes.size());
  pb::NetDef proto;
  switch (format) {
    case NetFormat::kBinary: {
      google::protobuf::io::CodedInputStream input(
          reinterpret_cast<const std::uint8_t*>(bytes.data()), size);
      input.SetRecursionLimit(kMaxNetNesting);
      if (!proto.ParseFromCodedStream(&input) || !input.ConsumedEntireMessage()) {
        throw Error(std::string(source) + ": not a NetDef in protobuf binary form (" +
                    std::to_string(bytes.size()) + " bytes), or nested deeper than " +
                    std::to_string(kMaxNetNesting) + " messages");
      }
      break;
    }
    case NetFormat::kText: {
      FirstTextError errors;
      google::protobuf::TextFormat::Parser parser;
      parser.RecordErrorsTo(&errors);
      parser.SetRecursionLimit(kMaxNetNesting);
      google::protobuf::io::ArrayInputStream input(bytes.data(), size);
      if (!parser.Parse(&input, &proto)) {
        throw Error(
            std::string(source) + ": " +
            (errors.error().empty() ? "not a NetDef in protobuf text format" : errors.error()));
      }
      break;
    }
    case NetFormat::kJson: {
      // Protobuf's JSON parser has a nesting limit of its own (100 levels).
      const auto status = google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(bytes.data(), bytes.size()), &proto);
      if (!status.ok()) {
        // The message's later lines only hold a caret under nothing.
        const std::string message(status.message());
        throw Error(std::string(source) + ": not a NetDef in protobuf JSON form: " +
                    message.substr(0, message.find('\n')));
      }
      break;
    }
  }
  return proto;
}

// True if `text` is valid UTF-8: shortest forms, no surrogates, at most
// U+10FFFF.
bool is_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const std::size_t length = lead < 0x80           ? 1
                               : (lead >> 5) == 0x6  ? 2
                               : (lead >> 4) == 0xE  ? 3
                               : (lead >> 3) == 0x1E ? 4
                                                     : 0;
    if (length == 0 || i + length > text.size()) return false;
    std::uint32_t code = length == 1 ? lead : lead & (0x7Fu >> length);
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next >> 6) != 0x2) return false;
      code = code << 6 | (next & 0x3Fu);
    }
    constexpr std::uint32_t kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kLeast[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
      return false;
    i += length;
  }
  return true;
}

// The first of the net's text fields (`string` in caffe2.proto; Argument.s
// and .strings are `bytes`) that is not valid UTF-8, as "operator 2 output
// 0", or "" if there is none. The binary and text forms hold any bytes
// there, as Caffe2's proto2 did; JSON holds text only, and protobuf's JSON
// printer would drop the invalid bytes, writing a different net.
std::string first_non_utf8_field(const NetDef& net) {
  const auto first_of = [](const std::vector<std::string>& list, const std::string& what) {
    for (std::size_t k = 0; k < list.size(); ++k) {
      if (!is_utf8(list[k])) return what + " " + std::to_string(k);
    }
    return std::string();
  };
  if (!is_utf8(net.name)) return "the net's name";
  for (std::string found : {first_of(net.external_inputs, "external_input"),
                            first_of(net.external_outputs, "external_output")}) {
    if (!found.empty()) return found;
  }
  for (std::size_t i = 0; i < net.ops.size(); ++i) {
    const OperatorDef& def = net.ops[i];
    const std::string op = "operator " + std::to_string(i) + " ";
    if (!is_utf8(def.type)) return op + "type";
    if (!is_utf8(def.name)) return op + "name";
    if (!is_utf8(def.engine)) return op + "engine";
    for (std::string found :
         {first_of(def.inputs, op + "input"), first_of(def.outputs, op + "output")}) {
      if (!found.empty()) return found;
    }
    for (std::size_t k = 0; k < def.args.size(); ++k) {
      if (!is_utf8(def.args[k].name)) return op + "argument " + std::to_string(k) + " name";
    }
  }
  return "";
}

std::string path_string(const std::filesystem::path& path) { return path.string(); }

}  // namespace

NetFormat net_format_of(const std::filesystem::path& path) {
  const std::filesystem::path ext = path.extension();
  if (ext == ".pb") return NetFormat::kBinary;
  if (ext == ".pbtxt" || ext == ".prototxt") return NetFormat::kText;
  if (ext == ".json") return NetFormat::kJson;
  throw Error("net file " + path_string(path) + ": extension '" + ext.string() +
              "' is not one of .pb, .pbtxt, .prototxt, .json");
}

NetDef parse_net(std::string_view bytes, NetFormat format, std::string_view source) {
  return net_from_proto(parse_proto(bytes, format, source), source);
}

std::string serialize_net(const NetDef& net, NetFormat format) {
  const pb::NetDef proto = net_to_proto(net);
  std::string out;
  switch (format) {
    case NetFormat::kBinary:
      if (!proto.SerializeToString(&out)) {
        throw Error("serialize_net: net '" + net.name + "' (" +
                    std::to_string(proto.ByteSizeLong()) +
                    " bytes) exceeds protobuf's 2 GiB message limit");
      }
      break;
    case NetFormat::kText:
      google::protobuf::TextFormat::PrintToString(proto, &out);
      break;
    case NetFormat::kJson: {
      if (const std::string field = first_non_utf8_field(net); !field.empty()) {
        throw Error(
            "serialize_net: net '" + net.name + "' has no JSON form: " + field +
            " is not valid UTF-8 (JSON holds text; the .pb and .pbtxt forms hold any bytes)");
      }
      google::protobuf::util::JsonPrintOptions options;
      options.add_whitespace = true;
      options.preserve_proto_field_names = true;  // Caffe2's names, as in the .proto.
      const auto status = google::protobuf::util::MessageToJsonString(proto, &out, options);
      if (!status.ok()) {
        throw Error("serialize_net: net '" + net.name +
                    "' has no JSON form: " + std::string(status.message()));
      }
      break;
    }
  }
  return out;
}

NetDef read_net(const std::filesystem::path& path) {
  const NetFormat format = net_format_of(path);
  // An ifstream opens a directory and then reads it as empty, which would
  // parse as an empty binary NetDef.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw Error("cannot read " + path_string(path) + ": is a directory");
  }
  // Refused before it is read, not after.
  if (const std::uintmax_t size = std::filesystem::file_size(path, ec);
      !ec && size > kMaxNetBytes) {
    throw Error(path_string(path) + ": " + std::to_string(size) + " bytes, expected at most " +
                std::to_string(kMaxNetBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path_string(path) + ": " + std::strerror(errno));
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw Error("cannot read " + path_string(path) + ": " + std::strerror(errno));
  return parse_net(bytes, format, path_string(path));
}

void write_net(const std::filesystem::path& path, const NetDef& net) {
  const std::string bytes = serialize_net(net, net_format_of(path));
  io::StagedFile file(path);
  file.write(bytes);
  file.commit();
}

}  // namespace spatialsoftmax::op
