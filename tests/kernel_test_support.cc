#include "kernel_test_support.h"

#include <hwy/targets.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

namespace spatialsoftmax::testing {

std::string target_label(std::int64_t target) {
  std::ostringstream out;
  out << "SIMD target " << cpu::target_name(target) << " (0x" << std::hex << target << ")";
  return out.str();
}

// The target HWY_DYNAMIC_DISPATCH used last, decoded from Highway's chosen
// target mask (libhwy is a shared library: the library's kernels and this
// test see the same mask). 0 if nothing was dispatched yet.
std::int64_t dispatched_target() {
  const std::size_t index = hwy::GetChosenTarget().GetIndex();
  if (index == 0) return 0;
  if (index == HWY_MAX_DYNAMIC_TARGETS + 1) {
    return (HWY_TARGETS & HWY_EMU128) ? HWY_EMU128 : HWY_SCALAR;
  }
  return std::int64_t{1} << (index - 1 + (HWY_HIGHEST_TARGET_BIT + 1 - HWY_MAX_DYNAMIC_TARGETS));
}

// Runs `body` once per supported SIMD target, with that target forced and

Tolerance tolerance(DType dtype, Kind kind, const TensorView& want) {
  const bool f64 = dtype == DType::kFloat64;
  Tolerance t;
  t.rtol = f64 ? 1e-12 : 1e-5;
  switch (kind) {
    case Kind::kProb:
      t.atol = f64 ? 1e-12 : 1e-6;
      break;
    case Kind::kMap:
      t.atol = f64 ? 1e-12 : 1e-5;
      break;
    case Kind::kReduced:
      t.atol = f64 ? 1e-12 : 1e-6;
      break;
    case Kind::kGrad:
      t.atol = (f64 ? 1e-12 : 1e-6) * max_abs(want);
      break;
  }
  return t;
}

void expect_close(const Tensor& got, const Tensor& want, Kind kind, const std::string& what,
                  const Tensor* same_dtype) {
  ASSERT_EQ(got.defined(), want.defined()) << what << ": one backend did not produce it";
  if (!want.defined()) return;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const TensorView g = got.view(), w = want.view();
  const Tolerance t = tolerance(got.dtype(), kind, w);
  TensorView w2;
  Tolerance t2;
  if (same_dtype && same_dtype->defined()) {
    ASSERT_EQ(same_dtype->shape(), want.shape()) << what;
    w2 = same_dtype->view();
    t2 = tolerance(got.dtype(), kind, w2);
  }
  for (std::int64_t i = 0; i < g.numel(); ++i) {
    const double gi = g.at(i), wi = w.at(i);
    if (close_enough(gi, wi, t)) continue;
    if (w2.data() && close_enough(gi, w2.at(i), t2)) continue;
    std::ostringstream out;
    out.precision(17);
    out << what << " (highway " << dtype_name(got.dtype()) << " vs reference "
        << dtype_name(want.dtype()) << ", shape " << shape_string(want.shape()) << "): element "
        << i << ": got " << gi << ", expected " << wi << " (atol " << t.atol << ", rtol " << t.rtol
        << ")";
    if (w2.data()) out << "; the float32 reference has " << w2.at(i);
    ADD_FAILURE() << out.str();
    return;
  }
}

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kDense:
      return "dense";
    case Layout::kSliced:
      return "sliced (last dim stride 2, offset 1)";
    case Layout::kFortran:
      return "permuted (column-major)";
    case Layout::kReversed:
      return "reversed (negative strides on dims 0 and last)";
  }
  return "?";
}

Strided restride(const Tensor& dense, Layout layout) {
  const Shape& shape = dense.shape();
  const int rank = dense.rank();
  Shape strides = contiguous_strides(shape);
  std::int64_t offset = 0;
  std::int64_t storage_numel = dense.numel();
  switch (layout) {
    case Layout::kDense:
      break;
    case Layout::kSliced:
      if (rank > 0) {
        Shape padded = shape;
        padded.back() = 2 * shape.back() + 1;
        strides = contiguous_strides(padded);
        strides.back() = 2;
        offset = 1;
        storage_numel = 1;
        for (std::int64_t d : padded) storage_numel *= d;
      }
      break;
    case Layout::kFortran: {
      std::int64_t s = 1;
      for (int k = 0; k < rank; ++k) {
        strides[static_cast<std::size_t>(k)] = s;
        s *= shape[static_cast<std::size_t>(k)];
      }
      break;
    }
    case Layout::kReversed:
      for (int k : {0, rank - 1}) {
        if (k < 0 || k >= rank) continue;
        auto& st = strides[static_cast<std::size_t>(k)];
        if (st < 0) continue;  // rank 1: dims 0 and last are one dim
        offset += (shape[static_cast<std::size_t>(k)] - 1) * st;
        st = -st;
      }
      break;
  }
  Tensor storage(dense.dtype(), {std::max<std::int64_t>(storage_numel, 1)});
  const double poison = is_floating(dense.dtype()) ? kNaN : double{1 << 30};
  for (std::int64_t i = 0; i < storage.numel(); ++i) testing::set_element(storage, i, poison);
  const std::size_t esize = dtype_size(dense.dtype());
  const auto* src = static_cast<const unsigned char*>(dense.data());
  auto* dst = static_cast<unsigned char*>(storage.data());
  for (std::int64_t flat = 0; flat < dense.numel(); ++flat) {
    std::int64_t rem = flat, off = offset;
    for (int k = rank - 1; k >= 0; --k) {
      const std::int64_t d = shape[static_cast<std::size_t>(k)];
      off += (rem % d) * strides[static_cast<std::size_t>(k)];
      rem /= d;
    }
    std::memcpy(dst + off * static_cast<std::int64_t>(esize),
                src + flat * static_cast<std::int64_t>(esize), esize);
  }
  Strided out;
  out.view =
      TensorView(dst + offset * static_cast<std::int64_t>(esize), dense.dtype(), shape, strides);
  out.storage = std::move(storage);
  return out;
}

Shape random_spatial(std::mt19937_64& rng, int rank, std::int64_t budget) {
  Shape dims;
  if (rank == 0) return dims;
  const double side = std::pow(static_cast<double>(std::max<std::int64_t>(budget, 1)), 1.0 / rank);
  const auto hi = std::max<std::int64_t>(1, static_cast<std::int64_t>(side * 1.6));
  std::uniform_int_distribution<std::int64_t> pick(1, hi);
  std::uniform_real_distribution<double> u(0, 1);
  for (int k = 0; k < rank; ++k) {
    std::int64_t d = pick(rng);
    if (d % 2 == 0 && u(rng) < 0.7) ++d;  // mostly odd sizes
    dims.push_back(d);
  }
  auto product = [&] {
    std::int64_t p = 1;
    for (std::int64_t d : dims) p *= d;
    return p;
  };
  while (product() > budget) {
    auto it = std::max_element(dims.begin(), dims.end());
    if (*it <= 1) break;
    *it = std::max<std::int64_t>(1, *it * 3 / 4);
  }
  return dims;
}

CaseSpec random_case(std::int64_t classes, ClassAxis axis, DType dtype, std::uint64_t seed,
                     std::optional<CaseSpec::Targets> targets) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  auto chance = [&](double p) { return u(rng) < p; };
  auto one_of = [&](auto... values) {
    using V = std::common_type_t<decltype(values)...>;
    const V all[] = {static_cast<V>(values)...};
    return all[std::uniform_int_distribution<std::size_t>(0, sizeof...(values) - 1)(rng)];
  };
  CaseSpec c;
  c.seed = seed;
  c.classes = classes;
  c.axis = axis;
  c.dtype = dtype;
  c.batch = std::uniform_int_distribution<std::int64_t>(1, 3)(rng);
  const int rank = std::uniform_int_distribution<int>(0, 4)(rng);
  // About 16k elements at most: big enough for several tiles per image at
  // small C, small enough for every target in well under a second.
  const std::int64_t budget = std::max<std::int64_t>(1, 16000 / (c.batch * classes));
  c.spatial = random_spatial(rng, rank, rank == 0 ? 1 : budget);
  if (rank == 0)
    c.batch =
        std::uniform_int_distribution<std::int64_t>(1, std::max<std::int64_t>(2, budget))(rng);
  c.targets = targets ? *targets
                      : one_of(CaseSpec::Targets::kInt32, CaseSpec::Targets::kInt64,
                               CaseSpec::Targets::kSoft);
  c.layout = one_of(Layout::kDense, Layout::kSliced, Layout::kFortran, Layout::kReversed);
  c.class_weight = chance(0.5);
  c.pixel_weight = chance(0.4);
  if (c.targets != CaseSpec::Targets::kSoft) {
    if (chance(0.7)) {
      c.ignore_index = one_of(std::int64_t{-100}, std::int64_t{-1}, classes + 3,
                              std::uniform_int_distribution<std::int64_t>(0, classes - 1)(rng));
    }
  } else if (chance(0.3)) {
    c.ignore_index = -100;  // dropped with probability targets (PyTorch's rule)
  }
  c.label_smoothing = chance(0.5) ? one_of(0.1, 0.35, 1.0) : 0.0;
  c.prob_floor = chance(0.35) ? one_of(1e-20, 1e-4) : 0.0;
  c.zero_target_log = chance(0.5) ? ZeroTargetLog::kZero : ZeroTargetLog::kIeee;
  c.zero_weight_mean = chance(0.5) ? ZeroWeightMean::kZero : ZeroWeightMean::kNaN;
  c.reduction = one_of(Reduction::kNone, Reduction::kSum, Reduction::kMean);
  c.want_prob = chance(0.5);
  c.want_log_prob = chance(0.5);
  c.want_entropy = chance(0.5);
  c.fused_grad_loss = chance(0.5);
  c.backward_grad_prob = chance(0.15);
  c.logit_range = one_of(2.0, 8.0, 8.0, 30.0, 60.0);
  c.quantized = chance(0.15);
  c.kl_log_target = chance(0.5);
  c.kl_reduction =
      one_of(Reduction::kNone, Reduction::kSum, Reduction::kMean, Reduction::kBatchMean);
  return c;
}

namespace {

// Whether the highway backend runs `op` for the case: softmax_backward and
// kl_div are compared only where it does.
bool highway_runs(dispatch::Op op, const CaseSpec& c) {
  const core::Geometry g{c.batch, c.classes, checked_numel(c.spatial, "spatial"),
                         c.axis == ClassAxis::kLast};
  return dispatch::backends().front()->name() == "highway" &&
         dispatch::backends().front()->declines(op, g, c.dtype).empty();
}

}  // namespace

CaseInputs make_inputs(const CaseSpec& c) {
  std::mt19937_64 rng(c.seed ^ 0x9e3779b97f4a7c15ULL);
  std::uniform_real_distribution<double> u(0, 1);
  const auto put = [&](Tensor& t, std::int64_t i, double v) {
    testing::set_element(t, i, c.float32_values ? static_cast<double>(static_cast<float>(v)) : v);
  };
  const auto uniform = [&](const Shape& shape, double lo, double hi, std::uint64_t seed) {
    if (c.float32_values && c.dtype != DType::kFloat32) {
      return testing::random_uniform(DType::kFloat32, shape, lo, hi, seed).to(c.dtype);
    }
    return testing::random_uniform(c.dtype, shape, lo, hi, seed);
  };
  CaseInputs in;
  const Shape xs = c.logits_shape(), ms = c.map_shape();

  Tensor x(c.dtype, xs);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    double v = (2 * u(rng) - 1) * c.logit_range;
    if (c.quantized) v = std::round(v);
    put(x, i, v);
  }
  in.logits = restride(x, c.layout);

  const std::int64_t M = checked_numel(ms, "map");
  if (c.targets == CaseSpec::Targets::kSoft) {
    // Rows of probabilities over the class axis, a fifth of them exactly 0.
    Tensor t(c.dtype, xs);
    const std::int64_t C = c.classes;
    const std::int64_t P = M / c.batch;
    std::vector<double> row(static_cast<std::size_t>(C));
    for (std::int64_t i = 0; i < M; ++i) {
      double sum = 0;
      for (auto& v : row) sum += v = u(rng) < 0.2 ? 0.0 : u(rng);
      const std::int64_t n = i / P, p = i % P;
      for (std::int64_t k = 0; k < C; ++k) {
        const std::int64_t flat = c.axis == ClassAxis::kFirst ? (n * C + k) * P + p : i * C + k;
        put(t, flat, sum > 0 ? row[static_cast<std::size_t>(k)] / sum : 0.0);
      }
    }
    in.targets = restride(t, c.layout);
  } else {
    const DType ld = c.targets == CaseSpec::Targets::kInt32 ? DType::kInt32 : DType::kInt64;
    Tensor y = testing::random_labels(ld, ms, c.classes, c.seed + 1);
    if (c.ignore_index) {
      for (std::int64_t i = 0; i < M; ++i) {
        if (u(rng) < 0.2) testing::set_element(y, i, static_cast<double>(*c.ignore_index));
      }
    }
    in.targets = restride(y, c.layout);
  }

  CrossEntropyOptions& o = in.options;
  o.class_axis = c.axis;
  if (c.class_weight) {
    Tensor w(c.dtype, {c.classes});
    for (std::int64_t k = 0; k < c.classes; ++k) {
      put(w, k, u(rng) < 0.1 ? 0.0 : 2 * u(rng));
    }
    in.class_weight = restride(w, c.layout);
    o.class_weight = in.class_weight.view;
  }
  if (c.pixel_weight) {
    Tensor a(c.dtype, ms);
    for (std::int64_t i = 0; i < M; ++i) put(a, i, u(rng) < 0.1 ? 0.0 : 2 * u(rng));
    in.pixel_weight = restride(a, c.layout);
    o.pixel_weight = in.pixel_weight.view;
  }
  o.ignore_index = c.ignore_index;
  o.reduction = c.reduction;
  o.label_smoothing = c.label_smoothing;
  o.zero_weight_mean = c.zero_weight_mean;
  o.prob_floor = c.prob_floor;
  o.zero_target_log = c.zero_target_log;
  o.want_prob = c.want_prob;
  o.want_log_prob = c.want_log_prob;
  o.want_entropy = c.want_entropy;

  // Upstream gradients: a map for reduction none, a scalar otherwise.
  if (c.reduction == Reduction::kNone) {
    Tensor g = uniform(ms, -1, 1, c.seed + 2);
    in.grad_map = restride(g, c.layout);
    in.backward_grads.loss = in.grad_map.view;
  } else {
    in.grad_scalar = Tensor::scalar(c.dtype, -1.25);
    in.backward_grads.loss = in.grad_scalar.view();
  }
  if (c.fused_grad_loss) in.fused_grads.loss = in.backward_grads.loss;
  in.with_kl = highway_runs(dispatch::Op::kKlDiv, c);
  if (in.with_kl) {
    // Probabilities with exact zeros (log_target false) or log-probabilities.
    Tensor kt(c.dtype, xs);
    for (std::int64_t i = 0; i < kt.numel(); ++i) {
      put(kt, i, c.kl_log_target ? -6 * u(rng) : (u(rng) < 0.2 ? 0.0 : u(rng)));
    }
    in.kl_target = restride(kt, c.layout);
    in.kl_options.class_axis = c.axis;
    in.kl_options.log_target = c.kl_log_target;
    in.kl_options.reduction = c.kl_reduction;
    if (c.kl_reduction == Reduction::kNone) {
      in.kl_grad_map = restride(uniform(xs, -1, 1, c.seed + 5), c.layout);
    } else {
      in.kl_grad_scalar = Tensor::scalar(c.dtype, 0.8);
    }
  }
  in.grad_softmax = restride(uniform(xs, -1, 1, c.seed + 4), c.layout);
  if (c.backward_grad_prob) {
    in.grad_prob = restride(uniform(xs, -1, 1, c.seed + 3), c.layout);
    in.backward_grads.prob = in.grad_prob.view;
  }
  return in;
}

CaseOutputs run_case(const CaseInputs& in) {
  CaseOutputs out;
  const TensorView& x = in.logits.view;
  out.forward = cross_entropy(x, in.targets.view, in.options);
  out.backward = cross_entropy_backward(x, in.targets.view, in.backward_grads, in.options);
  out.fused = cross_entropy_forward_backward(x, in.targets.view, in.options, in.fused_grads);
  out.softmax = softmax(x, in.options.class_axis);
  out.log_softmax = log_softmax(x, in.options.class_axis);
  out.entropy = entropy(x, in.options.class_axis);
  if (in.with_kl) {
    out.kl = kl_div(x, in.kl_target.view, in.kl_options);
    const TensorView grad = in.kl_options.reduction == Reduction::kNone ? in.kl_grad_map.view
                                                                        : in.kl_grad_scalar.view();
    out.kl_backward = kl_div_backward(x, in.kl_target.view, grad, in.kl_options);
  }
  return out;
}

void compare_results(const CrossEntropyResult& got, const CrossEntropyResult& want,
                     Reduction reduction, const std::string& what,
                     const CrossEntropyResult* same_dtype) {
  const auto also = [&](const Tensor CrossEntropyResult::*member) {
    return same_dtype ? &(same_dtype->*member) : nullptr;
  };
  expect_close(got.loss, want.loss, reduction == Reduction::kNone ? Kind::kMap : Kind::kReduced,
               what + " loss", also(&CrossEntropyResult::loss));
  expect_close(got.prob, want.prob, Kind::kProb, what + " prob", also(&CrossEntropyResult::prob));
  expect_close(got.log_prob, want.log_prob, Kind::kMap, what + " log_prob",
               also(&CrossEntropyResult::log_prob));
  expect_close(got.entropy, want.entropy, Kind::kMap, what + " entropy",
               also(&CrossEntropyResult::entropy));
  expect_close(got.grad_logits, want.grad_logits, Kind::kGrad, what + " grad_logits",
               also(&CrossEntropyResult::grad_logits));
}

namespace {

void compare_outputs(const CaseOutputs& got, const CaseOutputs& want, Reduction reduction,
                     const CaseOutputs* same_dtype) {
  const auto also = [&](const Tensor CaseOutputs::*member) {
    return same_dtype ? &(same_dtype->*member) : nullptr;
  };
  compare_results(got.forward, want.forward, reduction, "cross_entropy",
                  same_dtype ? &same_dtype->forward : nullptr);
  expect_close(got.backward, want.backward, Kind::kGrad, "cross_entropy_backward",
               also(&CaseOutputs::backward));
  compare_results(got.fused, want.fused, reduction, "cross_entropy_forward_backward",
                  same_dtype ? &same_dtype->fused : nullptr);
  expect_close(got.softmax, want.softmax, Kind::kProb, "softmax", also(&CaseOutputs::softmax));
  expect_close(got.log_softmax, want.log_softmax, Kind::kMap, "log_softmax",
               also(&CaseOutputs::log_softmax));
  expect_close(got.entropy, want.entropy, Kind::kMap, "entropy", also(&CaseOutputs::entropy));
  expect_close(got.softmax_backward, want.softmax_backward, Kind::kGrad, "softmax_backward",
               also(&CaseOutputs::softmax_backward));
  expect_close(got.log_softmax_backward, want.log_softmax_backward, Kind::kGrad,
               "log_softmax_backward", also(&CaseOutputs::log_softmax_backward));
  expect_close(got.kl, want.kl, got.kl.rank() == 0 ? Kind::kReduced : Kind::kMap, "kl_div",
               also(&CaseOutputs::kl));
  expect_close(got.kl_backward, want.kl_backward, Kind::kGrad, "kl_div_backward",
               also(&CaseOutputs::kl_backward));
}

void run_softmax_backward(const CaseInputs& in, const Tensor& prob, const Tensor& log_prob,
                          CaseOutputs& out) {
  const ClassAxis axis = in.options.class_axis;
  out.softmax_backward = softmax_backward(prob, in.grad_softmax.view, axis);
  out.log_softmax_backward = log_softmax_backward(log_prob, in.grad_softmax.view, axis);
}

}  // namespace

void check_case(const CaseSpec& c, std::int64_t target) {
  SCOPED_TRACE(c.describe());
  const CaseInputs in = make_inputs(c);
  CaseInputs wide_storage;
  const CaseInputs* wide = &in;
  if (c.dtype != DType::kFloat64) {
    CaseSpec c64 = c;
    c64.dtype = DType::kFloat64;
    c64.float32_values = true;
    wide_storage = make_inputs(c64);
    wide = &wide_storage;
  }
  const bool with_softmax_backward = highway_runs(dispatch::Op::kSoftmaxBackward, c);
  CaseOutputs want, want_same_dtype;
  // softmax_backward's inputs: P and log P (the reference's, in the case's dtype).
  Tensor prob, log_prob;
  {
    ScopedBackend reference("reference");
    want = run_case(*wide);
    if (wide != &in) want_same_dtype = run_case(in);
    if (with_softmax_backward) {
      prob = want.softmax.to(c.dtype);
      log_prob = want.log_softmax.to(c.dtype);
      run_softmax_backward(*wide, prob.to(DType::kFloat64), log_prob.to(DType::kFloat64), want);
      if (wide != &in) run_softmax_backward(in, prob, log_prob, want_same_dtype);
    }
  }
  ScopedBackend highway("highway");
  CaseOutputs got = run_case(in);
  EXPECT_EQ(dispatched_target(), target) << "the forced target did not run";
  if (with_softmax_backward) run_softmax_backward(in, prob, log_prob, got);
  compare_outputs(got, want, c.reduction, wide != &in ? &want_same_dtype : nullptr);
}

namespace {

void expect_bitwise(const Snapshot& got, const Snapshot& want, int threads) {
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (std::size_t k = 0; k < want.tensors.size(); ++k) {
    EXPECT_TRUE(bitwise_equal(got.tensors[k], want.tensors[k]))
        << "output " << k << " (" << shape_string(want.tensors[k].shape()) << ") differs with "
        << threads << " threads from 1 thread";
  }
  ASSERT_EQ(got.scalars.size(), want.scalars.size());
  for (std::size_t k = 0; k < want.scalars.size(); ++k) {
    EXPECT_EQ(std::memcmp(&got.scalars[k], &want.scalars[k], sizeof(double)), 0)
        << "scalar " << k << " differs with " << threads << " threads: " << got.scalars[k] << " vs "
        << want.scalars[k];
  }
}

}  // namespace

void check_thread_counts(const std::function<Snapshot()>& run) {
  ScopedBackend unset(nullptr);  // the default backend: highway
  Snapshot want;
  {
    ScopedThreads one(1);
    want = run();
  }
  for (int threads : {2, 3, 7}) {
    ScopedThreads n(threads);
    expect_bitwise(run(), want, threads);
  }
  // And once more on one thread: runs agree too.
  ScopedThreads one(1);
  expect_bitwise(run(), want, 1);
}

}  // namespace spatialsoftmax::testing
