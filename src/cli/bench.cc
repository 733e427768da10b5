// `spatialsoftmax bench`: in one run, this machine's memory bandwidth (copy
// and read-only), our cross-entropy forward and fused forward+backward through
// the public API, and the peers (PyTorch, ONNX Runtime, oneDNN) run as
// subprocesses on the same cases, as a table or as JSON lines.
//
// Row schema (JSON, one object per line): impl, op, shape (logical N, C, d...),
// layout ("NCHW" | "NHWC"), threads, ms_min, ms_median, gbps; plus runs,
// pct_memcpy, pct_read (forward rows), speedup_vs_<peer> (our rows), dtype
// (X's and dX's: float32, bfloat16 or float16) and the peers' own extra
// fields. GB/s is computed from ms_min and counts the bytes a fused kernel
// must move: forward = bytes(X) + bytes(labels), forward_backward = bytes(X)
// + bytes(labels) + bytes(dX) (X and dX of the row's dtype, int64 labels). Memory rows:
// impl "memcpy" op "copy" (GB/s = read + written bytes) and impl "memread" op
// "read", layout "flat", shape [bytes].
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cli/bench_common.h"
#include "cli/commands.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/functions.h"
#include "spatialsoftmax/options.h"
#include "spatialsoftmax/tensor.h"
#include "spatialsoftmax/threads.h"

namespace spatialsoftmax::cli {
namespace {

using bench::Case;
using bench::fixed;
using bench::json;
using bench::kOnednnPeer;
using bench::Log;
using bench::round_to;
using bench::row_key;
using bench::shape_text;
using bench::split;

// The shapes, by name; `--shapes` also takes NxCx... literally.
const std::vector<std::pair<std::string, Shape>>& named_shapes() {
  static const std::vector<std::pair<std::string, Shape>> shapes = {
      {"cityscapes", {2, 19, 512, 1024}},
      {"ade20k", {2, 150, 256, 256}},
      {"binary", {8, 2, 512, 512}},
      {"voc", {32, 21, 64, 64}},
      {"lm", {8192, 32000}},
  };
  return shapes;
}

std::int64_t parse_positive(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 1)
    throw Error(what + ": '" + text + "' is not a positive integer");
  return value;
}

Shape parse_shape(const std::string& text) {
  for (const auto& [name, shape] : named_shapes())
    if (text == name) return shape;
  Shape shape;
  for (const std::string& d : split(text, 'x'))
    shape.push_back(parse_positive(d, "--shapes " + text));
  if (shape.size() < 2) {
    std::string names;
    for (const auto& [name, s] : named_shapes()) names += (names.empty() ? "" : ", ") + name;
    throw Error("--shapes: '" + text +
                "' is neither N x C [x d...] (like 8x2x512x512) nor one of " + names);
  }
  checked_numel(shape, "--shapes " + text);
  return shape;
}

std::vector<Case> make_cases(const BenchOptions& o) {
  std::vector<Shape> shapes;
  if (o.shapes.empty()) {
    for (const auto& [name, shape] : named_shapes()) shapes.push_back(shape);
  } else {
    for (const std::string& s : split(o.shapes, ',')) shapes.push_back(parse_shape(s));
  }
  std::vector<std::string> layouts;
  for (std::string l : split(o.layouts, ',')) {
    for (char& ch : l) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    layouts.emplace_back(to_string(parse_layout(l, "--layouts")));
  }
  if (layouts.empty()) throw Error("--layouts is empty");
  std::vector<DType> dtypes;
  for (const std::string& d : split(o.dtypes, ',')) {
    const auto known = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
    const auto it =
        std::find_if(known.begin(), known.end(), [&](DType t) { return dtype_name(t) == d; });
    if (it == known.end()) {
      throw Error("--dtype: '" + d + "', expected float32, bfloat16 and/or float16");
    }
    dtypes.push_back(*it);
  }
  if (dtypes.empty()) throw Error("--dtype is empty");
  std::vector<Case> cases;
  for (const DType dtype : dtypes) {
    for (const Shape& shape : shapes) {
      if (shape.size() == 2) {
        // rows x classes: class-first and class-last coincide
        cases.push_back({shape, "NHWC", dtype});
      } else {
        for (const std::string& l : layouts) cases.push_back({shape, l, dtype});
      }
    }
  }
  return cases;
}

std::vector<int> parse_threads(const std::string& text) {
  std::vector<int> threads;
  if (text.empty()) {
    threads.push_back(1);
    const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (hw > 1) threads.push_back(hw);
    return threads;
  }
  for (const std::string& t : split(text, ','))
    threads.push_back(
        static_cast<int>(std::min<std::int64_t>(parse_positive(t, "--threads"), 4096)));
  return threads;
}

std::vector<std::string> parse_ops(const std::string& text) {
  std::vector<std::string> ops = split(text, ',');
  for (const std::string& op : ops)
    if (op != "forward" && op != "forward_backward")
      throw Error("--ops: '" + op + "', expected forward and/or forward_backward");
  if (ops.empty()) throw Error("--ops is empty");
  return ops;
}

// Warm up, then run until both `repeats` runs and `min_time` seconds are done.
struct Timing {
  double ms_min = 0;
  double ms_median = 0;
  int runs = 0;
};

Timing time_it(const BenchOptions& o, const std::function<void()>& fn) {
  for (int i = 0; i < o.warmup; ++i) fn();
  std::vector<double> ms;
  const auto start = std::chrono::steady_clock::now();
  while (ms.size() < 100000) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (static_cast<int>(ms.size()) >= o.repeats &&
        std::chrono::duration<double>(t1 - start).count() >= o.min_time)
      break;
  }
  std::sort(ms.begin(), ms.end());
  const std::size_t n = ms.size();
  return {ms.front(), n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]), static_cast<int>(n)};
}

json make_row(const std::string& impl, const std::string& op, const Shape& shape,
              const std::string& layout, int threads, const Timing& t, double bytes) {
  return json{{"impl", impl},
              {"op", op},
              {"shape", shape},
              {"layout", layout},
              {"threads", threads},
              {"ms_min", round_to(t.ms_min, 1e6)},
              {"ms_median", round_to(t.ms_median, 1e6)},
              {"gbps", round_to(bytes / (t.ms_min * 1e-3) / 1e9, 1e4)},
              {"runs", t.runs}};
}

// --- memory bandwidth ---------------------------------------------------------

// Splits [0, bytes) into `threads` parts (64-byte aligned) and runs fn on each
// part on its own thread (the calling thread takes the first).
void split_run(std::size_t bytes, int threads,
               const std::function<void(int, std::size_t, std::size_t)>& fn) {
  std::vector<std::thread> pool;
  const std::size_t part = (bytes / static_cast<std::size_t>(threads) + 63) / 64 * 64;
  for (int i = 1; i < threads; ++i) {
    const std::size_t begin = std::min(bytes, part * static_cast<std::size_t>(i));
    const std::size_t end = std::min(bytes, begin + part);
    pool.emplace_back(fn, i, begin, end);
  }
  fn(0, 0, std::min(bytes, part));
  for (std::thread& t : pool) t.join();
}

// A read-only pass the compiler can vectorize (integer adds are associative).
std::uint64_t sum_words(const std::uint64_t* p, std::size_t n) {
  std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
    a4 += p[i + 4];
    a5 += p[i + 5];
    a6 += p[i + 6];
    a7 += p[i + 7];
  }
  for (; i < n; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

struct Bandwidth {
  double copy_gbps = 0;
  double read_gbps = 0;
};

std::map<int, Bandwidth> measure_memory(const BenchOptions& o, const std::vector<int>& threads,
                                        const std::function<void(const json&)>& emit) {
  const std::size_t bytes = static_cast<std::size_t>(o.memcpy_mib) << 20;
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> src(std::aligned_alloc(64, bytes)),
      dst(std::aligned_alloc(64, bytes));
  if (!src || !dst)
    throw Error("cannot allocate the " + std::to_string(o.memcpy_mib) + " MiB memcpy buffers");
  std::memset(src.get(), 1, bytes);  // touch every page before timing
  std::memset(dst.get(), 0, bytes);
  auto* s = static_cast<char*>(src.get());
  auto* d = static_cast<char*>(dst.get());
  const Shape flat = {static_cast<std::int64_t>(bytes)};
  std::map<int, Bandwidth> result;
  for (int t : threads) {
    const Timing copy = time_it(o, [&] {
      split_run(bytes, t,
                [&](int, std::size_t b, std::size_t e) { std::memcpy(d + b, s + b, e - b); });
    });
    std::vector<std::uint64_t> sums(static_cast<std::size_t>(t) * 8);  // a cache line per thread
    const Timing read = time_it(o, [&] {
      split_run(bytes, t, [&](int i, std::size_t b, std::size_t e) {
        sums[static_cast<std::size_t>(i) * 8] =
            sum_words(reinterpret_cast<const std::uint64_t*>(s + b), (e - b) / 8);
      });
    });
    volatile std::uint64_t sink = sums[0];
    (void)sink;
    json copy_row =
        make_row("memcpy", "copy", flat, "flat", t, copy, 2.0 * static_cast<double>(bytes));
    json read_row = make_row("memread", "read", flat, "flat", t, read, static_cast<double>(bytes));
    result[t] = {copy_row["gbps"].get<double>(), read_row["gbps"].get<double>()};
    emit(copy_row);
    emit(read_row);
  }
  return result;
}

// --- ours ------------------------------------------------------------------------

// splitmix64 of the index: the same data on every machine, any thread count.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void run_ours(const BenchOptions& o, const std::vector<Case>& cases,
              const std::vector<int>& threads, const std::vector<std::string>& ops,
              const std::function<void(json)>& emit, const Log& progress) {
  const int saved_threads = num_threads();
  for (const Case& c : cases) {
    const bool last = parse_layout(c.layout, "layout") == ClassAxis::kLast;
    Shape stored = c.shape;
    if (last && c.shape.size() > 2) {
      stored.erase(stored.begin() + 1);
      stored.push_back(c.shape[1]);
    }
    Shape label_shape = c.shape;
    label_shape.erase(label_shape.begin() + 1);
    progress("spatialsoftmax: " + shape_text(c.shape) + " " + c.layout + " " +
             std::string(dtype_name(c.dtype)));
    Tensor x32(DType::kFloat32, stored);
    Tensor labels(DType::kInt64, label_shape);
    float* xp = x32.data_as<float>();
    for (std::int64_t i = 0; i < x32.numel(); ++i)  // uniform in [-2, 2)
      xp[i] = static_cast<float>(
          static_cast<double>(mix(static_cast<std::uint64_t>(i)) >> 40) * 0x1.0p-24 * 4.0 - 2.0);
    const Tensor x = c.dtype == DType::kFloat32 ? std::move(x32) : x32.to(c.dtype);
    auto* yp = labels.data_as<std::int64_t>();
    const auto classes = static_cast<std::uint64_t>(c.shape[1]);
    for (std::int64_t i = 0; i < labels.numel(); ++i)
      yp[i] = static_cast<std::int64_t>(mix(~static_cast<std::uint64_t>(i)) % classes);
    CrossEntropyOptions options = CrossEntropyOptions::pytorch();  // mean, ignore -100 (never hit)
    options.class_axis = last ? ClassAxis::kLast : ClassAxis::kFirst;
    const TensorView xv = x.view();
    const TensorView yv = labels.view();
    volatile double sink = 0;
    for (int t : threads) {
      set_num_threads(t);
      for (const std::string& op : ops) {
        const Timing timing =
            op == "forward" ? time_it(o, [&] { sink = cross_entropy(xv, yv, options).loss.at(0); })
                            : time_it(o, [&] {
                                sink = cross_entropy_forward_backward(xv, yv, options).loss.at(0);
                              });
        json row = make_row("spatialsoftmax", op, c.shape, c.layout, t, timing,
                            bench::bytes_moved(c.shape, op, c.dtype));
        row["dtype"] = dtype_name(c.dtype);
        row["version"] = SPATIALSOFTMAX_VERSION;
        emit(std::move(row));
      }
    }
    (void)sink;
  }
  set_num_threads(saved_threads);
}

// --- output ----------------------------------------------------------------------

// The 1-minute load average, or a negative value if unknown.
double load_average() {
  std::ifstream in("/proc/loadavg");
  double one = -1;
  in >> one;
  return in ? one : -1;
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Time our cross-entropy forward and fused forward+backward against memcpy bandwidth and the "
      "peers "
      "(PyTorch, ONNX Runtime, oneDNN; install them with scripts/install-peers.sh)");
  cmd->add_flag("--json", o.json, "One JSON object per line on stdout (notes go to stderr)");
  cmd->add_option(
      "--shapes", o.shapes,
      "Comma-separated logical shapes N x C [x d...] or names: cityscapes (2x19x512x1024), "
      "ade20k (2x150x256x256), binary (8x2x512x512), voc (32x21x64x64), lm (8192x32000, rows x "
      "classes, reported as NHWC); default: all five");
  cmd->add_option("--layouts", o.layouts, "NCHW and/or NHWC (class-last), for shapes of rank > 2")
      ->capture_default_str();
  cmd->add_option("--threads", o.threads,
                  "Comma-separated thread counts (default: 1 and the hardware threads)");
  cmd->add_option("--ops", o.ops, "forward and/or forward_backward")->capture_default_str();
  cmd->add_option("--dtype", o.dtypes,
                  "Comma-separated types of X and dX: float32, bfloat16, float16 (the 16-bit "
                  "cases run with PyTorch's 16-bit cross_entropy as their peer)")
      ->capture_default_str();
  cmd->add_option("--repeats", o.repeats, "At least this many timed runs per row")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--min-time", o.min_time, "And at least this many seconds of timed runs per row")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--warmup", o.warmup, "Untimed runs before timing")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--memcpy-mib", o.memcpy_mib, "Size of the bandwidth buffers in MiB")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--device", o.device,
                  "cpu, or cuda: time on the GPU instead (bench/peers/cuda_bench.py with --python: "
                  "the device-to-device copy, our CUDA kernels, PyTorch's F.cross_entropy and, on "
                  "rows x classes shapes, Liger-Kernel and QuACK where installed)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--plot", o.plot,
                  "Also draw the run as FILE.svg: % of memcpy per shape, layout and thread count, "
                  "ours beside the peers, a panel per op")
      ->type_name("FILE.svg");
  cmd->add_flag("--no-peers", o.no_peers, "Do not run the peers");
  cmd->add_option("--peers", o.peers,
                  "Which peers to run (default pytorch,onnxruntime,onednn,jax; with --device cuda "
                  "pytorch,liger,quack); 'python' adds our own Python front, spatialsoftmax.torch "
                  "(bench/peers/torch_front.py; --python must have the package installed)");
  cmd->add_option("--python", o.python,
                  "Python with torch/onnxruntime (default: <source>/.venv-peers/bin/python)");
  cmd->add_option("--jax-python", o.jax_python,
                  "Python with JAX and optax (default: <source>/.venv-jax/bin/python)");
  cmd->add_option("--peers-dir", o.peers_dir,
                  "Folder of torch_ce.py and ort_sce.py (default: <source>/bench/peers)");
  cmd->add_option(
      "--onednn-peer", o.onednn_peer,
      std::string("The oneDNN runner (default: ") + kOnednnPeer + " beside this program)");
  return cmd;
}

int run_bench(const BenchOptions& options) {
  BenchOptions o = options;
  if (o.peers.empty())
    o.peers = o.device == "cuda" ? "pytorch,liger,quack" : "pytorch,onnxruntime,onednn";
  std::vector<Case> cases;
  std::vector<int> threads;
  std::vector<std::string> ops;
  try {  // argument errors: exit status 2, like CLI11's
    cases = make_cases(o);
    if (o.device == "cuda") {
      for (const Case& c : cases) {
        if (c.dtype != DType::kFloat32) {
          throw Error("--dtype " + std::string(dtype_name(c.dtype)) +
                      " with --device cuda: no 16-bit CUDA kernels yet");
        }
      }
    }
    threads = parse_threads(o.threads);
    ops = parse_ops(o.ops);
    for (const std::string& peer : split(o.peers, ','))
      if (peer != "pytorch" && peer != "onnxruntime" && peer != "onednn" && peer != "python" &&
          peer != "jax" && peer != "liger" && peer != "quack")
        throw Error("--peers: '" + peer +
                    "', expected pytorch, onnxruntime, onednn, jax, python, liger or quack");
  } catch (const std::exception& e) {
    std::cerr << "spatialsoftmax bench: " << one_line(e.what())
              << " (see spatialsoftmax bench --help)\n";
    return 2;
  }
  try {
    std::vector<std::string> notes;
    // Progress goes to stderr; notes (what was skipped or failed) also end the table.
    const Log progress = [](const std::string& text) {
      std::cerr << "bench: " << text << std::endl;
    };
    const Log note = [&](const std::string& text) {
      std::cerr << "bench: " << text << std::endl;
      notes.push_back(text);
    };
    auto print = [&](const json& row) {
      if (o.json) std::cout << row.dump() << std::endl;
    };

    const double load = load_average();
    if (load > 0.5)
      note("load average " + fixed(load, 2) +
           " at the start: other processes are running, so timings "
           "(multi-threaded ones above all) will be noisy");
    if (!o.json) {
      std::string names;
      for (const std::string& name : backend_names()) names += (names.empty() ? "" : ", ") + name;
      const char* forced = std::getenv("SPATIALSOFTMAX_BACKEND");
      std::cout << "spatialsoftmax " SPATIALSOFTMAX_VERSION " bench: "
                << std::thread::hardware_concurrency() << " hardware threads, load average "
                << (load < 0 ? std::string("?") : fixed(load, 2))
                << "; backends (best first): " << names
                << (forced ? std::string("; SPATIALSOFTMAX_BACKEND=") + forced : std::string())
                << "\n\n";
    }

    std::vector<json> memory, peers, gpu_ours;
    std::map<int, Bandwidth> bandwidth;
    if (o.device == "cuda") {
      // One process on the GPU times everything: the copy (thread count 0),
      // our kernels and the peers.
      std::vector<json> rows;
      if (!bench::run_cuda_runner(o, cases, ops, rows, progress, note) && rows.empty()) return 1;
      for (json& r : rows) {
        const std::string impl = r["impl"].get<std::string>();
        if (impl == "memcpy") {
          bandwidth[r["threads"].get<int>()].copy_gbps = r["gbps"].get<double>();
          print(r);
          memory.push_back(std::move(r));
        } else if (impl == "spatialsoftmax") {
          gpu_ours.push_back(std::move(r));
        } else if (!o.no_peers) {
          peers.push_back(std::move(r));
        }
      }
      if (memory.empty()) throw Error("--device cuda: the GPU runner printed no copy bandwidth");
    } else {
      bandwidth = measure_memory(o, threads, [&](const json& r) {
        memory.push_back(r);
        print(r);
      });
      if (o.no_peers) {
        note("peers skipped (--no-peers)");
      } else {
        bench::run_peers(o, cases, threads, ops, peers, progress, note);
      }
    }
    auto add_percentages = [&](json& r) {
      const int t = r["threads"].get<int>();
      const auto bw = bandwidth.find(t);
      if (bw == bandwidth.end()) return;
      const double gbps = r["gbps"].get<double>();
      r["pct_memcpy"] = round_to(100 * gbps / bw->second.copy_gbps, 10);
      if (r["op"] == "forward" && bw->second.read_gbps > 0)
        r["pct_read"] = round_to(100 * gbps / bw->second.read_gbps, 10);
    };
    for (json& p : peers) {
      add_percentages(p);
      print(p);
    }

    std::map<std::string, std::map<std::string, double>> peer_ms;  // key -> impl -> ms_min
    for (const json& p : peers)
      peer_ms[row_key(p)][p["impl"].get<std::string>()] = p["ms_min"].get<double>();
    std::vector<json> ours;
    const auto take_ours = [&](json r) {
      add_percentages(r);
      for (const auto& [impl, ms] : peer_ms[row_key(r)])
        r["speedup_vs_" + impl] = round_to(ms / r["ms_min"].get<double>(), 1e3);
      print(r);
      ours.push_back(std::move(r));
    };
    if (o.device == "cuda") {
      for (json& r : gpu_ours) take_ours(std::move(r));
    } else {
      run_ours(o, cases, threads, ops, take_ours, progress);
    }

    if (!o.plot.empty()) {
      const json& copy = memory.front();
      bench::write_plot(
          o.plot, ours, peers,
          "spatialsoftmax bench: cross-entropy, % of the same run's memcpy (" +
              (copy.contains("device")
                   ? copy["device"].get<std::string>()
                   : std::to_string(std::thread::hardware_concurrency()) + " hardware threads") +
              ")");
    }
    if (!o.json) bench::print_table(memory, ours, peers, notes);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "spatialsoftmax bench: " << one_line(e.what()) << "\n";
    return 1;
  }
}

}  // namespace spatialsoftmax::cli
