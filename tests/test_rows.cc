// The CUDA kernels' per-row arithmetic (reference/rows.h) on the CPU,
// against the scalar reference. With Solo (a thread per position) the rows
// add in the reference's order, so every output is bitwise the reference's.
// With an emulated warp (32 threads sharing each row through xor
// butterflies) or block (256 threads and a fixed tree), as the class-last
// kernels share rows, the sums add in another order: outputs within float
// rounding of the reference, and the same bits on every lane.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "reference/reference.h"
#include "reference/rows.h"

namespace spatialsoftmax::core {
namespace {

constexpr int kWarpLanes = 32;
constexpr int kBlockThreads = 256;

// The threads of a CUDA warp or block as std::threads: each reduction writes
// the lane's value, waits for every lane, and combines the values in the
// order of src/cuda: a warp's xor butterfly (group.cuh: lane l takes
// op(v[l], v[l ^ offset]) for offset 16, ..., 1) or a block's tree
// (launch.cuh's block_reduce: slot t takes op(v[t], v[t + w]) for w = 128,
// ..., 1, and every thread reads slot 0).
class Team {
 public:
  Team(int lanes, bool tree) : lanes_(lanes), tree_(tree), sync_(lanes), slots_(lanes) {}
  int lanes() const { return lanes_; }

  template <class T, class Op>
  T all_reduce(int lane, T v, Op op) {
    slots_[lane] = static_cast<double>(v);  // exact for float and double
    sync_.arrive_and_wait();
    std::vector<T> values(static_cast<std::size_t>(lanes_));
    for (int l = 0; l < lanes_; ++l) values[l] = static_cast<T>(slots_[l]);
    if (tree_) {
      for (int width = lanes_ / 2; width > 0; width /= 2)
        for (int t = 0; t < width; ++t) values[t] = op(values[t], values[t + width]);
    } else {
      for (int offset = lanes_ / 2; offset > 0; offset /= 2) {
        std::vector<T> next(values.size());
        for (int l = 0; l < lanes_; ++l) next[l] = op(values[l], values[l ^ offset]);
        values.swap(next);
      }
    }
    sync_.arrive_and_wait();  // every lane has read the slots
    return values[tree_ ? 0 : lane];
  }
  // __syncwarp / __syncthreads: every lane gets here before any goes on.
  void barrier() { sync_.arrive_and_wait(); }

 private:
  int lanes_;
  bool tree_;
  std::barrier<> sync_;
  std::vector<double> slots_;
};

struct Lane {
  std::int64_t first = 0;
  std::int64_t step = kWarpLanes;
  Team* team = nullptr;
  template <class T>
  T max(T v) const {
    return team->all_reduce(static_cast<int>(first), v,
                            [](T a, T b) { return rows::max_keep_nan(a, b); });
  }
  template <class T>
  T sum(T v) const {
    return team->all_reduce(static_cast<int>(first), v, std::plus<T>());
  }
  void sync() const { team->barrier(); }
};

// Who shares a row: one thread, a warp's 32 lanes, or a block's 256 threads.
enum class Sharing { kSolo, kWarp, kBlock };

// row(i, group) for every position. Returns the results of lane 0, after
// checking that every lane returned the same bits.
template <class Row>
std::vector<double> each_row(std::int64_t positions, Sharing sharing, Row row) {
  std::vector<double> out(static_cast<std::size_t>(positions));
  if (sharing == Sharing::kSolo) {
    for (std::int64_t i = 0; i < positions; ++i) out[i] = row(i, rows::Solo{});
    return out;
  }
  const bool block = sharing == Sharing::kBlock;
  Team team(block ? kBlockThreads : kWarpLanes, block);
  const int lanes = team.lanes();
  std::vector<std::vector<double>> per_lane(lanes, std::vector<double>(out.size()));
  std::vector<std::thread> threads;
  for (int l = 0; l < lanes; ++l) {
    threads.emplace_back([&, l] {
      for (std::int64_t i = 0; i < positions; ++i) per_lane[l][i] = row(i, Lane{l, lanes, &team});
    });
  }
  for (std::thread& t : threads) t.join();
  for (int l = 1; l < lanes; ++l) {
    for (std::size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(std::memcmp(&per_lane[l][i], &per_lane[0][i], sizeof(double)), 0)
          << "lane " << l << " position " << i << ": the lanes disagree on a reduction";
    }
  }
  return per_lane[0];
}

struct Case {
  std::int64_t batch = 2, classes = 5, pixels = 7;
  bool class_last = false;
  bool soft = false, nll = false;
  bool class_weight = false, pixel_weight = false, ignore = false;
  double smoothing = 0, prob_floor = 0;
  bool zero_target_log = false;
  bool outputs = false;           // P, logP, H, loss map
  bool backward = false;          // dX from grad_loss_scale
  bool grad_map = false;          // ... or from a map
  bool upstream_outputs = false;  // gP, glogP, gH
  std::uint64_t seed = 1;

  std::string describe() const {
    return "N " + std::to_string(batch) + " C " + std::to_string(classes) + " P " +
           std::to_string(pixels) + (class_last ? " class-last" : " class-first") +
           (soft  ? " soft"
            : nll ? " nll"
                  : " index") +
           (class_weight ? " cw" : "") + (pixel_weight ? " pw" : "") + (ignore ? " ignore" : "") +
           " eps " + std::to_string(smoothing) + " floor " + std::to_string(prob_floor) +
           (zero_target_log ? " ztl" : "") + (outputs ? " outputs" : "") +
           (backward ? " backward" : "") + (grad_map ? " grad-map" : "") +
           (upstream_outputs ? " upstream-outputs" : "") + " seed " + std::to_string(seed);
  }
};

template <class T>
struct Buffers {
  std::vector<T> loss_map, prob, log_prob, entropy, grad;
  double loss_sum = 0;
  void point(CrossEntropyProblem<T>& pb, const Case& k, std::int64_t elements,
             std::int64_t positions) {
    if (k.outputs) {
      loss_map.assign(positions, T(-7));
      pb.loss_map = loss_map.data();
      if (!k.nll) {
        prob.assign(elements, T(-7));
        log_prob.assign(elements, T(-7));
        entropy.assign(positions, T(-7));
        pb.prob = prob.data();
        pb.log_prob = log_prob.data();
        pb.entropy = entropy.data();
      }
    }
    if (k.backward) {
      grad.assign(elements, T(-7));
      pb.grad_logits = grad.data();
    }
    pb.loss_sum = &loss_sum;
  }
};

// Relative tolerance of results computed in T.
template <class T>
constexpr double kTolerance = std::is_same_v<T, float> ? 2e-5 : 1e-12;

template <class T>
void expect_near_all(const std::vector<T>& got, const std::vector<T>& want, bool bitwise,
                     const std::string& what, double tolerance = kTolerance<T>) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t e = 0; e < got.size(); ++e) {
    if (bitwise) {
      ASSERT_EQ(std::memcmp(&got[e], &want[e], sizeof(T)), 0)
          << what << "[" << e << "]: " << got[e] << " vs the reference's " << want[e];
    } else if (!(std::isnan(got[e]) && std::isnan(want[e]))) {
      ASSERT_LE(std::abs(double(got[e]) - double(want[e])),
                tolerance * (1 + std::abs(double(want[e]))))
          << what << "[" << e << "]: " << got[e] << " vs the reference's " << want[e];
    }
  }
}

const char* sharing_name(Sharing s) {
  return s == Sharing::kSolo ? " solo" : s == Sharing::kWarp ? " warp" : " block";
}

template <class T>
void check_cross_entropy(const Case& k, Sharing sharing) {
  SCOPED_TRACE(k.describe() + sharing_name(sharing));
  std::mt19937_64 rng(k.seed);
  std::uniform_real_distribution<double> logit(-6, 6), unit(0, 1);
  const Geometry g{k.batch, k.classes, k.pixels, k.class_last};
  const std::int64_t M = g.positions(), E = g.elements();
  std::vector<T> x(E), target(k.soft ? E : 0), cw(k.classes), pw(M), gmap(M), gp(E), glp(E), gh(M);
  for (T& v : x) v = static_cast<T>(k.nll ? -6 * unit(rng) : logit(rng));
  for (T& v : cw) v = static_cast<T>(0.25 + unit(rng));
  for (T& v : pw) v = static_cast<T>(unit(rng) < 0.2 ? 0.0 : unit(rng) * 2);
  for (T& v : gmap) v = static_cast<T>(logit(rng) / 3);
  for (T& v : gp) v = static_cast<T>(logit(rng) / 3);
  for (T& v : glp) v = static_cast<T>(logit(rng) / 3);
  for (T& v : gh) v = static_cast<T>(logit(rng) / 3);
  std::vector<std::int64_t> labels(M);
  for (std::int64_t i = 0; i < M; ++i) {
    labels[i] = static_cast<std::int64_t>(unit(rng) * static_cast<double>(k.classes));
    if (k.ignore && unit(rng) < 0.25) labels[i] = -100;
    if (k.soft) {  // rows of probabilities, some exact zeros
      double total = 0;
      for (std::int64_t c = 0; c < k.classes; ++c) {
        const double v = unit(rng) < 0.3 ? 0.0 : unit(rng);
        target[g.base(i) + c * g.class_stride()] = static_cast<T>(v);
        total += v;
      }
      for (std::int64_t c = 0; c < k.classes && total > 0; ++c) {
        T& t = target[g.base(i) + c * g.class_stride()];
        t = static_cast<T>(t / total);
      }
    }
  }
  CrossEntropyProblem<T> pb;
  pb.geom = g;
  pb.logits = x.data();
  pb.logits_are_log_probs = k.nll;
  pb.labels = {labels.data(), DType::kInt64};
  pb.target_probs = k.soft ? target.data() : nullptr;
  pb.class_weight = k.class_weight ? cw.data() : nullptr;
  pb.pixel_weight = k.pixel_weight ? pw.data() : nullptr;
  pb.has_ignore_index = k.ignore;
  pb.ignore_index = -100;
  pb.label_smoothing = static_cast<T>(k.smoothing);
  pb.prob_floor = static_cast<T>(k.prob_floor);
  pb.zero_target_log_is_zero = k.zero_target_log;
  pb.grad_loss_scale = static_cast<T>(0.37);
  if (k.backward && k.grad_map) pb.grad_loss_map = gmap.data();
  if (k.backward && k.upstream_outputs && !k.nll) {
    pb.grad_prob = gp.data();
    pb.grad_log_prob = glp.data();
    pb.grad_entropy = gh.data();
  }

  Buffers<T> want, got;
  CrossEntropyProblem<T> ref = pb;
  want.point(ref, k, E, M);
  reference::cross_entropy(ref);
  CrossEntropyProblem<T> row = pb;
  got.point(row, k, E, M);
  row.loss_sum = nullptr;
  const std::vector<double> losses = each_row(M, sharing, [&](std::int64_t i, auto group) {
    return static_cast<double>(rows::cross_entropy_row(row, i, row.grad_loss_scale, group));
  });
  for (double l : losses) got.loss_sum += l;

  const bool bitwise = sharing == Sharing::kSolo;
  expect_near_all(got.loss_map, want.loss_map, bitwise, "loss map");
  expect_near_all(got.prob, want.prob, bitwise, "P");
  expect_near_all(got.log_prob, want.log_prob, bitwise, "logP");
  expect_near_all(got.entropy, want.entropy, bitwise, "H");
  expect_near_all(got.grad, want.grad, bitwise, "dX");
  expect_near_all(std::vector<double>{got.loss_sum}, std::vector<double>{want.loss_sum}, bitwise,
                  "loss sum", kTolerance<T>);
}

std::vector<Case> cross_entropy_cases() {
  std::vector<Case> cases;
  std::uint64_t seed = 1;
  for (std::int64_t classes : {1, 2, 5, 31, 32, 33, 70}) {
    for (bool class_last : {false, true}) {
      for (int variant = 0; variant < 9; ++variant) {
        Case k;
        k.classes = classes;
        k.class_last = class_last;
        k.seed = seed++;
        k.outputs = true;
        k.backward = true;
        switch (variant) {
          case 0:
            break;
          case 1:
            k.class_weight = k.pixel_weight = k.ignore = true;
            break;
          case 2:
            k.smoothing = 0.1;
            k.class_weight = true;
            k.ignore = true;
            break;
          case 3:
            k.soft = true;
            k.class_weight = k.pixel_weight = true;
            break;
          case 4:
            k.soft = true;
            k.zero_target_log = true;
            k.smoothing = 0.2;
            break;
          case 5:
            k.prob_floor = 1e-3;
            k.grad_map = true;
            break;
          case 6:
            k.nll = true;
            k.class_weight = k.ignore = true;
            break;
          case 7:
            k.upstream_outputs = true;
            k.grad_map = true;
            k.pixel_weight = true;
            break;
          case 8:
            k.backward = false;
            k.smoothing = 0.3;
            break;
        }
        cases.push_back(k);
      }
    }
  }
  return cases;
}

TEST(Rows, CrossEntropySoloIsTheReferenceBitwise) {
  for (const Case& k : cross_entropy_cases()) {
    check_cross_entropy<float>(k, Sharing::kSolo);
    check_cross_entropy<double>(k, Sharing::kSolo);
  }
}

TEST(Rows, CrossEntropyWarpMatchesTheReference) {
  for (const Case& k : cross_entropy_cases()) {
    check_cross_entropy<float>(k, Sharing::kWarp);
    check_cross_entropy<double>(k, Sharing::kWarp);
  }
}

// A block shares the rows of class-last problems beyond 1024 classes
// (group.cuh); its tree is checked here on rows of 33 and 70.
TEST(Rows, CrossEntropyBlockMatchesTheReference) {
  for (const Case& k : cross_entropy_cases()) {
    if (!k.class_last || k.classes < 33) continue;
    check_cross_entropy<float>(k, Sharing::kBlock);
  }
}

template <class T>
void check_kl_div(std::int64_t classes, bool class_last, bool log_target, bool grad_map,
                  Sharing sharing, std::uint64_t seed) {
  SCOPED_TRACE("C " + std::to_string(classes) + (class_last ? " class-last" : " class-first") +
               (log_target ? " log_target" : "") + (grad_map ? " grad map" : "") +
               sharing_name(sharing));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> logit(-5, 5), unit(0, 1);
  const Geometry g{2, classes, 5, class_last};
  const std::int64_t E = g.elements();
  std::vector<T> x(E), t(E), gm(E);
  for (T& v : x) v = static_cast<T>(logit(rng));
  for (T& v : t)
    v = static_cast<T>(log_target ? -4 * unit(rng) : (unit(rng) < 0.3 ? 0 : unit(rng)));
  for (T& v : gm) v = static_cast<T>(logit(rng));
  KlDivProblem<T> pb;
  pb.geom = g;
  pb.logits = x.data();
  pb.target = t.data();
  pb.log_target = log_target;
  pb.grad_map = grad_map ? gm.data() : nullptr;
  pb.grad_scale = static_cast<T>(0.3);
  std::vector<T> want_map(E), got_map(E), want_dx(E), got_dx(E);
  double want_sum = 0;
  KlDivProblem<T> ref = pb;
  ref.out_map = want_map.data();
  ref.out_sum = &want_sum;
  ref.grad_logits = want_dx.data();
  reference::kl_div(ref);
  KlDivProblem<T> row = pb;
  row.out_map = got_map.data();
  row.grad_logits = got_dx.data();
  const std::vector<double> sums = each_row(
      g.positions(), sharing,
      [&](std::int64_t i, auto group) { return rows::kl_div_row(row, i, row.grad_scale, group); });
  double got_sum = 0;
  for (double s : sums) got_sum += s;
  expect_near_all(got_map, want_map, sharing == Sharing::kSolo, "KL map");
  expect_near_all(got_dx, want_dx, sharing == Sharing::kSolo, "dX");
  // The reference adds every element into one sum; a row's partial sum
  // first, then the rows: another order even on one thread.
  expect_near_all(std::vector<double>{got_sum}, std::vector<double>{want_sum}, false, "sum",
                  kTolerance<T>);
}

TEST(Rows, KlDivMatchesTheReference) {
  std::uint64_t seed = 100;
  for (std::int64_t classes : {1, 3, 32, 45}) {
    for (bool class_last : {false, true}) {
      for (bool log_target : {false, true}) {
        for (bool grad_map : {false, true}) {
          for (Sharing sharing : {Sharing::kSolo, Sharing::kWarp, Sharing::kBlock}) {
            if (sharing == Sharing::kBlock && (classes < 32 || !class_last)) continue;
            check_kl_div<float>(classes, class_last, log_target, grad_map, sharing, seed);
            check_kl_div<double>(classes, class_last, log_target, grad_map, sharing, seed++);
          }
        }
      }
    }
  }
}

template <class T>
void check_prob_minus_target(std::int64_t classes, bool class_last, bool soft, Sharing sharing,
                             std::uint64_t seed) {
  SCOPED_TRACE("C " + std::to_string(classes) + (class_last ? " class-last" : " class-first") +
               (soft ? " soft" : " labels") + sharing_name(sharing));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0, 1);
  const Geometry g{3, classes, 4, class_last};
  const std::int64_t M = g.positions(), E = g.elements();
  std::vector<T> p(E), t(E), w(M);
  std::vector<std::int32_t> labels(M);
  for (T& v : p) v = static_cast<T>(unit(rng));
  for (T& v : t) v = static_cast<T>(unit(rng));
  for (T& v : w) v = static_cast<T>(2 * unit(rng));
  for (auto& y : labels)
    y = unit(rng) < 0.2 ? -1 : static_cast<std::int32_t>(unit(rng) * static_cast<double>(classes));
  ProbMinusTargetProblem<T> pb;
  pb.geom = g;
  pb.prob = p.data();
  pb.labels = {labels.data(), DType::kInt32};
  pb.target_probs = soft ? t.data() : nullptr;
  pb.pixel_weight = w.data();
  pb.has_ignore_index = true;
  pb.ignore_index = -1;
  pb.coef = static_cast<T>(0.7);
  std::vector<T> want(E), got(E, T(-7));
  ProbMinusTargetProblem<T> ref = pb;
  ref.grad_logits = want.data();
  reference::prob_minus_target(ref);
  ProbMinusTargetProblem<T> row = pb;
  row.grad_logits = got.data();
  each_row(M, sharing, [&](std::int64_t i, auto group) {
    rows::prob_minus_target_row(row, i, row.coef, group);
    return 0.0;
  });
  expect_near_all(got, want, true, "dX");  // elementwise: the same bits in any group
}

TEST(Rows, ProbMinusTargetIsTheReferenceBitwise) {
  std::uint64_t seed = 500;
  for (std::int64_t classes : {1, 4, 33}) {
    for (bool class_last : {false, true}) {
      for (bool soft : {false, true}) {
        for (Sharing sharing : {Sharing::kSolo, Sharing::kWarp, Sharing::kBlock}) {
          if (sharing == Sharing::kBlock && (classes < 32 || !class_last)) continue;
          check_prob_minus_target<float>(classes, class_last, soft, sharing, seed);
          check_prob_minus_target<double>(classes, class_last, soft, sharing, seed++);
        }
      }
    }
  }
}

// A label that is neither ignored nor a class (the device's check reports
// it) is read as ignored: no out-of-bounds read of the class weights, and
// the row's outputs stay finite.
TEST(Rows, ABadLabelIsReadAsIgnored) {
  const Geometry g{1, 3, 1, true};
  const std::vector<double> x{0.5, -1, 2}, cw{1, 2, 3};
  std::vector<double> dx(3, -7);
  for (std::int64_t bad : {-5, 3, 1000000}) {
    CrossEntropyProblem<double> pb;
    pb.geom = g;
    pb.logits = x.data();
    pb.labels = {&bad, DType::kInt64};
    pb.class_weight = cw.data();
    pb.grad_logits = dx.data();
    pb.grad_loss_scale = 1;
    EXPECT_EQ(rows::cross_entropy_row(pb, 0, 1.0, rows::Solo{}), 0.0) << bad;
    for (double d : dx) EXPECT_EQ(d, 0.0) << bad;
  }
}

// dX written over X (the in-place form): each lane reads the label's logit
// before the lane owning it overwrites it (Group::sync), so the result is
// the out-of-place one.
TEST(Rows, CrossEntropyInPlaceOverTheLogits) {
  for (Sharing sharing : {Sharing::kSolo, Sharing::kWarp, Sharing::kBlock}) {
    for (std::int64_t classes : {3, 40, 300}) {
      SCOPED_TRACE(std::string(sharing_name(sharing)) + " C " + std::to_string(classes));
      const Geometry g{2, classes, 3, true};
      std::mt19937_64 rng(classes);
      std::uniform_real_distribution<double> logit(-4, 4);
      std::vector<double> x(static_cast<std::size_t>(g.elements()));
      for (double& v : x) v = logit(rng);
      std::vector<std::int64_t> labels(static_cast<std::size_t>(g.positions()));
      for (std::size_t i = 0; i < labels.size(); ++i)
        labels[i] = static_cast<std::int64_t>(i) % classes;
      CrossEntropyProblem<double> pb;
      pb.geom = g;
      pb.labels = {labels.data(), DType::kInt64};
      pb.grad_loss_scale = 0.5;
      std::vector<double> want(x.size()), over = x;
      CrossEntropyProblem<double> ref = pb;
      ref.logits = x.data();
      ref.grad_logits = want.data();
      reference::cross_entropy(ref);
      CrossEntropyProblem<double> row = pb;
      row.logits = over.data();
      row.grad_logits = over.data();
      each_row(g.positions(), sharing, [&](std::int64_t i, auto group) {
        return rows::cross_entropy_row(row, i, row.grad_loss_scale, group);
      });
      expect_near_all(over, want, sharing == Sharing::kSolo, "dX over X");
    }
  }
}

// A staged row (the block kernels' shared-memory copy of the logits) gives
// the bits of reading X itself.
TEST(Rows, CrossEntropyFromAStagedRowIsTheSameBits) {
  for (Sharing sharing : {Sharing::kSolo, Sharing::kBlock}) {
    SCOPED_TRACE(sharing_name(sharing));
    const Geometry g{1, 300, 3, true};
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> logit(-5, 5);
    std::vector<float> x(static_cast<std::size_t>(g.elements()));
    for (float& v : x) v = static_cast<float>(logit(rng));
    std::vector<std::int64_t> labels = {4, 299, 0};
    CrossEntropyProblem<float> pb;
    pb.geom = g;
    pb.logits = x.data();
    pb.labels = {labels.data(), DType::kInt64};
    pb.label_smoothing = 0.1f;
    std::vector<float> direct(x.size()), staged(x.size());
    for (bool stage : {false, true}) {
      CrossEntropyProblem<float> row = pb;
      row.grad_logits = stage ? staged.data() : direct.data();
      each_row(g.positions(), sharing, [&](std::int64_t i, auto group) {
        const std::vector<float> copy(x.begin() + g.base(i), x.begin() + g.base(i) + g.classes);
        return static_cast<double>(
            rows::cross_entropy_row(row, i, 1.0f, group, stage ? copy.data() : nullptr));
      });
    }
    expect_near_all(staged, direct, true, "dX from the staged row");
  }
}

// The reductions keep a NaN and reach every lane in the same bits.
TEST(Rows, MaxKeepsNaNInEveryOrder) {
  const double nan = std::nan("");
  EXPECT_TRUE(std::isnan(rows::max_keep_nan(nan, 1.0)));
  EXPECT_TRUE(std::isnan(rows::max_keep_nan(1.0, nan)));
  EXPECT_EQ(rows::max_keep_nan(-3.0, 2.0), 2.0);
  EXPECT_EQ(rows::max_keep_nan(2.0, -3.0), 2.0);
  std::vector<double> row(40, 0.0);
  row[37] = nan;
  const std::vector<double> maxima = each_row(1, Sharing::kWarp, [&](std::int64_t, auto group) {
    return rows::row_softmax(row.data(), 1, 40, group).max;
  });
  EXPECT_TRUE(std::isnan(maxima[0]));
}

}  // namespace
}  // namespace spatialsoftmax::core
