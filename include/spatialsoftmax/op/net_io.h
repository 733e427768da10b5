// Reading and writing NetDefs in Caffe2's three forms: protobuf binary (.pb),
// protobuf text format (.pbtxt) and protobuf's standard JSON mapping (.json).
// The schema is our own proto/caffe2_net.proto, wire-compatible with
// caffe2.proto's NetDef, OperatorDef, Argument and DeviceOption.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "spatialsoftmax/op/operator_def.h"

namespace spatialsoftmax::op {

enum class NetFormat { kBinary, kText, kJson };

// Limits on what a net file may make the parsers do. Caffe2's own nets nest
// a few levels (a NetDef in an If operator's argument); this library runs no
// nested nets, and without a limit protobuf's text parser recurses once per
// '{' until the stack overflows.
inline constexpr int kMaxNetNesting = 32;               // messages inside messages
inline constexpr std::size_t kMaxNetBytes = 256 << 20;  // the file's size

// From the file name's extension: .pb, .pbtxt (or .prototxt), .json; throws
// Error naming the path otherwise.
NetFormat net_format_of(const std::filesystem::path& path);

// Throw spatialsoftmax::Error naming the source ("net.pbtxt: line 3: ...")
// on a malformed net, one nested deeper than kMaxNetNesting or larger than
// kMaxNetBytes. Fields of caffe2.proto this library does not use are
// accepted and ignored (Argument.n, tensors, NetDef.type, ...).
NetDef parse_net(std::string_view bytes, NetFormat format, std::string_view source = "net");
std::string serialize_net(const NetDef& net, NetFormat format);

NetDef read_net(const std::filesystem::path& path);
// Atomic: writes and syncs a hidden temporary file beside `path`, then
// renames it over `path`.
void write_net(const std::filesystem::path& path, const NetDef& net);

}  // namespace spatialsoftmax::op
