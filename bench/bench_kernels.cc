// Google Benchmark suite: our cross-entropy forward (loss only, mean) and fused
// forward+backward through the public API, and a memcpy baseline, each with
// bytes processed set so that the report shows bytes/s.
//
//   build/release/spatialsoftmax_bench_kernels --benchmark_filter='binary'
//
// Names: <op>/<shape name>/<layout>/threads:<n>, op = forward |
// forward_backward | memcpy. Bytes per iteration are those a fused kernel must
// move (as in `spatialsoftmax bench`): forward = bytes(X) + bytes(int64
// labels), forward_backward adds bytes(dX); memcpy counts read + written bytes.
// The environment variable SPATIALSOFTMAX_BENCH_SHAPES=all adds the large
// shapes (cityscapes 2x19x512x1024, ade20k 2x150x256x256, lm 8192x32000) to the
// default quick set (binary 8x2x512x512, voc 32x21x64x64). The comparison with
// memory bandwidth and with the peers is `spatialsoftmax bench`.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "spatialsoftmax/functions.h"
#include "spatialsoftmax/options.h"
#include "spatialsoftmax/tensor.h"
#include "spatialsoftmax/threads.h"

namespace ss = spatialsoftmax;

namespace {

struct NamedShape {
  const char* name;
  ss::Shape shape;  // logical (N, C, d...)
  bool large;
};

const std::vector<NamedShape>& shapes() {
  static const std::vector<NamedShape> all = {
      {"binary_8x2x512x512", {8, 2, 512, 512}, false},
      {"voc_32x21x64x64", {32, 21, 64, 64}, false},
      {"cityscapes_2x19x512x1024", {2, 19, 512, 1024}, true},
      {"ade20k_2x150x256x256", {2, 150, 256, 256}, true},
      {"lm_8192x32000", {8192, 32000}, true},
  };
  return all;
}

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Logits uniform in [-2, 2) stored in `layout`, int64 labels uniform in [0, C).
struct Inputs {
  ss::Tensor x;
  ss::Tensor labels;
  ss::CrossEntropyOptions options = ss::CrossEntropyOptions::pytorch();
  double x_bytes = 0;
  double label_bytes = 0;
};

Inputs make_inputs(const ss::Shape& shape, bool class_last) {
  ss::Shape stored = shape;
  if (class_last && shape.size() > 2) {
    stored.erase(stored.begin() + 1);
    stored.push_back(shape[1]);
  }
  ss::Shape label_shape = shape;
  label_shape.erase(label_shape.begin() + 1);
  Inputs in{ss::Tensor(ss::DType::kFloat32, stored), ss::Tensor(ss::DType::kInt64, label_shape)};
  auto* x = in.x.data_as<float>();
  for (std::int64_t i = 0; i < in.x.numel(); ++i)
    x[i] = static_cast<float>(
        static_cast<double>(mix(static_cast<std::uint64_t>(i)) >> 40) * 0x1.0p-24 * 4.0 - 2.0);
  auto* y = in.labels.data_as<std::int64_t>();
  for (std::int64_t i = 0; i < in.labels.numel(); ++i)
    y[i] = static_cast<std::int64_t>(mix(~static_cast<std::uint64_t>(i)) %
                                     static_cast<std::uint64_t>(shape[1]));
  in.options.class_axis = class_last ? ss::ClassAxis::kLast : ss::ClassAxis::kFirst;
  in.x_bytes = static_cast<double>(in.x.nbytes());
  in.label_bytes = static_cast<double>(in.labels.nbytes());
  return in;
}

void forward(benchmark::State& state, const ss::Shape& shape, bool class_last, int threads) {
  const Inputs in = make_inputs(shape, class_last);
  ss::set_num_threads(threads);
  for (auto _ : state) {
    ss::CrossEntropyResult r = ss::cross_entropy(in.x, in.labels, in.options);
    benchmark::DoNotOptimize(r.loss.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(in.x_bytes + in.label_bytes));
}

void forward_backward(benchmark::State& state, const ss::Shape& shape, bool class_last,
                      int threads) {
  const Inputs in = make_inputs(shape, class_last);
  ss::set_num_threads(threads);
  for (auto _ : state) {
    ss::CrossEntropyResult r = ss::cross_entropy_forward_backward(in.x, in.labels, in.options);
    benchmark::DoNotOptimize(r.grad_logits.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(2 * in.x_bytes + in.label_bytes));
}

// 256 MiB copied by `threads` threads, each a contiguous part.
void memcpy_baseline(benchmark::State& state, int threads) {
  const std::size_t bytes = std::size_t{256} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const std::size_t part = (bytes / static_cast<std::size_t>(threads) + 63) / 64 * 64;
  for (auto _ : state) {
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) {
      const std::size_t begin = std::min(bytes, part * static_cast<std::size_t>(i));
      const std::size_t end = std::min(bytes, begin + part);
      pool.emplace_back(
          [&, begin, end] { std::memcpy(dst.data() + begin, src.data() + begin, end - begin); });
    }
    std::memcpy(dst.data(), src.data(), std::min(bytes, part));
    for (std::thread& t : pool) t.join();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(2 * bytes));
}

void register_all() {
  const char* env = std::getenv("SPATIALSOFTMAX_BENCH_SHAPES");
  const bool all = env != nullptr && std::string(env) == "all";
  std::vector<int> thread_counts = {1};
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (hw > 1) thread_counts.push_back(hw);
  for (int t : thread_counts) {
    const std::string suffix = "/threads:" + std::to_string(t);
    benchmark::RegisterBenchmark(("memcpy/256MiB" + suffix).c_str(), memcpy_baseline, t)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (const NamedShape& s : shapes()) {
    if (s.large && !all) continue;
    for (bool class_last : {false, true}) {
      if (s.shape.size() == 2 && !class_last) continue;  // rows x classes: one layout
      const std::string layout = class_last ? "NHWC" : "NCHW";
      for (int t : thread_counts) {
        const std::string tail =
            std::string("/") + s.name + "/" + layout + "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(("forward" + tail).c_str(), forward, s.shape, class_last, t)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("forward_backward" + tail).c_str(), forward_backward, s.shape,
                                     class_last, t)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
