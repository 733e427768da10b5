// The bench's table and its byte counts (bench_common.h).
#include <iomanip>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cli/bench_common.h"

namespace spatialsoftmax::cli::bench {

double bytes_moved(const Shape& shape, const std::string& op, DType dtype) {
  double numel = 1;
  for (auto d : shape) numel *= static_cast<double>(d);
  const double x = static_cast<double>(dtype_size(dtype)) * numel;
  const double labels = 8 * numel / static_cast<double>(shape[1]);
  return x + labels + (op == "forward_backward" ? x : 0);
}

std::string row_dtype(const json& r) { return r.value("dtype", std::string("float32")); }

void print_table(const std::vector<json>& memory, const std::vector<json>& ours,
                 const std::vector<json>& peers, const std::vector<std::string>& notes) {
  std::cout << "memory bandwidth (" << memory.front()["shape"][0].get<std::int64_t>() / (1 << 20)
            << " MiB buffer; copy counts read + written bytes"
            << (memory.front().contains("device")
                    ? "; device to device on " + memory.front()["device"].get<std::string>() +
                          ", thr 0 = the GPU"
                    : std::string())
            << "):\n";
  std::cout << "  threads   copy GB/s   read GB/s\n";
  for (const json& copy : memory) {
    if (copy["op"] != "copy") continue;
    std::string read = "-";
    for (const json& r : memory)
      if (r["op"] == "read" && r["threads"] == copy["threads"])
        read = fixed(r["gbps"].get<double>(), 2);
    std::cout << "  " << std::left << std::setw(9) << copy["threads"].get<int>() << " "
              << std::right << std::setw(9) << fixed(copy["gbps"].get<double>(), 2) << "   "
              << std::setw(9) << read << "\n";
  }
  std::cout
      << "\nGB/s: forward = bytes(X) + bytes(int64 labels), forward_backward adds bytes(dX) (X, dX "
         "of the row's dtype); "
         "from the best run.\n%copy, %read: of the same-run bandwidth at the same thread count "
         "(%read for forward only).\nspeed-up: peer time / our time, best runs (> 1: we are "
         "faster). "
         "onnxruntime and onednn: forward only;\nonednn is softmax only (writes P, no loss); "
         "onnxruntime "
         "NHWC includes a Transpose to class-first;\n(...) after a peer: the implementation it "
         "picked.\n\n";
  std::map<std::string, std::vector<const json*>> by_key;
  for (const json& p : peers) by_key[row_key(p)].push_back(&p);
  const std::vector<std::string> peer_names = {"pytorch",  "onnxruntime", "onednn",
                                               "jax",      "ss.torch",    "ss.torch-unfused",
                                               "ss._core", "liger",       "quack"};
  std::cout << std::left << std::setw(18) << "shape" << std::setw(7) << "layout" << std::setw(9)
            << "dtype" << std::setw(17) << "op" << std::setw(4) << "thr" << std::setw(15) << "impl"
            << std::right << std::setw(11) << "ms min" << std::setw(11) << "ms median"
            << std::setw(8) << "GB/s" << std::setw(7) << "%copy" << std::setw(7) << "%read"
            << "  speed-up\n";
  for (const json& r : ours) {
    auto line = [&](const json& row, const std::string& speedups) {
      std::cout << std::left << std::setw(18) << shape_text(row["shape"].get<Shape>())
                << std::setw(7) << row["layout"].get<std::string>() << std::setw(9)
                << row_dtype(row) << std::setw(17) << row["op"].get<std::string>() << std::setw(4)
                << row["threads"].get<int>() << std::setw(15) << row["impl"].get<std::string>()
                << std::right << std::setw(11) << fixed(row["ms_min"].get<double>(), 3)
                << std::setw(11) << fixed(row["ms_median"].get<double>(), 3) << std::setw(8)
                << fixed(row["gbps"].get<double>(), 2) << std::setw(7)
                << (row.contains("pct_memcpy") ? fixed(row["pct_memcpy"].get<double>(), 1) : "")
                << std::setw(7)
                << (row.contains("pct_read") ? fixed(row["pct_read"].get<double>(), 1) : "") << "  "
                << speedups << "\n";
    };
    std::string speedups;
    for (const std::string& peer : peer_names)
      if (r.contains("speedup_vs_" + peer))
        speedups += (speedups.empty() ? "" : "  ") + peer + " " +
                    fixed(r["speedup_vs_" + peer].get<double>(), 2) + "x";
    line(r, speedups);
    for (const json* p : by_key[row_key(r)])
      line(*p, p->contains("impl_info") ? "(" + (*p)["impl_info"].get<std::string>() + ")" : "");
  }
  if (!notes.empty()) {
    std::cout << "\nnotes:\n";
    for (const std::string& n : notes) std::cout << "  " << n << "\n";
  }
}

}  // namespace spatialsoftmax::cli::bench
