// 16-bit problems (bfloat16, float16) run by the kernels of a wider type W:
// float32 for the SIMD kernels, float64 for the reference. The positions
// are cut into blocks of about kStagedElements values per X-shaped tensor
// (the kernels' own block rule, cpu::for_each_span: never across an image);
// each block's inputs are widened into per-thread buffers, which stay in
// the core's cache, a W problem over them runs on that thread, and its
// outputs are narrowed back. So memory sees 16-bit values only: half the
// bytes of float32, with float32 math and float64 loss sums.
//
// The blocks depend on the geometry only, each block's sums are kept apart
// and added in block order, and a kernel called from a block runs on the
// block's thread (parallel::for_each_block nests serially): results are the
// same bits at every thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/blocks.h"
#include "cpu/kernels.h"
#include "reference/problems.h"

namespace spatialsoftmax::dispatch::staging {

// Values per staged X-shaped tensor in a block: a cross-entropy block with
// every input and output (seven of them) in float32 is 448 KiB.
inline constexpr std::int64_t kStagedElements = 16384;

template <class H, class W>
void widen(const H* from, W* to, std::int64_t n) {
  if constexpr (std::is_same_v<W, float>) {
    cpu::widen(from, to, n);
  } else {
    for (std::int64_t i = 0; i < n; ++i) to[i] = to_float(from[i]);
  }
}

template <class W, class H>
void narrow(const W* from, H* to, std::int64_t n) {
  if constexpr (std::is_same_v<W, float>) {
    cpu::narrow(from, to, n);
  } else {
    // float64 through float32, as PyTorch converts a double to bfloat16.
    for (std::int64_t i = 0; i < n; ++i) {
      const float v = static_cast<float>(from[i]);
      if constexpr (std::is_same_v<H, BFloat16>) {
        to[i] = to_bfloat16(v);
      } else {
        to[i] = to_float16(v);
      }
    }
  }
}

// A whole small tensor (class weights), widened; null stays null.
template <class W>
class Widened {
 public:
  template <class H>
  Widened(const H* from, std::int64_t n) {
    if (!from) return;
    values_.resize(static_cast<std::size_t>(n));
    widen(from, values_.data(), n);
  }
  const W* get() const { return values_.empty() ? nullptr : values_.data(); }

 private:
  std::vector<W> values_;
};

// One block of positions [i0, i0 + count) of a problem of geometry g: its
// W problem's geometry and, for each tensor handed to it, a widened input
// or an output buffer that write_back() narrows into the tensor.
template <class W, class H>
class Block {
 public:
  Block(const core::Geometry& g, std::int64_t i0, std::int64_t count)
      : g_(g), i0_(i0), count_(count) {
    // With one pixel the layouts coincide and blocks run across the batch.
    rows_ = !g.class_last && g.pixels > 1;
    geom_ = g.pixels == 1 ? core::Geometry{count, g.classes, 1, g.class_last}
                          : core::Geometry{1, g.classes, count, g.class_last};
    Buffer& buffer = thread_buffer();
    const auto needed = static_cast<std::size_t>(kSlots * count * (g.classes + 1));
    if (buffer.size < needed) {
      buffer.data = std::make_unique<W[]>(needed);
      buffer.size = needed;
    }
    next_ = buffer.data.get();
  }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  const core::Geometry& geom() const { return geom_; }
  // The sub-problem's position j is the problem's i0 + j.
  std::int64_t first_position() const { return i0_; }

  // Tensors of X's layout.
  const W* x_in(const H* from) {
    if (!from) return nullptr;
    W* to = take(count_ * g_.classes);
    for_x_runs([&](std::int64_t at, std::int64_t staged, std::int64_t n) {
      widen(from + at, to + staged, n);
    });
    return to;
  }
  W* x_out(H* to) {
    if (!to) return nullptr;
    W* from = take(count_ * g_.classes);
    pending_[pending_count_++] = {from, to, true};
    return from;
  }
  // Tensors of one value per position.
  const W* position_in(const H* from) {
    if (!from) return nullptr;
    W* to = take(count_);
    widen(from + i0_, to, count_);
    return to;
  }
  W* position_out(H* to) {
    if (!to) return nullptr;
    W* from = take(count_);
    pending_[pending_count_++] = {from, to, false};
    return from;
  }
  core::Labels labels(const core::Labels& labels) const {
    if (!labels.data) return labels;
    const auto* bytes = static_cast<const unsigned char*>(labels.data);
    return {bytes + i0_ * static_cast<std::int64_t>(dtype_size(labels.dtype)), labels.dtype};
  }

  void write_back() {
    for (int k = 0; k < pending_count_; ++k) {
      const Pending& p = pending_[k];
      if (!p.x_layout) {
        narrow(p.from, p.to + i0_, count_);
        continue;
      }
      for_x_runs([&](std::int64_t at, std::int64_t staged, std::int64_t n) {
        narrow(p.from + staged, p.to + at, n);
      });
    }
    pending_count_ = 0;
  }

 private:
  // Every problem hands a block at most this many tensors (cross-entropy:
  // seven of X's shape, five per position).
  static constexpr int kSlots = 7;
  struct Buffer {
    std::unique_ptr<W[]> data;
    std::size_t size = 0;
  };
  struct Pending {
    const W* from;
    H* to;
    bool x_layout;
  };
  static Buffer& thread_buffer() {
    thread_local Buffer buffer;
    return buffer;
  }
  W* take(std::int64_t n) {
    W* at = next_;
    next_ += n;
    return at;
  }
  // fn(offset in the tensor, offset in the buffer, length) for each run of
  // the block's values that is contiguous in both: a row per class where the
  // class axis is first, else one run.
  template <class F>
  void for_x_runs(F&& fn) const {
    if (!rows_) return fn(i0_ * g_.classes, 0, count_ * g_.classes);
    const std::int64_t n = i0_ / g_.pixels, p0 = i0_ % g_.pixels;
    for (std::int64_t c = 0; c < g_.classes; ++c) fn(g_.offset(n, c, p0), c * count_, count_);
  }

  core::Geometry g_, geom_;
  std::int64_t i0_, count_;
  bool rows_ = false;
  W* next_ = nullptr;
  Pending pending_[2 * kSlots] = {};
  int pending_count_ = 0;
};

inline std::int64_t block_positions(const core::Geometry& g) {
  return std::max<std::int64_t>(1, kStagedElements / std::max<std::int64_t>(g.classes, 1));
}
inline std::int64_t block_count(const core::Geometry& g) {
  return cpu::span_blocks(g, block_positions(g));
}
// fn(block, index) for the block_count(g) blocks of g, in parallel.
template <class W, class H, class F>
void for_each_block(const core::Geometry& g, F&& fn) {
  cpu::for_each_span(g, block_positions(g),
                     [&](std::int64_t b, std::int64_t i0, std::int64_t count) {
                       Block<W, H> block(g, i0, count);
                       fn(block, b);
                       block.write_back();
                     });
}

// A sum per block, added in block order.
class BlockSums {
 public:
  explicit BlockSums(std::int64_t blocks) : sums_(static_cast<std::size_t>(blocks), 0.0) {}
  double* at(std::int64_t b, bool wanted) {
    return wanted ? &sums_[static_cast<std::size_t>(b)] : nullptr;
  }
  void add_to(double* total) const {
    if (!total) return;
    for (const double s : sums_) *total += s;
  }

 private:
  std::vector<double> sums_;
};

// The problems. run(problem of W) runs one block's problem on this thread.

template <class W, class H, class Run>
void softmax(const core::SoftmaxProblem<H>& pb, Run&& run) {
  for_each_block<W, H>(pb.geom, [&](Block<W, H>& s, std::int64_t) {
    core::SoftmaxProblem<W> q;
    q.geom = s.geom();
    q.logits = s.x_in(pb.logits);
    q.prob = s.x_out(pb.prob);
    q.log_prob = s.x_out(pb.log_prob);
    q.entropy = s.position_out(pb.entropy);
    run(q);
  });
}

template <class W, class H, class Run>
void softmax_backward(const core::SoftmaxBackwardProblem<H>& pb, Run&& run) {
  for_each_block<W, H>(pb.geom, [&](Block<W, H>& s, std::int64_t) {
    core::SoftmaxBackwardProblem<W> q;
    q.geom = s.geom();
    q.from_log_softmax = pb.from_log_softmax;
    q.output = s.x_in(pb.output);
    q.grad_output = s.x_in(pb.grad_output);
    q.grad_logits = s.x_out(pb.grad_logits);
    run(q);
  });
}

template <class W, class H, class Run>
void cross_entropy(const core::CrossEntropyProblem<H>& pb, Run&& run) {
  const Widened<W> class_weight(pb.class_weight, pb.geom.classes);
  BlockSums loss_sums(block_count(pb.geom));
  std::vector<core::LabelCheck> checks(pb.label_check ? block_count(pb.geom) : 0);
  std::vector<std::int64_t> first_positions(checks.size());
  for_each_block<W, H>(pb.geom, [&](Block<W, H>& s, std::int64_t b) {
    core::CrossEntropyProblem<W> q;
    q.geom = s.geom();
    q.logits = s.x_in(pb.logits);
    q.logits_are_log_probs = pb.logits_are_log_probs;
    q.labels = s.labels(pb.labels);
    q.target_probs = s.x_in(pb.target_probs);
    q.class_weight = class_weight.get();
    q.pixel_weight = s.position_in(pb.pixel_weight);
    q.has_ignore_index = pb.has_ignore_index;
    q.ignore_index = pb.ignore_index;
    q.label_smoothing = pb.label_smoothing;
    q.prob_floor = pb.prob_floor;
    q.zero_target_log_is_zero = pb.zero_target_log_is_zero;
    if (pb.label_check) {
      q.label_check = &checks[static_cast<std::size_t>(b)];
      first_positions[static_cast<std::size_t>(b)] = s.first_position();
    }
    q.loss_map = s.position_out(pb.loss_map);
    q.loss_sum = loss_sums.at(b, pb.loss_sum != nullptr);
    q.prob = s.x_out(pb.prob);
    q.log_prob = s.x_out(pb.log_prob);
    q.entropy = s.position_out(pb.entropy);
    q.grad_logits = s.x_out(pb.grad_logits);
    q.grad_loss_map = s.position_in(pb.grad_loss_map);
    q.grad_loss_scale = pb.grad_loss_scale;
    q.grad_prob = s.x_in(pb.grad_prob);
    q.grad_log_prob = s.x_in(pb.grad_log_prob);
    q.grad_entropy = s.position_in(pb.grad_entropy);
    run(q);
  });
  loss_sums.add_to(pb.loss_sum);
  if (!pb.label_check) return;
  for (std::size_t b = 0; b < checks.size(); ++b) {
    pb.label_check->counted += checks[b].counted;
    if (checks[b].first_bad >= 0 && pb.label_check->first_bad < 0) {
      pb.label_check->first_bad = first_positions[b] + checks[b].first_bad;
    }
  }
}

template <class W, class H, class Run>
void prob_minus_target(const core::ProbMinusTargetProblem<H>& pb, Run&& run) {
  for_each_block<W, H>(pb.geom, [&](Block<W, H>& s, std::int64_t) {
    core::ProbMinusTargetProblem<W> q;
    q.geom = s.geom();
    q.prob = s.x_in(pb.prob);
    q.labels = s.labels(pb.labels);
    q.target_probs = s.x_in(pb.target_probs);
    q.pixel_weight = s.position_in(pb.pixel_weight);
    q.has_ignore_index = pb.has_ignore_index;
    q.ignore_index = pb.ignore_index;
    q.coef = pb.coef;
    q.grad_logits = s.x_out(pb.grad_logits);
    run(q);
  });
}

template <class W, class H, class Run>
void kl_div(const core::KlDivProblem<H>& pb, Run&& run) {
  BlockSums sums(block_count(pb.geom));
  for_each_block<W, H>(pb.geom, [&](Block<W, H>& s, std::int64_t b) {
    core::KlDivProblem<W> q;
    q.geom = s.geom();
    q.logits = s.x_in(pb.logits);
    q.target = s.x_in(pb.target);
    q.log_target = pb.log_target;
    q.out_map = s.x_out(pb.out_map);
    q.out_sum = sums.at(b, pb.out_sum != nullptr);
    q.grad_logits = s.x_out(pb.grad_logits);
    q.grad_map = s.x_in(pb.grad_map);
    q.grad_scale = pb.grad_scale;
    run(q);
  });
  sums.add_to(pb.out_sum);
}

// The label scan reads no X: its weights are widened whole.
template <class W, class H, class Run>
void scan_labels(const core::LabelScanProblem<H>& pb, Run&& run) {
  const Widened<W> class_weight(pb.class_weight, pb.classes);
  const Widened<W> pixel_weight(pb.pixel_weight, pb.count);
  core::LabelScanProblem<W> q;
  q.labels = pb.labels;
  q.count = pb.count;
  q.classes = pb.classes;
  q.has_ignore_index = pb.has_ignore_index;
  q.ignore_index = pb.ignore_index;
  q.class_weight = class_weight.get();
  q.pixel_weight = pixel_weight.get();
  q.total = pb.total;
  q.first_bad = pb.first_bad;
  run(q);
}

}  // namespace spatialsoftmax::dispatch::staging
