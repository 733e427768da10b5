// What the parts of `spatialsoftmax bench` share (bench.cc: the CPU run and
// the table; bench_peers.cc: the peers and the GPU runner, subprocesses
// that print JSON rows): the cases, the row helpers and the peer runs.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::cli::bench {

using json = nlohmann::ordered_json;  // keys in the schema's order
using Log = std::function<void(const std::string&)>;

inline constexpr const char* kOnednnPeer = "spatialsoftmax_onednn_peer";

struct Case {
  Shape shape;                    // logical (N, C, d...)
  std::string layout;             // "NCHW" or "NHWC"; a 2-D (rows, classes) case is "NHWC"
  DType dtype = DType::kFloat32;  // of X and dX
};

// Bytes a fused kernel must move: forward = bytes(X) + bytes(int64 labels),
// forward_backward adds bytes(dX).
double bytes_moved(const Shape& shape, const std::string& op, DType dtype);
// A row's "dtype" (rows without one, from the float32-only peers, are float32).
std::string row_dtype(const json& r);

// The parts of `text` between `sep`, trimmed, empty ones dropped.
std::vector<std::string> split(const std::string& text, char sep);
// "2x19x512x1024".
std::string shape_text(const Shape& shape);
double round_to(double value, double scale);
std::string fixed(double value, int digits);
// Rows of one op, shape, layout and thread count compare with each other.
std::string row_key(const json& r);

// The peers `o.peers` names, run on the cases (rows appended); a peer that is
// missing or fails is a note.
void run_peers(const BenchOptions& o, const std::vector<Case>& cases,
               const std::vector<int>& threads, const std::vector<std::string>& ops,
               std::vector<json>& rows, const Log& progress, const Log& note);
// `spatialsoftmax bench --device cuda`: bench/peers/cuda_bench.py times the
// copy bandwidth, our kernels and the GPU peers in one process; its rows are
// appended. False (with a note) if it could not run.
bool run_cuda_runner(const BenchOptions& o, const std::vector<Case>& cases,
                     const std::vector<std::string>& ops, std::vector<json>& rows,
                     const Log& progress, const Log& note);

// The table of a CPU or GPU run: bandwidth, then our rows each followed by
// the peers' rows of the same key, then the notes.
void print_table(const std::vector<json>& memory, const std::vector<json>& ours,
                 const std::vector<json>& peers, const std::vector<std::string>& notes);

// `--plot FILE.svg`: our rows and the peers' as % of memcpy, a panel per
// op; the file is written complete or not at all.
void write_plot(const std::string& path, const std::vector<json>& ours,
                const std::vector<json>& peers, const std::string& title);

}  // namespace spatialsoftmax::cli::bench
