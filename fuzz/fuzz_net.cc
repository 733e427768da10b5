// libFuzzer harness: parse_net on arbitrary bytes in one NetDef form,
// chosen at compile time (FUZZ_NET_FORMAT = kBinary, kText or kJson; one
// binary per form so that each form gets its own fuzzing time and corpus).
//
// A spatialsoftmax::Error is the parser rejecting the input, which is right.
// Beyond not crashing, a net that parses must survive a round trip: whatever
// serialize_net writes for it in any form, parse_net must read back as the
// same net. Anything else escaping, a crash, a sanitizer report, a timeout
// or running out of memory is a finding.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/op/net_io.h"

namespace {

namespace op = spatialsoftmax::op;

// NaN != NaN, and the text and JSON forms keep neither a NaN's sign nor its
// payload, so NaNs are made one value before nets are compared.
void canonical_nans(op::NetDef& net) {
  constexpr float kNaN = 1234.5f;
  for (op::OperatorDef& def : net.ops) {
    for (op::Argument& arg : def.args) {
      if (auto* f = std::get_if<float>(&arg.value); f && std::isnan(*f)) *f = kNaN;
      if (auto* fs = std::get_if<std::vector<float>>(&arg.value)) {
        for (float& f : *fs) {
          if (std::isnan(f)) f = kNaN;
        }
      }
    }
  }
}

void check_round_trip(const op::NetDef& net, op::NetFormat format, const char* name) {
  std::string bytes;
  try {
    bytes = op::serialize_net(net, format);
  } catch (const spatialsoftmax::Error&) {
    return;  // a documented refusal (a name that is not UTF-8 has no JSON form)
  }
  op::NetDef back;
  try {
    back = op::parse_net(bytes, format, "round trip");
  } catch (const spatialsoftmax::Error& e) {
    std::fprintf(stderr, "round trip through %s: parse_net rejects what serialize_net wrote: %s\n",
                 name, e.what());
    std::abort();
  }
  op::NetDef want = net;
  canonical_nans(want);
  canonical_nans(back);
  if (!(back == want)) {
    std::fprintf(stderr, "round trip through %s: the net read back differs\n", name);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  op::NetDef net;
  try {
    net = op::parse_net(bytes, op::NetFormat::FUZZ_NET_FORMAT, "fuzz");
  } catch (const spatialsoftmax::Error&) {
    return 0;
  }
  check_round_trip(net, op::NetFormat::kBinary, "binary");
  check_round_trip(net, op::NetFormat::kText, "text");
  check_round_trip(net, op::NetFormat::kJson, "JSON");
  return 0;
}
