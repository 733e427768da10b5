// spatialsoftmax_onednn_peer: times oneDNN's softmax forward (algorithm
// softmax_accurate, forward_inference, float32, out of place) on the cases the
// `spatialsoftmax bench` subcommand and the Python peers use, with the same
// arguments and the same JSON-lines output (see bench/peers/common.py):
//
//   spatialsoftmax_onednn_peer --case 8x2x512x512:NCHW --case 8192x32000
//       --threads 1,2 --repeats 5 --min-time 0.5
//
// oneDNN has no fused cross-entropy: "op" is "forward" and means softmax only
// (it writes P and computes no loss); forward_backward is skipped with a note on
// stderr. "gbps" counts the bytes of a fused cross-entropy forward, bytes(X) +
// bytes(int64 labels), like every forward row, so that GB/s ratios are time
// ratios on the same problem; "gbps_io" counts what this primitive really moves,
// read X + write P.
//
// Layouts: NCHW is dims (N, C, d...) dense, softmax axis 1; NHWC is dims
// (N, d..., C) dense, axis rank-1 (the class-last memory described as a plain
// tensor); a 2-D case (rows, classes) is axis 1.
//
// Builds: Debian's libdnnl 2.6 (OpenMP runtime, GNU libgomp: the thread
// count is set with omp_set_num_threads(n) before each primitive is created)
// or PyPI's onednn 3.x (a SYCL build threaded by TBB, whose pool is sized by
// the CPUs the process may run on: each thread count runs in a child pinned
// to that many CPUs, and its CPU engine needs the wheel's OpenCL CPU runtime,
// which OCL_ICD_FILENAMES names: set here unless the caller set it).
#include <oneapi/dnnl/dnnl_config.h>
#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP
#include <omp.h>
#else
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Case {
  std::vector<std::int64_t> shape;  // logical (N, C, d...)
  std::string layout;               // "NCHW" or "NHWC"
};

struct Args {
  std::vector<Case> cases;
  std::vector<int> threads = {1};
  std::vector<std::string> ops = {"forward", "forward_backward"};
  int repeats = 5;
  double min_time = 0.5;
  int warmup = 1;
  int max_runs = 10000;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "spatialsoftmax_onednn_peer: " << message
            << "\nusage: spatialsoftmax_onednn_peer --case NxCxHxW[:NCHW|:NHWC] ... [--threads 1,2]"
               " [--ops forward,forward_backward] [--repeats 5] [--min-time 0.5] [--warmup 1]"
               " [--max-runs 10000]\n";
  std::exit(2);
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, sep);)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

long parse_positive(const std::string& text, const std::string& what) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < 1)
    usage_error(what + ": expected a positive integer, got '" + text + "'");
  return value;
}

Case parse_case(const std::string& text) {
  Case c;
  const auto colon = text.find(':');
  c.layout = colon == std::string::npos ? "NCHW" : text.substr(colon + 1);
  for (char& ch : c.layout) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (c.layout != "NCHW" && c.layout != "NHWC")
    usage_error("case " + text + ": layout must be NCHW or NHWC");
  for (const std::string& d : split(text.substr(0, colon), 'x'))
    c.shape.push_back(parse_positive(d, "case " + text));
  if (c.shape.size() < 2) usage_error("case " + text + ": need N x C [x d...]");
  if (c.shape.size() == 2) c.layout = "NHWC";  // rows x classes: one memory layout
  return c;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage_error("times oneDNN softmax_accurate forward");
    if (i + 1 >= argc) usage_error(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--case") {
      a.cases.push_back(parse_case(value));
    } else if (flag == "--threads") {
      a.threads.clear();
      for (const std::string& t : split(value, ','))
        a.threads.push_back(static_cast<int>(parse_positive(t, flag)));
    } else if (flag == "--ops") {
      a.ops = split(value, ',');
      for (const std::string& op : a.ops)
        if (op != "forward" && op != "forward_backward") usage_error("unknown op " + op);
    } else if (flag == "--repeats") {
      a.repeats = static_cast<int>(parse_positive(value, flag));
    } else if (flag == "--min-time") {
      a.min_time = std::atof(value.c_str());
    } else if (flag == "--warmup") {
      a.warmup = std::atoi(value.c_str());
    } else if (flag == "--max-runs") {
      a.max_runs = static_cast<int>(parse_positive(value, flag));
    } else {
      usage_error("unknown argument " + flag);
    }
  }
  if (a.cases.empty()) usage_error("at least one --case is required");
  return a;
}

std::string json_shape(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out;
}

}  // namespace

// The softmax primitive of this oneDNN version's API.
#if DNNL_VERSION_MAJOR >= 3
using Softmax = dnnl::softmax_forward;
Softmax::primitive_desc softmax_pd(const dnnl::engine& engine, const dnnl::memory::desc& md,
                                   int axis) {
  return Softmax::primitive_desc(engine, dnnl::prop_kind::forward_inference,
                                 dnnl::algorithm::softmax_accurate, md, md, axis);
}
#else
using Softmax = dnnl::softmax_v2_forward;
Softmax::primitive_desc softmax_pd(const dnnl::engine& engine, const dnnl::memory::desc& md,
                                   int axis) {
  const Softmax::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::softmax_accurate,
                           md, md, axis);
  return Softmax::primitive_desc(desc, engine);
}
#endif

#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP
int max_threads() { return omp_get_max_threads(); }
#else
int max_threads() {
  cpu_set_t mine;
  sched_getaffinity(0, sizeof(mine), &mine);
  return CPU_COUNT(&mine);
}
#endif

void run_cases(const Args& args, const std::vector<int>& thread_counts);

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  if (std::find(args.ops.begin(), args.ops.end(), "forward_backward") != args.ops.end())
    std::cerr
        << "onednn: forward_backward skipped (no fused cross-entropy; softmax forward only)\n";
  if (std::find(args.ops.begin(), args.ops.end(), "forward") == args.ops.end()) return 0;
#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP
  run_cases(args, args.threads);
#else
#ifdef SPATIALSOFTMAX_ONEDNN_OPENCL_RUNTIME
  setenv("OCL_ICD_FILENAMES", SPATIALSOFTMAX_ONEDNN_OPENCL_RUNTIME, 0);
#endif
  cpu_set_t all;
  sched_getaffinity(0, sizeof(all), &all);
  for (int threads : args.threads) {
    if (threads > CPU_COUNT(&all)) {
      std::cerr << "onednn: " << threads << " threads asked for, " << CPU_COUNT(&all)
                << " CPUs available: skipped\n";
      continue;
    }
    std::fflush(stdout);
    const pid_t child = fork();
    if (child == 0) {
      cpu_set_t some;
      CPU_ZERO(&some);
      for (int cpu = 0, taken = 0; cpu < CPU_SETSIZE && taken < threads; ++cpu) {
        if (CPU_ISSET(cpu, &all)) {
          CPU_SET(cpu, &some);
          ++taken;
        }
      }
      sched_setaffinity(0, sizeof(some), &some);
      run_cases(args, {threads});
      std::fflush(stdout);
      _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  }
#endif
  return 0;
} catch (const std::exception& e) {
  std::cerr << "spatialsoftmax_onednn_peer: " << e.what() << "\n";
  return 1;
}

void run_cases(const Args& args, const std::vector<int>& thread_counts) {
  const dnnl_version_t* v = dnnl_version();
  const std::string version =
      std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  for (const Case& c : args.cases) {
    const int rank = static_cast<int>(c.shape.size());
    dnnl::memory::dims dims(c.shape.begin(), c.shape.end());
    int axis = 1;
    if (c.layout == "NHWC" && rank > 2) {
      dims.erase(dims.begin() + 1);
      dims.push_back(c.shape[1]);
      axis = rank - 1;
    }
    std::int64_t numel = 1;
    for (auto d : c.shape) numel *= d;
    const std::int64_t label_count = numel / c.shape[1];
    dnnl::memory::dims strides(dims.size());
    for (int i = rank - 1; i >= 0; --i) {
      const auto k = static_cast<std::size_t>(i);
      strides[k] = k + 1 < dims.size() ? strides[k + 1] * dims[k + 1] : 1;
    }
    const dnnl::memory::desc md(dims, dnnl::memory::data_type::f32, strides);
    dnnl::memory src(md, engine), dst(md, engine);
    auto* x = static_cast<float*>(src.get_data_handle());
    std::uint64_t state = 0x9e3779b97f4a7c15ull;
    for (std::int64_t i = 0; i < numel; ++i) {  // uniform in [-2, 2)
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      x[i] = static_cast<float>(static_cast<double>(state >> 40) * 0x1.0p-24 * 4.0 - 2.0);
    }
    std::fill_n(static_cast<float*>(dst.get_data_handle()), numel, 0.0f);

    for (int threads : thread_counts) {
#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP
      omp_set_num_threads(threads);
#endif
      const Softmax::primitive_desc pd = softmax_pd(engine, md, axis);
      Softmax softmax(pd);
      auto run = [&] {
        softmax.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
        stream.wait();
      };
      for (int i = 0; i < args.warmup; ++i) run();
      std::vector<double> times;
      const auto start = std::chrono::steady_clock::now();
      while (static_cast<int>(times.size()) < args.max_runs) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        const auto t1 = std::chrono::steady_clock::now();
        times.push_back(std::chrono::duration<double>(t1 - t0).count());
        if (static_cast<int>(times.size()) >= args.repeats &&
            std::chrono::duration<double>(t1 - start).count() >= args.min_time)
          break;
      }
      std::sort(times.begin(), times.end());
      const std::size_t n = times.size();
      const double t_min = times.front();
      const double t_median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
      const double fused_bytes =
          4.0 * static_cast<double>(numel) + 8.0 * static_cast<double>(label_count);
      const double io_bytes = 8.0 * static_cast<double>(numel);
      std::printf(
          "{\"impl\": \"onednn\", \"op\": \"forward\", \"shape\": %s, \"layout\": \"%s\", "
          "\"threads\": %d, \"ms_min\": %.6f, \"ms_median\": %.6f, \"gbps\": %.4f, \"runs\": %zu, "
          "\"gbps_io\": %.4f, \"version\": \"%s\", \"impl_info\": \"%s\", \"max_threads\": %d, "
          "\"note\": \"softmax only (softmax_accurate, writes P, no loss)\"}\n",
          json_shape(c.shape).c_str(), c.layout.c_str(), threads, t_min * 1e3, t_median * 1e3,
          fused_bytes / t_min / 1e9, n, io_bytes / t_min / 1e9, version.c_str(),
          escape(pd.impl_info_str()).c_str(), max_threads());
      std::fflush(stdout);
    }
  }
}
