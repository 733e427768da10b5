// libFuzzer harness: the .npy reader on arbitrary bytes.
//
// A spatialsoftmax::Error is the reader rejecting the input, which is right;
// anything else escaping, a crash, a sanitizer report, a timeout or running
// out of memory is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    const spatialsoftmax::Tensor t = spatialsoftmax::read_npy(in, "fuzz.npy");
    // Every byte the tensor claims must be readable (AddressSanitizer checks
    // this loop), and the payload cannot be larger than the input.
    const auto* bytes = static_cast<const unsigned char*>(t.data());
    unsigned sum = 0;
    for (std::size_t i = 0; i < t.nbytes(); ++i) sum += bytes[i];
    if (t.nbytes() > size) std::abort();
    asm volatile("" : : "r"(sum));  // keeps the loop's reads
  } catch (const spatialsoftmax::Error&) {
  }
  return 0;
}
