#include "reference/reference.h"

#include <cmath>
#include <limits>
#include <vector>

namespace spatialsoftmax::core::reference {
namespace {

// The softmax of one position's class vector, in T (docs/semantics.md 5): subtract the
// max, sum exp in class order, logp = x - m - log(s) (never log(p), so logp is
// finite whenever x is). A NaN anywhere, a +inf, or all -inf make every entry
// NaN through the arithmetic itself (inf - inf, 0 / 0).
template <class T>
struct PositionSoftmax {
  std::vector<T> prob, log_prob;

  void compute(const T* x, std::int64_t classes, std::int64_t stride) {
    prob.resize(static_cast<std::size_t>(classes));
    log_prob.resize(static_cast<std::size_t>(classes));
    T max = -std::numeric_limits<T>::infinity();
    bool nan = false;
    for (std::int64_t c = 0; c < classes; ++c) {
      const T v = x[c * stride];
      nan |= std::isnan(v);
      if (v > max) max = v;
    }
    if (nan) max = std::numeric_limits<T>::quiet_NaN();
    T sum = 0;
    for (std::int64_t c = 0; c < classes; ++c) {
      prob[c] = std::exp(x[c * stride] - max);
      sum += prob[c];
    }
    const T log_sum = std::log(sum);
    for (std::int64_t c = 0; c < classes; ++c) {
      log_prob[c] = (x[c * stride] - max) - log_sum;
      prob[c] /= sum;
    }
  }

  // Load log-probabilities as given (NLL input); prob is not used then.
  void load_log_probs(const T* x, std::int64_t classes, std::int64_t stride) {
    log_prob.resize(static_cast<std::size_t>(classes));
    for (std::int64_t c = 0; c < classes; ++c) log_prob[c] = x[c * stride];
  }

  // H = -sum p logp, terms with p = 0 count as 0.
  T entropy() const {
    T h = 0;
    for (std::size_t c = 0; c < prob.size(); ++c) {
      if (prob[c] != 0 || std::isnan(prob[c])) h -= prob[c] * log_prob[c];
    }
    return h;
  }
};

template <class T>
T weight_or_one(const T* weights, std::int64_t i) {
  return weights ? weights[i] : T(1);
}

}  // namespace

template <class T>
void softmax(const SoftmaxProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const std::int64_t cs = g.class_stride();
  PositionSoftmax<T> sm;
  for (std::int64_t i = 0; i < g.positions(); ++i) {
    const std::int64_t b = g.base(i);
    sm.compute(pb.logits + b, g.classes, cs);
    for (std::int64_t c = 0; c < g.classes; ++c) {
      if (pb.prob) pb.prob[b + c * cs] = sm.prob[c];
      if (pb.log_prob) pb.log_prob[b + c * cs] = sm.log_prob[c];
    }
    if (pb.entropy) pb.entropy[i] = sm.entropy();
  }
}

template <class T>
void softmax_backward(const SoftmaxBackwardProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const std::int64_t cs = g.class_stride();
  for (std::int64_t i = 0; i < g.positions(); ++i) {
    const T* y = pb.output + g.base(i);
    const T* gy = pb.grad_output + g.base(i);
    T* dx = pb.grad_logits + g.base(i);
    T dot = 0;
    for (std::int64_t c = 0; c < g.classes; ++c) {
      dot += pb.from_log_softmax ? gy[c * cs] : y[c * cs] * gy[c * cs];
    }
    for (std::int64_t c = 0; c < g.classes; ++c) {
      dx[c * cs] = pb.from_log_softmax ? gy[c * cs] - std::exp(y[c * cs]) * dot
                                       : y[c * cs] * (gy[c * cs] - dot);
    }
  }
}

template <class T>
void cross_entropy(const CrossEntropyProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const std::int64_t C = g.classes;
  if (pb.label_check && !pb.target_probs) {  // all labels first; nothing is computed if one is bad
    for (std::int64_t i = 0; i < g.positions(); ++i) {
      const std::int64_t y = pb.labels[i];
      if (pb.has_ignore_index && y == pb.ignore_index) continue;
      if (y < 0 || y >= C) {
        pb.label_check->first_bad = i;
        return;
      }
      ++pb.label_check->counted;
    }
  }
  const std::int64_t cs = g.class_stride();
  const T eps = pb.label_smoothing;
  const T eps_per_class = eps / static_cast<T>(C);
  T class_weight_sum = 0;  // sum_j w_j, used by the smoothing gradient
  for (std::int64_t c = 0; c < C; ++c) class_weight_sum += weight_or_one(pb.class_weight, c);

  const bool soft = pb.target_probs != nullptr;
  const bool need_softmax = !pb.logits_are_log_probs;
  PositionSoftmax<T> sm;
  std::vector<T> target(static_cast<std::size_t>(C));  // smoothed soft target T'
  double loss_sum = 0;

  // -log p_c of the loss: floored from p (Caffe2) or the exact -logp.
  auto neg_log = [&](std::int64_t c) {
    return pb.prob_floor > 0 ? -std::log(std::max(sm.prob[c], pb.prob_floor)) : -sm.log_prob[c];
  };

  for (std::int64_t i = 0; i < g.positions(); ++i) {
    const std::int64_t b = g.base(i);
    if (need_softmax) {
      sm.compute(pb.logits + b, C, cs);
    } else {
      sm.load_log_probs(pb.logits + b, C, cs);
    }
    const T a = weight_or_one(pb.pixel_weight, i);
    T loss = 0;
    std::int64_t y = -1;
    bool ignored = false;
    if (soft) {
      for (std::int64_t c = 0; c < C; ++c) {
        target[c] = (1 - eps) * pb.target_probs[b + c * cs] + eps_per_class;
        if (pb.zero_target_log_is_zero && target[c] == 0) continue;
        loss += weight_or_one(pb.class_weight, c) * target[c] * neg_log(c);
      }
      loss *= a;
    } else {
      y = pb.labels[i];
      ignored = pb.has_ignore_index && y == pb.ignore_index;
      if (!ignored) {
        loss = (1 - eps) * weight_or_one(pb.class_weight, y) * neg_log(y);
        // Skipped when eps = 0 so that a -inf logp elsewhere cannot turn 0 * inf into NaN.
        if (eps > 0) {
          T smooth = 0;
          for (std::int64_t c = 0; c < C; ++c) {
            smooth += weight_or_one(pb.class_weight, c) * -sm.log_prob[c];
          }
          loss += eps_per_class * smooth;
        }
        loss *= a;
      }
    }
    if (pb.loss_map) pb.loss_map[i] = loss;
    loss_sum += static_cast<double>(loss);
    for (std::int64_t c = 0; c < C && need_softmax; ++c) {
      if (pb.prob) pb.prob[b + c * cs] = sm.prob[c];
      if (pb.log_prob) pb.log_prob[b + c * cs] = sm.log_prob[c];
    }
    const T h = need_softmax ? sm.entropy() : T(0);
    if (pb.entropy) pb.entropy[i] = h;

    if (!pb.grad_logits) continue;
    const T r = (pb.grad_loss_map ? pb.grad_loss_map[i] : pb.grad_loss_scale) * a;
    // Dot products of the upstream gradients of P and logP with P / ones.
    T dot_prob = 0, sum_log_prob_grad = 0, target_mass = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      if (pb.grad_prob) dot_prob += sm.prob[c] * pb.grad_prob[b + c * cs];
      if (pb.grad_log_prob) sum_log_prob_grad += pb.grad_log_prob[b + c * cs];
      if (soft) target_mass += weight_or_one(pb.class_weight, c) * target[c];
    }
    const T gh = pb.grad_entropy ? pb.grad_entropy[i] : T(0);
    for (std::int64_t c = 0; c < C; ++c) {
      T d = 0;
      if (pb.logits_are_log_probs) {
        if (!ignored && c == y) d = -r * weight_or_one(pb.class_weight, y);
      } else {
        const T p = sm.prob[c];
        const T w_c = weight_or_one(pb.class_weight, c);
        if (soft) {
          d = r * (p * target_mass - w_c * target[c]);
        } else if (!ignored) {
          const T onehot = c == y ? T(1) : T(0);
          d = (1 - eps) * weight_or_one(pb.class_weight, y) * (p - onehot);
          if (eps > 0) d += eps_per_class * (p * class_weight_sum - w_c);
          d *= r;
        }
        if (pb.grad_prob) d += p * (pb.grad_prob[b + c * cs] - dot_prob);
        if (pb.grad_log_prob) d += pb.grad_log_prob[b + c * cs] - p * sum_log_prob_grad;
        if (pb.grad_entropy && p != 0) d -= gh * p * (sm.log_prob[c] + h);
      }
      pb.grad_logits[b + c * cs] = d;
    }
  }
  if (pb.loss_sum) *pb.loss_sum = loss_sum;
}

template <class T>
void scan_labels(const LabelScanProblem<T>& pb) {
  double total = 0;
  for (std::int64_t i = 0; i < pb.count; ++i) {
    const std::int64_t y = pb.labels[i];
    if (pb.has_ignore_index && y == pb.ignore_index) continue;
    if (y < 0 || y >= pb.classes) {
      *pb.first_bad = i;
      return;
    }
    total += static_cast<double>(weight_or_one(pb.pixel_weight, i)) *
             static_cast<double>(weight_or_one(pb.class_weight, y));
  }
  *pb.total = total;
}

template <class T>
void prob_minus_target(const ProbMinusTargetProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const std::int64_t cs = g.class_stride();
  for (std::int64_t i = 0; i < g.positions(); ++i) {
    const std::int64_t b = g.base(i);
    const T w = weight_or_one(pb.pixel_weight, i) * pb.coef;
    std::int64_t y = -1;
    bool ignored = false;
    if (!pb.target_probs) {
      y = pb.labels[i];
      ignored = pb.has_ignore_index && y == pb.ignore_index;
    }
    for (std::int64_t c = 0; c < g.classes; ++c) {
      const T target = pb.target_probs ? pb.target_probs[b + c * cs] : (c == y ? T(1) : T(0));
      pb.grad_logits[b + c * cs] = ignored ? T(0) : (pb.prob[b + c * cs] - target) * w;
    }
  }
}

template <class T>
void kl_div(const KlDivProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const std::int64_t cs = g.class_stride();
  PositionSoftmax<T> sm;
  double sum = 0;
  for (std::int64_t i = 0; i < g.positions(); ++i) {
    const std::int64_t b = g.base(i);
    sm.compute(pb.logits + b, g.classes, cs);
    T weighted_mass = 0;  // sum_j r_j * tau_j
    for (std::int64_t c = 0; c < g.classes; ++c) {
      const T t = pb.target[b + c * cs];
      T v;
      if (pb.log_target) {
        v = std::exp(t) * (t - sm.log_prob[c]);
      } else if (t > 0) {
        v = t * (std::log(t) - sm.log_prob[c]);
      } else {
        v = t == 0 ? T(0) : std::numeric_limits<T>::quiet_NaN();
      }
      if (pb.out_map) pb.out_map[b + c * cs] = v;
      sum += static_cast<double>(v);
      const T r = pb.grad_map ? pb.grad_map[b + c * cs] : pb.grad_scale;
      weighted_mass += r * (pb.log_target ? std::exp(t) : t);
    }
    if (!pb.grad_logits) continue;
    for (std::int64_t c = 0; c < g.classes; ++c) {
      const T t = pb.target[b + c * cs];
      const T r = pb.grad_map ? pb.grad_map[b + c * cs] : pb.grad_scale;
      pb.grad_logits[b + c * cs] =
          sm.prob[c] * weighted_mass - r * (pb.log_target ? std::exp(t) : t);
    }
  }
  if (pb.out_sum) *pb.out_sum = sum;
}

namespace {

// Coordinates of pixel p: component a (fastest axis first) into u[a].
template <class T>
void pixel_coordinates(const SpatialSoftArgmaxProblem<T>& pb, std::int64_t p, double* u) {
  for (int axis = pb.spatial_rank - 1, a = 0; axis >= 0; --axis, ++a) {
    u[a] = pb.coordinate[axis][p % pb.dims[axis]];
    p /= pb.dims[axis];
  }
}

// Softmax over the pixels of channel (n, c) in double; returns per-pixel S.
template <class T>
void channel_softmax(const SpatialSoftArgmaxProblem<T>& pb, std::int64_t n, std::int64_t c,
                     std::vector<double>& s) {
  const Geometry& g = pb.geom;
  s.resize(static_cast<std::size_t>(g.pixels));
  double max = -std::numeric_limits<double>::infinity();
  bool nan = false;
  for (std::int64_t p = 0; p < g.pixels; ++p) {
    const double v = pb.input[g.offset(n, c, p)];
    nan |= std::isnan(v);
    if (v > max) max = v;
  }
  if (nan) max = std::numeric_limits<double>::quiet_NaN();
  double sum = 0;
  for (std::int64_t p = 0; p < g.pixels; ++p) {
    s[p] = std::exp(pb.beta * (static_cast<double>(pb.input[g.offset(n, c, p)]) - max));
    sum += s[p];
  }
  for (double& v : s) v /= sum;
}

}  // namespace

template <class T>
void spatial_soft_argmax(const SpatialSoftArgmaxProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const int k = pb.spatial_rank;
  std::vector<double> s;
  double u[kMaxSpatialRank];
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t c = 0; c < g.classes; ++c) {
      channel_softmax(pb, n, c, s);
      double e[kMaxSpatialRank] = {}, second[kMaxSpatialRank][kMaxSpatialRank] = {};
      for (std::int64_t p = 0; p < g.pixels; ++p) {
        if (pb.softmax) pb.softmax[g.offset(n, c, p)] = static_cast<T>(s[p]);
        pixel_coordinates(pb, p, u);
        for (int a = 0; a < k; ++a) {
          e[a] += s[p] * u[a];
          for (int b = 0; b < k; ++b) second[a][b] += s[p] * u[a] * u[b];
        }
      }
      const std::int64_t nc = n * g.classes + c;
      for (int a = 0; a < k; ++a) {
        if (pb.keypoints) pb.keypoints[nc * k + a] = static_cast<T>(e[a]);
        for (int b = 0; b < k && pb.covariance; ++b) {
          pb.covariance[(nc * k + a) * k + b] = static_cast<T>(second[a][b] - e[a] * e[b]);
        }
      }
    }
  }
}

template <class T>
void spatial_soft_argmax_backward(const SpatialSoftArgmaxProblem<T>& pb) {
  const Geometry& g = pb.geom;
  const int k = pb.spatial_rank;
  std::vector<double> s, h(static_cast<std::size_t>(g.pixels));
  double u[kMaxSpatialRank];
  double grad_beta = 0;
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t c = 0; c < g.classes; ++c) {
      channel_softmax(pb, n, c, s);
      const std::int64_t nc = n * g.classes + c;
      double e[kMaxSpatialRank] = {};
      for (std::int64_t p = 0; p < g.pixels; ++p) {
        pixel_coordinates(pb, p, u);
        for (int a = 0; a < k; ++a) e[a] += s[p] * u[a];
      }
      // h_p = dLoss/dS_p; then dX_p = beta * S_p * (h_p - sum_q S_q h_q).
      double mean_h = 0, max = -std::numeric_limits<double>::infinity();
      for (std::int64_t p = 0; p < g.pixels; ++p) {
        pixel_coordinates(pb, p, u);
        double hp = pb.grad_softmax ? static_cast<double>(pb.grad_softmax[g.offset(n, c, p)]) : 0;
        for (int a = 0; a < k; ++a) {
          if (pb.grad_keypoints) hp += pb.grad_keypoints[nc * k + a] * u[a];
          for (int b = 0; b < k && pb.grad_covariance; ++b) {
            hp += pb.grad_covariance[(nc * k + a) * k + b] *
                  (u[a] * u[b] - u[a] * e[b] - e[a] * u[b]);
          }
        }
        h[p] = hp;
        mean_h += s[p] * hp;
        max = std::max(max, static_cast<double>(pb.input[g.offset(n, c, p)]));
      }
      for (std::int64_t p = 0; p < g.pixels; ++p) {
        const double dz = s[p] * (h[p] - mean_h);  // d loss / d (beta * (x - m))
        pb.grad_input[g.offset(n, c, p)] = static_cast<T>(pb.beta * dz);
        grad_beta += dz * (static_cast<double>(pb.input[g.offset(n, c, p)]) - max);
      }
    }
  }
  if (pb.grad_beta) *pb.grad_beta = grad_beta;
}

#define SPATIALSOFTMAX_INSTANTIATE(T)                                       \
  template void softmax<T>(const SoftmaxProblem<T>&);                       \
  template void softmax_backward<T>(const SoftmaxBackwardProblem<T>&);      \
  template void cross_entropy<T>(const CrossEntropyProblem<T>&);            \
  template void scan_labels<T>(const LabelScanProblem<T>&);                 \
  template void prob_minus_target<T>(const ProbMinusTargetProblem<T>&);     \
  template void kl_div<T>(const KlDivProblem<T>&);                          \
  template void spatial_soft_argmax<T>(const SpatialSoftArgmaxProblem<T>&); \
  template void spatial_soft_argmax_backward<T>(const SpatialSoftArgmaxProblem<T>&);
SPATIALSOFTMAX_INSTANTIATE(float)
SPATIALSOFTMAX_INSTANTIATE(double)
#undef SPATIALSOFTMAX_INSTANTIATE

}  // namespace spatialsoftmax::core::reference
