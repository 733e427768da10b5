// The peers of `spatialsoftmax bench` (PyTorch, ONNX Runtime, oneDNN, our
// Python front) and its GPU runner, run as subprocesses that print one JSON
// row per line (bench/peers/common.py's schema), and the helpers every part
// of the command shares.
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "cli/bench_common.h"

#ifndef SPATIALSOFTMAX_SOURCE_DIR
#define SPATIALSOFTMAX_SOURCE_DIR "."
#endif

namespace spatialsoftmax::cli::bench {
namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& arg) {
  std::string q = "'";
  for (char ch : arg) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

fs::path self_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

std::string peer_arguments(const BenchOptions& o, const std::vector<Case>& cases,
                           const std::vector<int>& threads, const std::vector<std::string>& ops) {
  std::string args;
  for (const Case& c : cases) args += " --case " + quote(shape_text(c.shape) + ":" + c.layout);
  std::string t, p;
  for (int n : threads) t += (t.empty() ? "" : ",") + std::to_string(n);
  for (const std::string& op : ops) p += (p.empty() ? "" : ",") + op;
  std::ostringstream min_time;
  min_time << o.min_time;
  args += " --threads " + t + " --ops " + p + " --repeats " + std::to_string(o.repeats) +
          " --min-time " + min_time.str() + " --warmup " + std::to_string(o.warmup);
  return args;
}

// Runs one peer command and collects its JSON rows; the peer's stderr passes
// through. Returns false (with a note) if it could not run or failed.
bool run_peer(const std::string& name, const std::string& command, std::vector<json>& rows,
              const Log& progress, const Log& note) {
  progress(name + ": " + command);
  std::fflush(stdout);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    note(name + ": could not start: " + std::strerror(errno));
    return false;
  }
  std::string line;
  std::array<char, 4096> buffer{};
  int count = 0;
  auto take = [&](const std::string& text) {
    if (text.empty()) return;
    json row = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!row.is_object() || !row.contains("impl")) {
      note(name + " printed: " + text);
      return;
    }
    rows.push_back(row);
    ++count;
  };
  while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe) != nullptr) {
    line += buffer.data();
    if (!line.empty() && line.back() == '\n') {
      line.pop_back();
      take(line);
      line.clear();
    }
  }
  take(line);
  const int status = ::pclose(pipe);
  if (status != 0) {
    note(name + ": failed (exit status " +
         std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : status) + ") after " +
         std::to_string(count) + " rows");
    return false;
  }
  return true;
}

// The Python of the peers: --python (a path, or a name looked up on PATH),
// else the source tree's .venv-peers.
fs::path peers_python(const BenchOptions& o) {
  if (o.python.empty()) return fs::path(SPATIALSOFTMAX_SOURCE_DIR) / ".venv-peers/bin/python";
  const fs::path given(o.python);
  if (given.has_parent_path() || fs::exists(given)) return given;
  const char* path = std::getenv("PATH");
  for (const std::string& dir : split(path ? path : "", ':')) {
    if (fs::exists(fs::path(dir) / given)) return fs::path(dir) / given;
  }
  return given;
}

fs::path peers_dir(const BenchOptions& o) {
  return o.peers_dir.empty() ? fs::path(SPATIALSOFTMAX_SOURCE_DIR) / "bench/peers"
                             : fs::path(o.peers_dir);
}

}  // namespace

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, sep);) {
    part.erase(0, part.find_first_not_of(' '));
    part.erase(part.find_last_not_of(' ') + 1);
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

std::string shape_text(const Shape& shape) {
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

double round_to(double value, double scale) { return std::round(value * scale) / scale; }

std::string fixed(double value, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << value;
  return s.str();
}

std::string row_key(const json& r) {
  return r["op"].get<std::string>() + "|" + r["shape"].dump() + "|" +
         r["layout"].get<std::string>() + "|" + row_dtype(r) + "|" +
         std::to_string(r["threads"].get<int>());
}

void run_peers(const BenchOptions& o, const std::vector<Case>& cases,
               const std::vector<int>& threads, const std::vector<std::string>& ops,
               std::vector<json>& rows, const Log& progress, const Log& note) {
  const std::vector<std::string> wanted = split(o.peers, ',');
  auto want = [&](const std::string& peer) {
    return std::find(wanted.begin(), wanted.end(), peer) != wanted.end();
  };
  // The 16-bit cases go to the torch-based runners only (--dtype), one run
  // per type; the others time float32.
  std::vector<Case> float32_cases;
  std::map<DType, std::vector<Case>> half_cases;
  for (const Case& c : cases) {
    (c.dtype == DType::kFloat32 ? float32_cases : half_cases[c.dtype]).push_back(c);
  }
  const std::string args =
      float32_cases.empty() ? std::string() : peer_arguments(o, float32_cases, threads, ops);

  const fs::path python = peers_python(o);
  const fs::path scripts = peers_dir(o);
  if (want("pytorch") || want("onnxruntime") || want("python")) {
    if (!fs::exists(python)) {
      note("peers not installed (no " + python.string() + "): run scripts/install-peers.sh");
    } else {
      for (const auto& [dtype, of_dtype] : half_cases) {
        const std::string half_args = peer_arguments(o, of_dtype, threads, ops) + " --dtype " +
                                      std::string(dtype_name(dtype));
        for (const auto& [peer, script] :
             {std::pair{"python", "torch_front.py"}, std::pair{"pytorch", "torch_ce.py"}}) {
          if (want(peer)) {
            run_peer(peer,
                     quote(python.string()) + " " + quote((scripts / script).string()) + half_args,
                     rows, progress, note);
          }
        }
      }
    }
  }
  if (args.empty()) return;
  if (want("pytorch") || want("onnxruntime") || want("python")) {
    if (fs::exists(python)) {
      // Our own Python front (spatialsoftmax.torch), timed by the same harness.
      if (want("python"))
        run_peer("python",
                 quote(python.string()) + " " + quote((scripts / "torch_front.py").string()) + args,
                 rows, progress, note);
      if (want("pytorch"))
        run_peer("pytorch",
                 quote(python.string()) + " " + quote((scripts / "torch_ce.py").string()) + args,
                 rows, progress, note);
      if (want("onnxruntime"))
        run_peer("onnxruntime",
                 quote(python.string()) + " " + quote((scripts / "ort_sce.py").string()) + args,
                 rows, progress, note);
    }
  }
  if (want("jax")) {
    const fs::path jax = o.jax_python.empty()
                             ? fs::path(SPATIALSOFTMAX_SOURCE_DIR) / ".venv-jax/bin/python"
                             : fs::path(o.jax_python);
    if (!fs::exists(jax)) {
      note("jax: not installed (no " + jax.string() + "): run scripts/install-peers.sh");
    } else {
      run_peer("jax", quote(jax.string()) + " " + quote((scripts / "jax_ce.py").string()) + args,
               rows, progress, note);
    }
  }
  if (want("onednn")) {
    const fs::path binary =
        o.onednn_peer.empty() ? self_dir() / kOnednnPeer : fs::path(o.onednn_peer);
    if (!fs::exists(binary)) {
      note(
          "onednn: not installed (no " + binary.string() +
          "; it is built when libdnnl-dev is present: scripts/install-peers.sh, then reconfigure)");
    } else {
      // Debian's libdnnl runs on GNU OpenMP: the peer calls omp_set_num_threads
      // per thread count; OMP_WAIT_POLICY stays at its default.
      run_peer("onednn", quote(binary.string()) + args, rows, progress, note);
    }
  }
}

bool run_cuda_runner(const BenchOptions& o, const std::vector<Case>& cases,
                     const std::vector<std::string>& ops, std::vector<json>& rows,
                     const Log& progress, const Log& note) {
  const fs::path python = peers_python(o);
  if (!fs::exists(python)) {
    note("--device cuda: no " + python.string() +
         " (--python: a Python with torch and this package built with CUDA)");
    return false;
  }
  std::string peers;
  for (const std::string& p : split(o.peers, ','))
    if (p == "pytorch" || p == "liger" || p == "quack") peers += (peers.empty() ? "" : ",") + p;
  const std::string command = quote(python.string()) + " " +
                              quote((peers_dir(o) / "cuda_bench.py").string()) +
                              peer_arguments(o, cases, {1}, ops) + " --memcpy-mib " +
                              std::to_string(o.memcpy_mib) + " --peers " + quote(peers);
  return run_peer("cuda", command, rows, progress, note);
}

}  // namespace spatialsoftmax::cli::bench
