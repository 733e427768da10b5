// Bitwise hashes of every output over a fixed set of problems, on every SIMD
// target (one test instance each) and at 1, 2, 3 and 7 threads, against the
// table recorded in tests/output_hashes.txt before the kernels were moved and
// split (issue 11): a refactor that changes one bit of one output fails here. The inputs
// come from a generator written here (splitmix64), so they are the same
// with any standard library.
//
// The table is written, not checked, with
//   SPATIALSOFTMAX_WRITE_HASHES=tests/output_hashes.txt build/release/tests/test_output_hashes
// (the lines of the targets this machine runs are rewritten, the others
// kept), which is only right when the outputs are meant to change (a new
// algorithm, a fixed defect), and then says so in its commit.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "spatialsoftmax/caffe2.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

// --- inputs -----------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [lo, hi), from the top 53 bits.
Tensor uniform(DType dtype, Shape shape, double lo, double hi, std::uint64_t seed) {
  Tensor t(dtype, std::move(shape));
  std::uint64_t state = seed;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const double u = static_cast<double>(splitmix64(state) >> 11) * 0x1p-53;
    const double v = lo + (hi - lo) * u;
    if (dtype == DType::kFloat32) {
      t.data_as<float>()[i] = static_cast<float>(v);
    } else {
      t.data_as<double>()[i] = v;
    }
  }
  return t;
}

// Labels in [0, classes), every `ignore_every`-th one `ignore` (if nonzero).
Tensor labels(DType dtype, Shape shape, std::int64_t classes, std::uint64_t seed,
              std::int64_t ignore = 0, std::int64_t ignore_every = 0) {
  Tensor t(dtype, std::move(shape));
  std::uint64_t state = seed;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    std::int64_t y =
        static_cast<std::int64_t>(splitmix64(state) % static_cast<std::uint64_t>(classes));
    if (ignore_every > 0 && i % ignore_every == 0) y = ignore;
    if (dtype == DType::kInt32) {
      t.data_as<std::int32_t>()[i] = static_cast<std::int32_t>(y);
    } else {
      t.data_as<std::int64_t>()[i] = y;
    }
  }
  return t;
}

// Rows of probabilities over the class axis (position-major for class-last,
// class-major for class-first), every 5th entry 0.
Tensor probabilities(const Tensor& like, ClassAxis axis, std::uint64_t seed) {
  Tensor t = uniform(like.dtype(), like.shape(), 0.0, 1.0, seed);
  const std::int64_t C = axis == ClassAxis::kFirst ? like.shape()[1] : like.shape().back();
  const std::int64_t n = like.shape()[0];
  const std::int64_t inner = axis == ClassAxis::kFirst ? like.numel() / (n * C) : 1;
  const std::int64_t outer = like.numel() / (C * inner);
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t j = 0; j < inner; ++j) {
      const std::int64_t base = axis == ClassAxis::kFirst ? o * C * inner + j : o * C;
      const std::int64_t stride = axis == ClassAxis::kFirst ? inner : 1;
      double total = 0;
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t at = base + c * stride;
        double v = t.at(at);
        if ((at % 5) == 0) v = 0;
        total += v;
        if (t.dtype() == DType::kFloat32)
          t.data_as<float>()[at] = static_cast<float>(v);
        else
          t.data_as<double>()[at] = v;
      }
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t at = base + c * stride;
        if (t.dtype() == DType::kFloat32)
          t.data_as<float>()[at] = static_cast<float>(t.at(at) / total);
        else
          t.data_as<double>()[at] = t.at(at) / total;
      }
    }
  }
  return t;
}

// --- hashing ----------------------------------------------------------------

// FNV-1a over the dtype, the shape and the bytes of each output, in order;
// an output not produced hashes as a marker.
class Hash {
 public:
  void add(const void* bytes, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(bytes);
    for (std::size_t i = 0; i < n; ++i) value_ = (value_ ^ p[i]) * 0x100000001B3ull;
  }
  void add(const Tensor& t) {
    const std::int64_t marker = t.defined() ? static_cast<std::int64_t>(t.dtype()) : -1;
    add(&marker, sizeof(marker));
    if (!t.defined()) return;
    for (std::int64_t d : t.shape()) add(&d, sizeof(d));
    add(t.data(), t.nbytes());
  }
  void add(double v) { add(&v, sizeof(v)); }
  std::uint64_t value() const { return value_; }

 private:
  std::uint64_t value_ = 0xCBF29CE484222325ull;
};

// --- the problems -------------------------------------------------------------

struct Problem {
  std::string name;
  std::function<void(Hash&)> run;
};

// The inputs of one shape's problems, shared by their closures (Tensor is
// move-only; the options' views point into these).
struct Inputs {
  Tensor x, y, y32, soft, log_soft, grad, class_weight, pixel_weight, grad_map, keypoints,
      covariance, softmax;
};

// The loss family on logits of one shape, dtype and class axis.
void add_loss_family(std::vector<Problem>& out, const std::string& tag, DType dtype, Shape shape,
                     ClassAxis axis, std::uint64_t seed) {
  auto in = std::make_shared<Inputs>();
  in->x = uniform(dtype, shape, -6.0, 6.0, seed);
  const std::int64_t C = axis == ClassAxis::kFirst ? shape[1] : shape.back();
  Shape label_shape = shape;
  label_shape.erase(label_shape.begin() +
                    (axis == ClassAxis::kFirst ? 1 : static_cast<long>(shape.size()) - 1));
  in->y = labels(DType::kInt64, label_shape, C, seed + 1, -100, 7);
  in->y32 = labels(DType::kInt32, label_shape, C, seed + 2);
  in->soft = probabilities(in->x, axis, seed + 3);
  // Log targets come from the generator, not from log_softmax: an input the
  // kernels computed would depend on the best SIMD target of the machine.
  in->log_soft = uniform(dtype, shape, -8.0, 0.0, seed + 8);
  in->grad = uniform(dtype, shape, -1.0, 1.0, seed + 4);
  in->class_weight = uniform(dtype, {C}, 0.25, 2.0, seed + 5);
  in->pixel_weight = uniform(dtype, label_shape, 0.0, 2.0, seed + 6);
  in->grad_map = uniform(dtype, label_shape, -1.0, 1.0, seed + 7);
  const auto add = [&](const std::string& name, std::function<void(Hash&)> run) {
    out.push_back({tag + " " + name, std::move(run)});
  };
  add("softmax", [in, axis](Hash& h) { h.add(softmax(in->x, axis)); });
  add("log_softmax", [in, axis](Hash& h) { h.add(log_softmax(in->x, axis)); });
  add("entropy", [in, axis](Hash& h) { h.add(entropy(in->x, axis)); });
  add("softmax_backward",
      [in, axis](Hash& h) { h.add(softmax_backward(softmax(in->x, axis), in->grad, axis)); });
  add("log_softmax_backward", [in, axis](Hash& h) {
    h.add(log_softmax_backward(log_softmax(in->x, axis), in->grad, axis));
  });

  CrossEntropyOptions all = CrossEntropyOptions::pytorch();
  all.class_axis = axis;
  all.class_weight = in->class_weight.view();
  all.label_smoothing = 0.1;
  all.want_prob = all.want_log_prob = all.want_entropy = true;
  const auto outputs = [](Hash& h, const CrossEntropyResult& r) {
    for (const Tensor* t : {&r.loss, &r.prob, &r.log_prob, &r.entropy, &r.grad_logits}) h.add(*t);
  };
  add("cross_entropy weighted smoothed",
      [=](Hash& h) { outputs(h, cross_entropy(in->x, in->y, all)); });
  CrossEntropyOptions none = all;
  none.reduction = Reduction::kNone;
  none.label_smoothing = 0;
  none.pixel_weight = in->pixel_weight.view();
  add("cross_entropy none pixel weights",
      [=](Hash& h) { outputs(h, cross_entropy(in->x, in->y32, none)); });
  CrossEntropyOptions soft = CrossEntropyOptions::pytorch();
  soft.class_axis = axis;
  soft.want_entropy = true;
  add("cross_entropy probabilities",
      [=](Hash& h) { outputs(h, cross_entropy(in->x, in->soft, soft)); });
  CrossEntropyGrads grads;
  grads.loss = in->grad_map.view();
  grads.prob = in->grad.view();
  add("cross_entropy_backward upstream",
      [=](Hash& h) { h.add(cross_entropy_backward(in->x, in->y, grads, none)); });
  add("cross_entropy_forward_backward",
      [=](Hash& h) { outputs(h, cross_entropy_forward_backward(in->x, in->y, all)); });
  add("cross_entropy_forward_backward probabilities",
      [=](Hash& h) { outputs(h, cross_entropy_forward_backward(in->x, in->soft, soft)); });
  CrossEntropyOptions floor = CrossEntropyOptions::caffe2_spatial();
  floor.class_axis = axis;
  add("cross_entropy_forward_backward_in_place floor", [=](Hash& h) {
    outputs(h, cross_entropy_forward_backward_in_place(Tensor::copy_of(in->x), in->y32, floor));
  });
  CrossEntropyOptions nll = CrossEntropyOptions::pytorch();
  nll.class_axis = axis;
  nll.class_weight = in->class_weight.view();
  add("nll_loss", [=](Hash& h) {
    const Tensor lp = log_softmax(in->x, axis);
    h.add(nll_loss(lp, in->y, nll));
    h.add(nll_loss_backward(lp, in->y, Tensor::scalar(dtype, 0.5), nll));
  });
  KlDivOptions kl;
  kl.class_axis = axis;
  kl.reduction = Reduction::kBatchMean;
  add("kl_div batchmean", [=](Hash& h) {
    h.add(kl_div(in->x, in->soft, kl));
    h.add(kl_div_backward(in->x, in->soft, Tensor::scalar(dtype, 1.5), kl));
  });
  KlDivOptions kl_none = kl;
  kl_none.reduction = Reduction::kNone;
  kl_none.log_target = true;
  add("kl_div none log_target", [=](Hash& h) {
    h.add(kl_div(in->x, in->log_soft, kl_none));
    h.add(kl_div_backward(in->x, in->log_soft, in->grad, kl_none));
  });
}

void add_spatial(std::vector<Problem>& out, const std::string& tag, DType dtype, Shape shape,
                 ClassAxis axis, std::uint64_t seed) {
  auto in = std::make_shared<Inputs>();
  in->x = uniform(dtype, shape, -4.0, 4.0, seed);
  SpatialSoftArgmaxOptions o;
  o.channel_axis = axis;
  o.temperature = 0.75;
  o.want_softmax = o.want_covariance = true;
  SpatialSoftArgmaxOptions pixel = o;
  pixel.coordinates = Coordinates::kPixel;
  pixel.temperature_mode = TemperatureMode::kMultiply;
  const SpatialSoftArgmaxResult r = spatial_soft_argmax(in->x, o);
  in->keypoints = uniform(dtype, r.keypoints.shape(), -1.0, 1.0, seed + 1);
  in->softmax = uniform(dtype, r.softmax.shape(), -1.0, 1.0, seed + 2);
  in->covariance = uniform(dtype, r.covariance.shape(), -1.0, 1.0, seed + 3);
  out.push_back({tag + " spatial_softmax", [in, o](Hash& h) { h.add(spatial_softmax(in->x, o)); }});
  for (const auto& [name, options] :
       {std::pair{"normalized divide", o}, std::pair{"pixel multiply", pixel}}) {
    out.push_back({tag + " spatial_soft_argmax " + name, [in, options = options](Hash& h) {
                     const SpatialSoftArgmaxResult f = spatial_soft_argmax(in->x, options);
                     for (const Tensor* t : {&f.keypoints, &f.softmax, &f.covariance}) h.add(*t);
                     SpatialSoftArgmaxGrads g;
                     g.keypoints = in->keypoints.view();
                     g.softmax = in->softmax.view();
                     g.covariance = in->covariance.view();
                     const SpatialSoftArgmaxBackward b =
                         spatial_soft_argmax_backward(in->x, g, options);
                     h.add(b.grad_input);
                     h.add(b.grad_temperature);
                   }});
  }
}

void add_caffe2(std::vector<Problem>& out, std::uint64_t seed) {
  auto in = std::make_shared<Inputs>();
  in->x = uniform(DType::kFloat32, {2, 21, 40, 52}, -5.0, 5.0, seed);
  in->y32 = labels(DType::kInt32, {2, 40, 52}, 21, seed + 1, -1, 9);
  in->pixel_weight = uniform(DType::kFloat32, {2, 40, 52}, 0.0, 2.0, seed + 2);
  in->grad_map = Tensor::scalar(DType::kFloat32, 0.75);
  for (const caffe2::Variant variant : {caffe2::Variant::kCpu, caffe2::Variant::kCuda}) {
    caffe2::SpatialSoftmaxWithLossArgs args;
    args.scale = 0.5f;
    args.variant = variant;
    const std::string v = variant == caffe2::Variant::kCpu ? "cpu" : "cuda";
    out.push_back({"caffe2 SpatialSoftmaxWithLoss " + v, [in, args](Hash& h) {
                     const caffe2::LossOutputs f =
                         caffe2::spatial_softmax_with_loss(in->x, in->y32, in->pixel_weight, args);
                     h.add(f.prob);
                     h.add(f.loss);
                     h.add(caffe2::spatial_softmax_with_loss_gradient(
                         in->x, in->y32, in->pixel_weight, f.prob, in->grad_map, args));
                   }});
  }
  auto rows = std::make_shared<Inputs>();
  rows->x = uniform(DType::kFloat32, {300, 37}, -5.0, 5.0, seed + 3);
  rows->y32 = labels(DType::kInt32, {300}, 37, seed + 4);
  rows->pixel_weight = uniform(DType::kFloat32, {300}, 0.0, 2.0, seed + 5);
  rows->grad_map = Tensor::scalar(DType::kFloat32, 0.75);
  caffe2::SoftmaxWithLossArgs args;
  args.scale = 2.0f;
  args.average_by_batch_size = 1;
  out.push_back({"caffe2 SoftmaxWithLoss", [rows, args](Hash& h) {
                   const caffe2::LossOutputs f =
                       caffe2::softmax_with_loss(rows->x, rows->y32, rows->pixel_weight, args);
                   h.add(f.prob);
                   h.add(f.loss);
                   h.add(caffe2::softmax_with_loss_gradient(rows->x, rows->y32, rows->pixel_weight,
                                                            f.prob, rows->grad_map, args));
                 }});
}

// Shapes: tiles of class-first pixels (several tiles per image), class-last
// few classes (the interleaving path) and tiles through the transpose, rows
// of many classes (several row blocks), each in float32 and float64.
std::vector<Problem> problems() {
  std::vector<Problem> out;
  for (const DType dtype : {DType::kFloat32, DType::kFloat64}) {
    const std::string f = dtype == DType::kFloat32 ? "f32" : "f64";
    add_loss_family(out, f + " NCHW 2x19x48x80", dtype, {2, 19, 48, 80}, ClassAxis::kFirst, 11);
    add_loss_family(out, f + " NHWC 2x40x50x3", dtype, {2, 40, 50, 3}, ClassAxis::kLast, 12);
    add_loss_family(out, f + " NHWC 2x30x40x21", dtype, {2, 30, 40, 21}, ClassAxis::kLast, 13);
    add_loss_family(out, f + " rows 900x301", dtype, {900, 301}, ClassAxis::kLast, 14);
    add_loss_family(out, f + " NCHW 3x300x7x5", dtype, {3, 300, 7, 5}, ClassAxis::kFirst, 15);
    add_spatial(out, f + " NCHW 2x5x24x40", dtype, {2, 5, 24, 40}, ClassAxis::kFirst, 16);
    add_spatial(out, f + " NHWC 2x24x40x5", dtype, {2, 24, 40, 5}, ClassAxis::kLast, 17);
    add_spatial(out, f + " NCDHW 1x3x6x8x10", dtype, {1, 3, 6, 8, 10}, ClassAxis::kFirst, 18);
  }
  add_caffe2(out, 19);
  return out;
}

// --- the table ----------------------------------------------------------------

std::string key_of(std::int64_t target, const std::string& problem) {
  return simd_target_name(target) + " | " + problem;
}

std::map<std::string, std::string> read_table() {
  std::map<std::string, std::string> table;
  std::ifstream in(SPATIALSOFTMAX_OUTPUT_HASHES);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::size_t bar = line.rfind(" = ");
    if (bar != std::string::npos) table[line.substr(0, bar)] = line.substr(bar + 3);
  }
  return table;
}

std::string hex(std::uint64_t v) {
  std::ostringstream s;
  s << std::hex << v;
  return s.str();
}

// A target of this machine that the recording machine did not have (newer
// x86 extensions, another ISA) cannot be compared and is skipped;
// OutputHashesTable.SomeTargetOfThisMachineIsRecorded makes sure that
// something is. An entry whose value is kUnrecorded was not recorded by the
// code before the refactor (its inputs changed after the recording, and no
// machine at hand had the target): only its thread counts are compared.
constexpr const char* kUnrecorded = "unrecorded";

class OutputHashes : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(OutputHashes, EveryOutputBitwiseAsRecordedAtEveryThreadCount) {
  const std::int64_t target = GetParam();
  const std::vector<Problem> all = problems();
  ScopedTarget only(target);
  const char* write_to = std::getenv("SPATIALSOFTMAX_WRITE_HASHES");
  const std::map<std::string, std::string> table = read_table();
  if (!write_to) {
    ASSERT_FALSE(table.empty()) << "no table at " << SPATIALSOFTMAX_OUTPUT_HASHES;
    if (table.count(key_of(target, all.front().name)) == 0) {
      GTEST_SKIP() << "note: target " << simd_target_name(target)
                   << " is not in the table; its outputs were not compared";
    }
  }
  std::ostringstream written;
  for (const Problem& p : all) {
    std::string first;
    for (const int threads : {1, 2, 3, 7}) {
      ScopedThreads count(threads);
      Hash h;
      p.run(h);
      const std::string got = hex(h.value());
      if (threads == 1) first = got;
      EXPECT_EQ(got, first) << key_of(target, p.name) << ": " << threads
                            << " threads differ from 1";
    }
    const std::string key = key_of(target, p.name);
    written << key << " = " << first << "\n";
    if (write_to) continue;
    const auto it = table.find(key);
    ASSERT_NE(it, table.end()) << key << ": not in the table";
    if (it->second == kUnrecorded) {
      std::cout << "note: " << key
                << " is marked unrecorded; only its thread counts were compared\n";
      continue;
    }
    EXPECT_EQ(first, it->second) << key << ": outputs differ from the recorded ones";
  }
  if (write_to) {
    // Rewrites this target's lines only, so a machine without some target
    // (AVX3 on an AVX2 machine) keeps that target's recorded lines.
    const std::string prefix = simd_target_name(target) + " | ";
    std::ostringstream kept;
    {
      std::ifstream in(write_to);
      std::string line;
      while (std::getline(in, line)) {
        if (line.rfind(prefix, 0) != 0) kept << line << "\n";
      }
    }
    std::string text = kept.str();
    if (text.empty())
      text =
          "# Bitwise output hashes of tests/test_output_hashes.cc: target | problem = FNV-1a 64.\n";
    std::ofstream(write_to, std::ios::trunc) << text << written.str();
    GTEST_SKIP() << "wrote the hashes of " << simd_target_name(target) << " to " << write_to
                 << " (nothing checked)";
  }
}

SPATIALSOFTMAX_INSTANTIATE_PER_TARGET(OutputHashes);

TEST(OutputHashesTable, SomeTargetOfThisMachineIsRecorded) {
  if (std::getenv("SPATIALSOFTMAX_WRITE_HASHES")) GTEST_SKIP() << "writing the table";
  const std::map<std::string, std::string> table = read_table();
  ASSERT_FALSE(table.empty()) << "no table at " << SPATIALSOFTMAX_OUTPUT_HASHES;
  const std::string first_problem = problems().front().name;
  std::size_t recorded = 0;
  for (const std::int64_t target : simd_targets())
    recorded += table.count(key_of(target, first_problem));
  EXPECT_GT(recorded, 0u) << "no target of this machine is in the table";
}

}  // namespace
}  // namespace spatialsoftmax::testing
