// `spatialsoftmax demo`: a deterministic synthetic segmentation batch through
// caffe2::spatial_softmax_with_loss and its gradient, checked against the same
// API run in float64 (the scalar reference path) and timed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "spatialsoftmax/caffe2.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::cli {
namespace {

namespace c2 = spatialsoftmax::caffe2;

// docs/semantics.md section 5 tolerances, float32 against a float64 reference.
constexpr double kProbAtol = 1e-6;
constexpr double kProbRtol = 1e-5;
constexpr double kGradAtolScale = 1e-6;  // times max |reference dX|
constexpr double kGradRtol = 1e-5;
constexpr double kLossAtol = 1e-6;
constexpr double kLossRtol = 1e-5;
constexpr std::int64_t kSamplePixels = 4096;
// Side of the square regions that share a label, like segments of a scene.
constexpr std::int64_t kRegion = 64;

// splitmix64: a counter-based hash, so every element is a pure function of
// (seed, index) and the batch is the same on every machine.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

double unit(std::uint64_t seed, std::uint64_t index) {
  return static_cast<double>(mix(seed ^ mix(index)) >> 11) * 0x1.0p-53;
}

struct Batch {
  Tensor logits;  // (N, C, H, W) float32
  Tensor labels;  // (N, H, W) int32, -1 = ignored
  std::int64_t ignored = 0;
};

// Labels are constant over kRegion x kRegion squares; a fraction of pixels is
// ignored (-1). Logits are noise in [-2, 2) plus 3 on each pixel's region
// class, so the softmax is confident but not saturated.
Batch make_batch(const DemoOptions& o) {
  const Shape map_shape = {o.batch, o.height, o.width};
  const std::int64_t pixels = checked_numel(map_shape, "demo labels");
  Batch b{Tensor(DType::kFloat32, {o.batch, o.classes, o.height, o.width}),
          Tensor(DType::kInt32, map_shape), 0};
  auto* y = b.labels.data_as<std::int32_t>();
  std::vector<std::int32_t> region_class(static_cast<std::size_t>(pixels));
  const std::uint64_t label_seed = mix(o.seed ^ 1);
  const std::uint64_t ignore_seed = mix(o.seed ^ 2);
  for (std::int64_t n = 0, i = 0; n < o.batch; ++n) {
    for (std::int64_t h = 0; h < o.height; ++h) {
      for (std::int64_t w = 0; w < o.width; ++w, ++i) {
        const auto region = static_cast<std::uint64_t>(
            (n * (o.height / kRegion + 1) + h / kRegion) * (o.width / kRegion + 1) + w / kRegion);
        const auto cls =
            static_cast<std::int32_t>(unit(label_seed, region) * static_cast<double>(o.classes));
        region_class[static_cast<std::size_t>(i)] =
            std::min(cls, static_cast<std::int32_t>(o.classes - 1));
        const bool ignore = unit(ignore_seed, static_cast<std::uint64_t>(i)) < o.ignore_fraction;
        y[i] = ignore ? -1 : region_class[static_cast<std::size_t>(i)];
        b.ignored += ignore ? 1 : 0;
      }
    }
  }
  auto* x = b.logits.data_as<float>();
  const std::int64_t plane = o.height * o.width;
  for (std::int64_t n = 0; n < o.batch; ++n) {
    for (std::int64_t c = 0; c < o.classes; ++c) {
      float* row = x + (n * o.classes + c) * plane;
      const std::int32_t* cls = region_class.data() + n * plane;
      const std::uint64_t base = static_cast<std::uint64_t>((n * o.classes + c) * plane);
      for (std::int64_t p = 0; p < plane; ++p) {
        const double noise = 4.0 * unit(o.seed, base + static_cast<std::uint64_t>(p)) - 2.0;
        row[p] = static_cast<float>(noise + (cls[p] == c ? 3.0 : 0.0));
      }
    }
  }
  return b;
}

template <class F>
double best_ms(int repeats, F&& run) {
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    run();
    const auto stop = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(stop - start).count());
  }
  return best;
}

bool close(double got, double want, double atol, double rtol) {
  if (std::isnan(want)) return std::isnan(got);
  return std::abs(got - want) <= atol + rtol * std::abs(want);
}

// Largest |got - want| and whether every element is within tolerance, over
// all classes of the sampled pixels.
struct Comparison {
  double max_error = 0;
  bool ok = true;
};

Comparison compare_sample(const Tensor& got, const Tensor& want, const DemoOptions& o, double atol,
                          double rtol) {
  const std::int64_t plane = o.height * o.width;
  const std::int64_t pixels = o.batch * plane;
  const std::int64_t samples = std::min(kSamplePixels, pixels);
  const float* g = got.data_as<float>();
  const double* w = want.data_as<double>();
  Comparison result;
  for (std::int64_t k = 0; k < samples; ++k) {
    // Evenly spread over the batch, so every image and row band is visited.
    const std::int64_t pixel = (2 * k + 1) * pixels / (2 * samples);
    const std::int64_t n = pixel / plane;
    const std::int64_t p = pixel % plane;
    for (std::int64_t c = 0; c < o.classes; ++c) {
      const std::int64_t i = (n * o.classes + c) * plane + p;
      const double err = std::abs(static_cast<double>(g[i]) - w[i]);
      result.max_error = std::max(result.max_error, std::isnan(err) ? 0.0 : err);
      result.ok = result.ok && close(g[i], w[i], atol, rtol);
    }
  }
  return result;
}

double max_abs(const Tensor& t) {
  const double* v = t.data_as<double>();
  double m = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(v[i]));
  return m;
}

double gb_per_s(double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; }
double megabytes(double bytes) { return bytes / 1e6; }

void print_timing(const char* what, double ms, double bytes, const std::string& counted) {
  std::printf("  %-40s %10.3f ms  %8.2f GB/s  (bytes counted: %s = %.1f MB)\n", what, ms,
              gb_per_s(bytes, ms), counted.c_str(), megabytes(bytes));
}

int run_demo_checked(const DemoOptions& o) {
  const Batch batch = make_batch(o);
  const std::int64_t pixels = batch.labels.numel();
  std::printf(
      "spatialsoftmax demo: N=%lld C=%lld H=%lld W=%lld, float32 logits, int32 labels, "
      "seed %llu, %lld of %lld pixels ignored (-1)\n",
      static_cast<long long>(o.batch), static_cast<long long>(o.classes),
      static_cast<long long>(o.height), static_cast<long long>(o.width),
      static_cast<unsigned long long>(o.seed), static_cast<long long>(batch.ignored),
      static_cast<long long>(pixels));

  const std::optional<TensorView> no_weight;
  const Tensor d_loss = Tensor::scalar(DType::kFloat32, 1.0);
  c2::LossOutputs forward;
  Tensor dX;
  const double forward_ms = best_ms(o.repeats, [&] {
    forward = c2::spatial_softmax_with_loss(batch.logits, batch.labels, no_weight);
  });
  const double backward_ms = best_ms(o.repeats, [&] {
    dX = c2::spatial_softmax_with_loss_gradient(batch.logits, batch.labels, no_weight, forward.prob,
                                                d_loss);
  });

  // The same API in float64 is the scalar reference path.
  const Tensor logits64 = batch.logits.to(DType::kFloat64);
  const c2::LossOutputs forward64 =
      c2::spatial_softmax_with_loss(logits64, batch.labels, no_weight);
  const Tensor dX64 = c2::spatial_softmax_with_loss_gradient(
      logits64, batch.labels, no_weight, forward64.prob, Tensor::scalar(DType::kFloat64, 1.0));

  const double loss = forward.loss.at(0);
  const double loss64 = forward64.loss.at(0);
  std::printf("  loss (avg_loss): %.9g   float64 reference: %.12g\n", loss, loss64);

  const double x_bytes = static_cast<double>(batch.logits.nbytes());
  const double y_bytes = static_cast<double>(batch.labels.nbytes());
  std::printf(
      "  times: best of %d runs (steady_clock); GB/s = bytes counted / time, "
      "1 GB = 1e9 bytes\n",
      o.repeats);
  print_timing("forward  SpatialSoftmaxWithLoss", forward_ms, 2 * x_bytes + y_bytes,
               "read X + read labels + write P");
  print_timing("backward SpatialSoftmaxWithLossGradient", backward_ms, 2 * x_bytes + y_bytes,
               "read P + read labels + write dX");
  print_timing("forward + backward", forward_ms + backward_ms, 2 * x_bytes + y_bytes,
               "what a fused kernel must move: read X + read labels + write dX");

  const Comparison p = compare_sample(forward.prob, forward64.prob, o, kProbAtol, kProbRtol);
  const Comparison g = compare_sample(dX, dX64, o, kGradAtolScale * max_abs(dX64), kGradRtol);
  const bool loss_ok = close(loss, loss64, kLossAtol, kLossRtol);
  const bool ok = p.ok && g.ok && loss_ok;
  std::printf(
      "  check against float64 on %lld sampled pixels (all classes): "
      "P max error %.3g, dX max error %.3g, loss error %.3g: %s\n",
      static_cast<long long>(std::min(kSamplePixels, pixels)), p.max_error, g.max_error,
      std::abs(loss - loss64), ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

CLI::App* add_demo_command(CLI::App& app, DemoOptions& options) {
  CLI::App* command = app.add_subcommand(
      "demo",
      "Run SpatialSoftmaxWithLoss and its gradient on a synthetic segmentation batch "
      "(default 2 x 19 x 512 x 1024, Cityscapes-sized), check them against float64 and "
      "print the loss, times and throughput");
  // Bounds keep CLI11's range messages readable; the element count is
  // checked for overflow when the batch is built.
  constexpr std::int64_t kMaxDim = std::numeric_limits<std::int32_t>::max();
  command->add_option("--batch", options.batch, "N, images")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, kMaxDim));
  command->add_option("--classes", options.classes, "C, classes")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, kMaxDim));
  command->add_option("--height", options.height, "H, pixels")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, kMaxDim));
  command->add_option("--width", options.width, "W, pixels")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, kMaxDim));
  command->add_option("--seed", options.seed, "Seed of the synthetic data")->capture_default_str();
  command
      ->add_option("--ignore-fraction", options.ignore_fraction,
                   "Fraction of pixels labelled -1 (ignored)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  command->add_option("--repeats", options.repeats, "Timed runs; the best is reported")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  return command;
}

int run_demo(const DemoOptions& options) {
  try {
    return run_demo_checked(options);
  } catch (const std::exception& e) {
    std::cerr << "spatialsoftmax demo: " << one_line(e.what()) << "\n";
    return 1;
  }
}

}  // namespace spatialsoftmax::cli
