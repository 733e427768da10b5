// Shared by the kernel tests (test_kernels_*.cc): random cross-entropy
// cases run once on the float64 reference and once on highway, compared at
// the tolerances of docs/semantics.md 5 (kernel_test_support.cc); bitwise comparisons
// across thread counts; and the spatial soft-argmax cases run on the
// kernels directly (spatial_test_support.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "dispatch/backend.h"
#include "reference/problems.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// The class counts of the acceptance list: lane-count edges of every target
// (4, 8 and 16 float lanes; 2, 4 and 8 double lanes), the row kernel's
// threshold (cpu::kRowClasses, 256) and large C.
inline constexpr std::int64_t kClassCounts[] = {1,  2,  3,  7,  8,  9,   15,  16,  17,
                                                19, 31, 63, 64, 65, 150, 255, 256, 300};
static_assert(cpu::kRowClasses == 256, "kClassCounts straddles the row threshold");

// "SIMD target AVX2 (0x...)", for messages.
std::string target_label(std::int64_t target);
// The target HWY_DYNAMIC_DISPATCH used last; 0 if nothing was dispatched yet.
std::int64_t dispatched_target();

// --- tolerances (docs/semantics.md 5) -------------------------------------------------------

enum class Kind {
  kProb,     // P, softmax: atol 1e-6, rtol 1e-5
  kMap,      // log_prob, per-position loss, entropy: atol 1e-5, rtol 1e-5
  kReduced,  // scalar losses: atol 1e-6, rtol 1e-5
  kGrad,     // dX: atol 1e-6 * max|ref dX|, rtol 1e-5
};

// docs/semantics.md 5 for outputs of dtype `dtype` against the reference values `want`.
Tolerance tolerance(DType dtype, Kind kind, const TensorView& want);

// `got` is highway's output, `want` the reference's: in float64 (docs/semantics.md 5's
// tolerances are against a float64 reference; a float32 case's inputs widened)
// or in got's dtype. For a float32 case `same_dtype` is the float32
// reference's output too, and an element passes if it is within tolerance of
// either: the float32 reference's own class sums (in class order) can miss
// the float64 values by more than the tolerance where a gradient cancels
// (HighwayVsReferenceRandom.Float32CancellationAtC300), and highway on its
// SCALAR target computes the same sums. The tolerances are those of got's
// dtype.
void expect_close(const Tensor& got, const Tensor& want, Kind kind, const std::string& what,
                  const Tensor* same_dtype = nullptr);

// --- inputs: random values, non-contiguous views -------------------------------

// How a tensor's elements are laid out in memory. Elements that the view does
// not cover hold poison (NaN, or an out-of-range label), so reading them
// would show.
enum class Layout { kDense, kSliced, kFortran, kReversed };
const char* layout_name(Layout l);
// A copy of `dense` laid out as `layout`.
Strided restride(const Tensor& dense, Layout layout);

// Random class counts, spatial shapes and options of one comparison case.
struct CaseSpec {
  std::int64_t batch = 1;
  std::int64_t classes = 1;
  Shape spatial;
  ClassAxis axis = ClassAxis::kFirst;
  DType dtype = DType::kFloat32;
  enum class Targets { kInt32, kInt64, kSoft } targets = Targets::kInt64;
  Layout layout = Layout::kDense;
  bool class_weight = false;
  bool pixel_weight = false;
  std::optional<std::int64_t> ignore_index;
  double label_smoothing = 0;
  double prob_floor = 0;
  ZeroTargetLog zero_target_log = ZeroTargetLog::kIeee;
  ZeroWeightMean zero_weight_mean = ZeroWeightMean::kNaN;
  Reduction reduction = Reduction::kMean;
  bool want_prob = false, want_log_prob = false, want_entropy = false;
  bool fused_grad_loss = false;     // fused call with an explicit upstream gradient
  bool backward_grad_prob = false;  // backward with an upstream gradient of P too
  double logit_range = 8;
  bool quantized = false;  // logits on a coarse grid: ties for the max
  // Every floating input rounded to float32 values: the float64 twin of a
  // float32 case (the same numbers, computed in float64).
  bool float32_values = false;
  // kl_div(logits, T) of the same logits (when highway runs it).
  bool kl_log_target = false;
  Reduction kl_reduction = Reduction::kMean;
  std::uint64_t seed = 0;

  Shape logits_shape() const {
    Shape s{batch};
    if (axis == ClassAxis::kFirst) s.push_back(classes);
    s.insert(s.end(), spatial.begin(), spatial.end());
    if (axis == ClassAxis::kLast) s.push_back(classes);
    return s;
  }
  Shape map_shape() const {
    Shape s{batch};
    s.insert(s.end(), spatial.begin(), spatial.end());
    return s;
  }

  std::string describe() const {
    std::ostringstream o;
    o << "logits " << shape_string(logits_shape()) << " " << dtype_name(dtype)
      << (axis == ClassAxis::kFirst ? " class-first" : " class-last") << ", C = " << classes << ", "
      << layout_name(layout) << ", targets "
      << (targets == Targets::kSoft    ? "probabilities"
          : targets == Targets::kInt32 ? "int32"
                                       : "int64")
      << ", ignore_index " << (ignore_index ? std::to_string(*ignore_index) : "unset")
      << ", class_weight " << class_weight << ", pixel_weight " << pixel_weight
      << ", label_smoothing " << label_smoothing << ", prob_floor " << prob_floor
      << ", zero_target_log " << (zero_target_log == ZeroTargetLog::kZero ? "zero" : "ieee")
      << ", zero_weight_mean " << (zero_weight_mean == ZeroWeightMean::kZero ? "zero" : "nan")
      << ", reduction " << to_string(reduction) << ", outputs P/logP/H " << want_prob
      << want_log_prob << want_entropy << ", logit range +-" << logit_range
      << (quantized ? " quantized" : "") << "; kl_div log_target " << kl_log_target << " reduction "
      << to_string(kl_reduction) << "; seed " << seed;
    return o.str();
  }
};

// Odd-leaning spatial dims of rank `rank` with about `budget` pixels.
Shape random_spatial(std::mt19937_64& rng, int rank, std::int64_t budget);
CaseSpec random_case(std::int64_t classes, ClassAxis axis, DType dtype, std::uint64_t seed,
                     std::optional<CaseSpec::Targets> targets = std::nullopt);

// The tensors of a case and the options that point into them.
struct CaseInputs {
  Strided logits, targets, class_weight, pixel_weight, grad_map, grad_prob;
  Strided grad_softmax;  // upstream of softmax_backward / log_softmax_backward
  Tensor grad_scalar;
  CrossEntropyOptions options;
  CrossEntropyGrads backward_grads;  // upstream of cross_entropy_backward
  CrossEntropyGrads fused_grads;     // upstream of cross_entropy_forward_backward
  bool with_kl = false;
  Strided kl_target, kl_grad_map;
  Tensor kl_grad_scalar;
  KlDivOptions kl_options;
};

CaseInputs make_inputs(const CaseSpec& c);

// Every public function of the case, on the backend selected now.
struct CaseOutputs {
  CrossEntropyResult forward;
  Tensor backward;
  CrossEntropyResult fused;
  Tensor softmax, log_softmax, entropy;
  Tensor softmax_backward, log_softmax_backward;  // from the reference's P and logP
  Tensor kl, kl_backward;
};

CaseOutputs run_case(const CaseInputs& in);
void compare_results(const CrossEntropyResult& got, const CrossEntropyResult& want,
                     Reduction reduction, const std::string& what,
                     const CrossEntropyResult* same_dtype = nullptr);
// The reference once, in float64 (for a float32 case: on the same values
// widened; docs/semantics.md 5's tolerances are against a float64 reference), then
// highway on the target forced now, `target`.
void check_case(const CaseSpec& c, std::int64_t target);

// --- bitwise identical for any thread count ------------------------------------

// Every output of a set of calls, as bytes.
struct Snapshot {
  std::vector<Tensor> tensors;
  std::vector<double> scalars;
};

// `run` on the default backend (highway) at 1, 2, 3 and 7 threads and once
// more at 1: every output bitwise as the first run's.
void check_thread_counts(const std::function<Snapshot()>& run);

}  // namespace spatialsoftmax::testing

// --- the spatial soft-argmax: one problem, its inputs in float64 ------------------

namespace spatialsoftmax::testing::spatial {

// Written into every output before a run: an element left unwritten shows.
constexpr double kPoison = 12345.0;

struct Case {
  DType dtype = DType::kFloat32;
  bool channel_last = false;
  std::int64_t batch = 1, channels = 1;
  std::vector<std::int64_t> dims;  // d1..dk
  double beta = 1;
  bool pixel = false;      // pixel coordinates, else normalized
  bool minus_one = false;  // normalized, an axis of length 1: -1 (else 0)
  double lo = -8, hi = 8;  // logits uniform in [lo, hi)
  std::uint64_t seed = 1;

  int k() const { return static_cast<int>(dims.size()); }
  std::int64_t pixels() const {
    std::int64_t p = 1;
    for (std::int64_t d : dims) p *= d;
    return p;
  }
  std::int64_t elements() const { return batch * channels * pixels(); }
  Shape shape() const {
    Shape s{batch};
    if (!channel_last) s.push_back(channels);
    s.insert(s.end(), dims.begin(), dims.end());
    if (channel_last) s.push_back(channels);
    return s;
  }
  // The keypoints' unit: docs/semantics.md 5 scales their atol by max(d) for pixel coordinates.
  double scale() const {
    double s = 1;
    for (std::int64_t d : dims) s = std::max(s, pixel ? static_cast<double>(d) : 1.0);
    return s;
  }
  std::string str() const {
    std::ostringstream o;
    o << dtype_name(dtype) << (channel_last ? " channel-last" : " channel-first") << " N=" << batch
      << " C=" << channels << " dims=(";
    for (std::size_t i = 0; i < dims.size(); ++i) o << (i ? "," : "") << dims[i];
    o << ") beta=" << beta
      << (pixel       ? " pixel"
          : minus_one ? " normalized(-1)"
                      : " normalized")
      << " logits [" << lo << ", " << hi << ") seed " << seed;
    return o.str();
  }
};

// Inputs in memory order (core::Geometry::offset); a float32 case holds float32
// values, so the float64 reference sees the same numbers.
struct Inputs {
  Case c;
  core::Geometry geom;
  std::vector<std::vector<double>> coord;
  std::vector<double> x, gk, gs, gc;
};

Inputs make_inputs(const Case& c);

// Forward outputs wanted (bits), upstream gradients given (bits).
enum : int { kKeypoints = 1, kSoftmax = 2, kCovariance = 4, kBeta = 8 };

struct Outputs {
  std::vector<double> keypoints, softmax, covariance, grad_input;
  double grad_beta = kPoison;
};

// The forward (backward = false: `mask` of kKeypoints...) or the backward
// (`mask` of the upstream gradients given, plus kBeta), on the float64
// reference or on the kernels in the case's dtype.
Outputs run_reference(const Inputs& in, bool backward, int mask);
Outputs run_kernel(const Inputs& in, bool backward, int mask);

// --- tolerances (docs/semantics.md 5) and comparisons
// ---------------------------------------------

// S: atol 1e-6, rtol 1e-5 (float32). Keypoints: atol 1e-5 times the coordinate
// unit. The covariance has no line in docs/semantics.md 5: the keypoints' atol times the
// unit once more (it is quadratic in the coordinates). dX: atol 1e-6 max|ref dX|.
// float64: 1e-12 in place of 1e-5 and 1e-6.
Tolerance softmax_tol(const Case& c);
Tolerance keypoint_tol(const Case& c);
Tolerance covariance_tol(const Case& c);
Tolerance grad_tol(const Case& c, const std::vector<double>& want);
// d loss / d beta sums dz (x - max) over every element, so its error is
// relative to sum |dz (x - max)|, dz = ref dX / beta.
Tolerance grad_beta_tol(const Inputs& in, const std::vector<double>& ref_dx);

// The largest error seen, as a multiple of the tolerance, per output kind.
struct Worst {
  double ratio = 0, abs_error = 0;
};

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const Tolerance& t, const std::string& what, Worst* worst = nullptr);

struct Report {
  Worst softmax, keypoints, covariance, grad, grad_beta;
};

// The kernel's forward with outputs `mask` against the reference's (all outputs).
void check_forward(const Inputs& in, int mask, const Outputs& ref, Report* report = nullptr);
// The kernel's backward from the upstream gradients `grads` against the reference.
void check_backward(const Inputs& in, int grads, Report* report = nullptr);

inline constexpr int kAllOutputs = kKeypoints | kSoftmax | kCovariance;

void check_case(const Inputs& in, int mask, int grads, Report* report = nullptr);

}  // namespace spatialsoftmax::testing::spatial
