#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernel_test_support.h"
#include "reference/reference.h"

namespace spatialsoftmax::testing::spatial {
namespace {

double round_to(DType dtype, double v) {
  return dtype == DType::kFloat32 ? static_cast<double>(static_cast<float>(v)) : v;
}

}  // namespace

Inputs make_inputs(const Case& c) {
  Inputs in;
  in.c = c;
  in.geom.batch = c.batch;
  in.geom.classes = c.channels;
  in.geom.pixels = c.pixels();
  in.geom.class_last = c.channel_last;
  for (std::int64_t length : c.dims) {
    std::vector<double> u(static_cast<std::size_t>(length));
    for (std::int64_t j = 0; j < length; ++j) {
      const double jd = static_cast<double>(j);
      if (c.pixel) {
        u[j] = jd;
      } else if (length == 1) {
        u[j] = c.minus_one ? -1.0 : 0.0;
      } else {
        u[j] = -1.0 + 2.0 * jd / static_cast<double>(length - 1);
      }
    }
    in.coord.push_back(std::move(u));
  }
  std::mt19937_64 rng(c.seed);
  std::uniform_real_distribution<double> logit(c.lo, c.hi), grad(-1, 1);
  const std::int64_t NC = c.batch * c.channels, k = c.k();
  auto fill = [&](std::vector<double>& v, std::int64_t n,
                  std::uniform_real_distribution<double>& u) {
    v.resize(static_cast<std::size_t>(n));
    for (double& e : v) e = round_to(c.dtype, u(rng));
  };
  fill(in.x, c.elements(), logit);
  fill(in.gk, NC * k, grad);
  fill(in.gs, c.elements(), grad);
  fill(in.gc, NC * k * k, grad);
  return in;
}

namespace {

template <class T>
std::vector<T> as(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Runs the forward (backward = false: `mask` of kKeypoints...) or the backward
// (`mask` of the upstream gradients given, plus kBeta), with the reference in
// float64 or with the kernels in T.
template <class T>
Outputs run(const Inputs& in, bool backward, int mask, bool reference) {
  const std::int64_t NC = in.geom.batch * in.geom.classes, k = in.c.k();
  const std::int64_t E = in.geom.elements();
  const std::vector<T> x = as<T>(in.x), gk = as<T>(in.gk), gs = as<T>(in.gs), gc = as<T>(in.gc);
  std::vector<T> kp, sm, cov, gi;
  double grad_beta = kPoison;
  core::SpatialSoftArgmaxProblem<T> pb;
  pb.geom = in.geom;
  pb.spatial_rank = in.c.k();
  for (int a = 0; a < in.c.k(); ++a) {
    pb.dims[a] = in.c.dims[static_cast<std::size_t>(a)];
    pb.coordinate[a] = in.coord[static_cast<std::size_t>(a)].data();
  }
  pb.beta = in.c.beta;
  pb.input = x.data();
  const T poison = static_cast<T>(kPoison);
  if (!backward) {
    kp.assign(mask & kKeypoints ? NC * k + 1 : 0, poison);
    sm.assign(mask & kSoftmax ? E + 1 : 0, poison);
    cov.assign(mask & kCovariance ? NC * k * k + 1 : 0, poison);
    pb.keypoints = kp.empty() ? nullptr : kp.data();
    pb.softmax = sm.empty() ? nullptr : sm.data();
    pb.covariance = cov.empty() ? nullptr : cov.data();
  } else {
    gi.assign(E + 1, poison);
    pb.grad_input = gi.data();
    if (mask & kKeypoints) pb.grad_keypoints = gk.data();
    if (mask & kSoftmax) pb.grad_softmax = gs.data();
    if (mask & kCovariance) pb.grad_covariance = gc.data();
    if (mask & kBeta) pb.grad_beta = &grad_beta;
  }
  if constexpr (std::is_same_v<T, double>) {
    if (reference) {
      backward ? core::reference::spatial_soft_argmax_backward(pb)
               : core::reference::spatial_soft_argmax(pb);
    }
  }
  if (!reference) {
    backward ? cpu::spatial_soft_argmax_backward(pb) : cpu::spatial_soft_argmax(pb);
  }
  // The extra element past each output must be untouched.
  const auto out = [&](const std::vector<T>& v) {
    if (v.empty()) return std::vector<double>();
    EXPECT_EQ(v.back(), poison) << "written past the end";
    return std::vector<double>(v.begin(), v.end() - 1);
  };
  Outputs o;
  o.keypoints = out(kp);
  o.softmax = out(sm);
  o.covariance = out(cov);
  o.grad_input = out(gi);
  o.grad_beta = grad_beta;
  return o;
}

}  // namespace

Outputs run_reference(const Inputs& in, bool backward, int mask) {
  return run<double>(in, backward, mask, true);
}
Outputs run_kernel(const Inputs& in, bool backward, int mask) {
  return in.c.dtype == DType::kFloat32 ? run<float>(in, backward, mask, false)
                                       : run<double>(in, backward, mask, false);
}

namespace {

double unit(DType dtype) { return dtype == DType::kFloat32 ? 1e-5 : 1e-12; }

}  // namespace

Tolerance softmax_tol(const Case& c) {
  return {.rtol = unit(c.dtype), .atol = c.dtype == DType::kFloat32 ? 1e-6 : 1e-12};
}
Tolerance keypoint_tol(const Case& c) {
  return {.rtol = unit(c.dtype), .atol = unit(c.dtype) * c.scale()};
}
Tolerance covariance_tol(const Case& c) {
  return {.rtol = unit(c.dtype), .atol = unit(c.dtype) * c.scale() * c.scale()};
}
Tolerance grad_tol(const Case& c, const std::vector<double>& want) {
  double m = 0;
  for (double v : want) {
    if (std::isfinite(v)) m = std::max(m, std::abs(v));
  }
  return {.rtol = unit(c.dtype), .atol = (c.dtype == DType::kFloat32 ? 1e-6 : 1e-12) * m};
}
Tolerance grad_beta_tol(const Inputs& in, const std::vector<double>& ref_dx) {
  const core::Geometry& g = in.geom;
  double magnitude = 0;
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t c = 0; c < g.classes; ++c) {
      double max = -kInf;
      for (std::int64_t p = 0; p < g.pixels; ++p) max = std::max(max, in.x[g.offset(n, c, p)]);
      for (std::int64_t p = 0; p < g.pixels; ++p) {
        const std::int64_t o = g.offset(n, c, p);
        const double term = ref_dx[o] / in.c.beta * (in.x[o] - max);
        if (std::isfinite(term)) magnitude += std::abs(term);
      }
    }
  }
  return {.rtol = unit(in.c.dtype), .atol = unit(in.c.dtype) * magnitude};
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const Tolerance& t, const std::string& what, Worst* worst) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (worst && std::isfinite(want[i])) {
      const double err = std::abs(got[i] - want[i]);
      worst->abs_error = std::max(worst->abs_error, err);
      worst->ratio = std::max(worst->ratio, err / (t.atol + t.rtol * std::abs(want[i])));
    }
    if (close_enough(got[i], want[i], t)) continue;
    std::ostringstream o;
    o.precision(17);
    o << what << ": element " << i << " of " << got.size() << ": got " << got[i] << ", expected "
      << want[i] << " (atol " << t.atol << ", rtol " << t.rtol << ")";
    ADD_FAILURE() << o.str();
    return;
  }
}

void check_forward(const Inputs& in, int mask, const Outputs& ref, Report* report) {
  SCOPED_TRACE(in.c.str() + ", outputs " + std::to_string(mask));
  const Outputs got = run_kernel(in, false, mask);
  if (mask & kKeypoints) {
    expect_close(got.keypoints, ref.keypoints, keypoint_tol(in.c), "keypoints",
                 report ? &report->keypoints : nullptr);
  }
  if (mask & kSoftmax) {
    expect_close(got.softmax, ref.softmax, softmax_tol(in.c), "softmax",
                 report ? &report->softmax : nullptr);
  }
  if (mask & kCovariance) {
    expect_close(got.covariance, ref.covariance, covariance_tol(in.c), "covariance",
                 report ? &report->covariance : nullptr);
  }
}

// The kernel's backward from the upstream gradients `grads` against the reference.
void check_backward(const Inputs& in, int grads, Report* report) {
  SCOPED_TRACE(in.c.str() + ", upstream " + std::to_string(grads));
  const Outputs ref_b = run_reference(in, true, grads);
  const Outputs got_b = run_kernel(in, true, grads);
  expect_close(got_b.grad_input, ref_b.grad_input, grad_tol(in.c, ref_b.grad_input), "grad_input",
               report ? &report->grad : nullptr);
  if (grads & kBeta) {
    expect_close({got_b.grad_beta}, {ref_b.grad_beta}, grad_beta_tol(in, ref_b.grad_input),
                 "grad_beta", report ? &report->grad_beta : nullptr);
  } else {
    EXPECT_EQ(got_b.grad_beta, kPoison) << "grad_beta written though not asked for";
  }
}

void check_case(const Inputs& in, int mask, int grads, Report* report) {
  check_forward(in, mask, run_reference(in, false, kAllOutputs), report);
  check_backward(in, grads, report);
}

}  // namespace spatialsoftmax::testing::spatial
