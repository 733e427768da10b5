// No public function writes to its inputs (docs/semantics.md section 6): every input
// is copied bytewise before the call and compared after it, both for a
// successful call and for one that throws on an invalid argument. Caffe2's
// CUDA gradient wrote dX into P's buffer (only_loss); the library must not.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

using testing::random_labels;
using testing::random_uniform;
using testing::set_element;

// Bytewise copies of a set of tensors, compared on demand.
class Snapshot {
 public:
  Snapshot(std::initializer_list<const Tensor*> tensors) {
    for (const Tensor* t : tensors) {
      const auto* p = static_cast<const unsigned char*>(t->data());
      saved_.push_back({t, std::vector<unsigned char>(p, p + t->nbytes())});
    }
  }

  ::testing::AssertionResult unchanged() const {
    for (std::size_t i = 0; i < saved_.size(); ++i) {
      const Tensor& t = *saved_[i].tensor;
      if (t.nbytes() != saved_[i].bytes.size() ||
          (t.nbytes() && std::memcmp(t.data(), saved_[i].bytes.data(), t.nbytes()) != 0)) {
        return ::testing::AssertionFailure()
               << "input #" << i << " (shape " << shape_string(t.shape()) << ") was modified";
      }
    }
    return ::testing::AssertionSuccess();
  }

 private:
  struct Saved {
    const Tensor* tensor;
    std::vector<unsigned char> bytes;
  };
  std::vector<Saved> saved_;
};

// Runs `statement`, which must succeed, then checks the snapshot.
#define EXPECT_OK_AND_UNCHANGED(snapshot, statement)            \
  do {                                                          \
    EXPECT_NO_THROW((void)(statement)) << #statement;           \
    EXPECT_TRUE((snapshot).unchanged()) << "after " #statement; \
  } while (0)

// Runs `statement`, which must throw spatialsoftmax::Error, then checks the
// snapshot.
#define EXPECT_ERROR_AND_UNCHANGED(snapshot, statement)         \
  do {                                                          \
    EXPECT_THROW((void)(statement), Error) << #statement;       \
    EXPECT_TRUE((snapshot).unchanged()) << "after " #statement; \
  } while (0)

// Probabilities over axis 1 of a class-first shape.
Tensor probabilities(DType dtype, const Shape& s, std::uint64_t seed) {
  Tensor t = random_uniform(DType::kFloat64, s, 0.1, 1, seed);
  std::int64_t pixels = 1;
  for (std::size_t d = 2; d < s.size(); ++d) pixels *= s[d];
  for (std::int64_t n = 0; n < s[0]; ++n) {
    for (std::int64_t p = 0; p < pixels; ++p) {
      double sum = 0;
      for (std::int64_t c = 0; c < s[1]; ++c) sum += t.at((n * s[1] + c) * pixels + p);
      for (std::int64_t c = 0; c < s[1]; ++c)
        t.data_as<double>()[(n * s[1] + c) * pixels + p] /= sum;
    }
  }
  return t.to(dtype);
}

TEST(Snapshot, DetectsASingleFlippedBit) {
  Tensor t = random_uniform(DType::kFloat32, {3, 4}, -1, 1, 99);
  const Snapshot snap{&t};
  EXPECT_TRUE(snap.unchanged());
  t.data_as<std::uint32_t>()[11] ^= 1u;
  EXPECT_FALSE(snap.unchanged());
}

class InputsUnchanged : public ::testing::TestWithParam<DType> {
 protected:
  DType dtype() const { return GetParam(); }
  const Shape shape_{2, 4, 3, 5};
  const Shape map_shape_{2, 3, 5};
};

TEST_P(InputsUnchanged, SoftmaxFamily) {
  const Tensor x = random_uniform(dtype(), shape_, -3, 3, 1);
  const Tensor g = random_uniform(dtype(), shape_, -1, 1, 2);
  const Tensor p = softmax(x);
  const Tensor logp = log_softmax(x);
  const Snapshot snap{&x, &g, &p, &logp};
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    EXPECT_OK_AND_UNCHANGED(snap, softmax(x, axis));
    EXPECT_OK_AND_UNCHANGED(snap, log_softmax(x, axis));
    EXPECT_OK_AND_UNCHANGED(snap, entropy(x, axis));
    EXPECT_OK_AND_UNCHANGED(snap, softmax_backward(p, g, axis));
    EXPECT_OK_AND_UNCHANGED(snap, log_softmax_backward(logp, g, axis));
  }
  // Invalid: a rank-1 view of the same buffer; a gradient of another shape.
  const TensorView flat(x.data(), dtype(), {x.numel()});
  const TensorView g_bad(g.data(), dtype(), {2, 4, 5, 3});
  EXPECT_ERROR_AND_UNCHANGED(snap, softmax(flat));
  EXPECT_ERROR_AND_UNCHANGED(snap, log_softmax(flat));
  EXPECT_ERROR_AND_UNCHANGED(snap, entropy(flat));
  EXPECT_ERROR_AND_UNCHANGED(snap, softmax_backward(p, g_bad));
  EXPECT_ERROR_AND_UNCHANGED(snap, log_softmax_backward(logp, g_bad));
}

TEST_P(InputsUnchanged, CrossEntropyFamily) {
  const Tensor x = random_uniform(dtype(), shape_, -3, 3, 3);
  Tensor labels = random_labels(DType::kInt64, map_shape_, 4, 4);
  set_element(labels, 3, -1);
  // The same labels with the last one out of range: found only after the
  // other checks have passed.
  Tensor bad_labels = Tensor::copy_of(labels);
  set_element(bad_labels, bad_labels.numel() - 1, 4);
  const Tensor targets = probabilities(dtype(), shape_, 5);
  const Tensor w = random_uniform(dtype(), {4}, 0.1, 2, 6);
  const Tensor a = random_uniform(dtype(), map_shape_, 0, 2, 7);
  Tensor bad_a = Tensor::copy_of(a);
  set_element(bad_a, bad_a.numel() - 1, -1);
  const Tensor g_map = random_uniform(dtype(), map_shape_, -1, 1, 8);
  const Tensor g_scalar = Tensor::scalar(dtype(), 0.5);
  const Tensor g_x = random_uniform(dtype(), shape_, -1, 1, 9);
  const Tensor g_x2 = random_uniform(dtype(), shape_, -1, 1, 10);
  const Tensor g_ent = random_uniform(dtype(), map_shape_, -1, 1, 11);
  const Snapshot snap{&x,     &labels, &bad_labels, &targets, &w,    &a,
                      &bad_a, &g_map,  &g_scalar,   &g_x,     &g_x2, &g_ent};

  for (Reduction red : {Reduction::kNone, Reduction::kSum, Reduction::kMean}) {
    SCOPED_TRACE(std::string(to_string(red)));
    CrossEntropyOptions o;
    o.class_weight = w.view();
    o.pixel_weight = a.view();
    o.ignore_index = -1;
    o.label_smoothing = 0.1;
    o.reduction = red;
    o.want_prob = o.want_log_prob = o.want_entropy = true;
    CrossEntropyGrads grads;
    grads.loss = red == Reduction::kNone ? g_map.view() : g_scalar.view();
    grads.prob = g_x.view();
    grads.log_prob = g_x2.view();
    grads.entropy = g_ent.view();
    CrossEntropyOptions soft = o;
    soft.ignore_index.reset();

    EXPECT_OK_AND_UNCHANGED(snap, cross_entropy(x, labels, o));
    EXPECT_OK_AND_UNCHANGED(snap, cross_entropy(x, targets, soft));
    EXPECT_OK_AND_UNCHANGED(snap, cross_entropy_backward(x, labels, grads, o));
    EXPECT_OK_AND_UNCHANGED(snap, cross_entropy_backward(x, targets, grads, soft));
    EXPECT_OK_AND_UNCHANGED(snap, cross_entropy_forward_backward(x, labels, o, grads));
    EXPECT_OK_AND_UNCHANGED(snap, cross_entropy_forward_backward(x, targets, soft, grads));
    CrossEntropyOptions nll;
    nll.class_weight = w.view();
    nll.ignore_index = -1;
    nll.reduction = red;
    EXPECT_OK_AND_UNCHANGED(snap, nll_loss(x, labels, nll));
    EXPECT_OK_AND_UNCHANGED(snap, nll_loss_backward(x, labels, *grads.loss, nll));

    // Invalid arguments.
    EXPECT_ERROR_AND_UNCHANGED(snap, cross_entropy(x, bad_labels, o));
    EXPECT_ERROR_AND_UNCHANGED(snap, cross_entropy_backward(x, bad_labels, grads, o));
    EXPECT_ERROR_AND_UNCHANGED(snap, cross_entropy_forward_backward(x, bad_labels, o, grads));
    EXPECT_ERROR_AND_UNCHANGED(snap, nll_loss(x, bad_labels, nll));
    EXPECT_ERROR_AND_UNCHANGED(snap, nll_loss_backward(x, bad_labels, *grads.loss, nll));
    CrossEntropyOptions bad_weights = soft;
    bad_weights.pixel_weight = bad_a.view();
    EXPECT_ERROR_AND_UNCHANGED(snap, cross_entropy(x, targets, bad_weights));
    EXPECT_ERROR_AND_UNCHANGED(snap,
                               cross_entropy_forward_backward(x, targets, bad_weights, grads));
    CrossEntropyGrads bad_grads = grads;
    const TensorView g_ent_bad(g_ent.data(), dtype(), {2, 5, 3});
    bad_grads.entropy = g_ent_bad;
    EXPECT_ERROR_AND_UNCHANGED(snap, cross_entropy_backward(x, labels, bad_grads, o));
  }
}

TEST_P(InputsUnchanged, KlDiv) {
  const Tensor x = random_uniform(dtype(), shape_, -3, 3, 12);
  const Tensor t = probabilities(dtype(), shape_, 13);
  const Tensor lt = random_uniform(dtype(), shape_, -3, 0, 14);
  const Tensor g_x = random_uniform(dtype(), shape_, -1, 1, 15);
  const Tensor g_scalar = Tensor::scalar(dtype(), 2);
  const Snapshot snap{&x, &t, &lt, &g_x, &g_scalar};
  for (bool log_target : {false, true}) {
    for (Reduction red :
         {Reduction::kNone, Reduction::kSum, Reduction::kMean, Reduction::kBatchMean}) {
      KlDivOptions ko;
      ko.log_target = log_target;
      ko.reduction = red;
      const Tensor& target = log_target ? lt : t;
      const Tensor& g = red == Reduction::kNone ? g_x : g_scalar;
      EXPECT_OK_AND_UNCHANGED(snap, kl_div(x, target, ko));
      EXPECT_OK_AND_UNCHANGED(snap, kl_div_backward(x, target, g, ko));
      const TensorView bad_target(target.data(), dtype(), {2, 4, 5, 3});
      EXPECT_ERROR_AND_UNCHANGED(snap, kl_div(x, bad_target, ko));
      const TensorView bad_g(g_x.data(), dtype(), {2, 4, 5, 3});
      EXPECT_ERROR_AND_UNCHANGED(snap, kl_div_backward(x, target, bad_g, ko));
    }
  }
}

TEST_P(InputsUnchanged, SpatialSoftArgmax) {
  const Tensor x = random_uniform(dtype(), shape_, -3, 3, 16);
  // Sized for the larger channel count (5, class-last); viewed per layout.
  const Tensor gk = random_uniform(dtype(), {2, 5, 2}, -1, 1, 17);
  const Tensor gs = random_uniform(dtype(), shape_, -1, 1, 18);
  const Tensor gc = random_uniform(dtype(), {2, 5, 2, 2}, -1, 1, 19);
  const Snapshot snap{&x, &gk, &gs, &gc};
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    SpatialSoftArgmaxOptions so;
    so.channel_axis = axis;
    so.want_softmax = so.want_covariance = true;
    so.temperature = 0.7;
    const Shape kp_shape = axis == ClassAxis::kFirst ? Shape{2, 4, 2} : Shape{2, 5, 2};
    const Shape cov_shape = axis == ClassAxis::kFirst ? Shape{2, 4, 2, 2} : Shape{2, 5, 2, 2};
    const TensorView gkv(gk.data(), dtype(), kp_shape);
    const TensorView gcv(gc.data(), dtype(), cov_shape);
    EXPECT_OK_AND_UNCHANGED(snap, spatial_soft_argmax(x, so));
    EXPECT_OK_AND_UNCHANGED(snap, spatial_softmax(x, so));
    EXPECT_OK_AND_UNCHANGED(snap, spatial_soft_argmax_backward(x, {gkv, gs.view(), gcv}, so));
    const TensorView gc_bad(gc.data(), dtype(), {2, 2, 2, 4});
    EXPECT_ERROR_AND_UNCHANGED(snap, spatial_soft_argmax_backward(x, {gkv, gs.view(), gc_bad}, so));
    so.temperature = 0;
    EXPECT_ERROR_AND_UNCHANGED(snap, spatial_soft_argmax(x, so));
    EXPECT_ERROR_AND_UNCHANGED(snap, spatial_softmax(x, so));
  }
}

TEST_P(InputsUnchanged, Caffe2Spatial) {
  const Tensor x = random_uniform(dtype(), shape_, -3, 3, 20);
  Tensor t = random_labels(DType::kInt32, map_shape_, 4, 21);
  set_element(t, 2, -1);
  Tensor bad_t = Tensor::copy_of(t);
  set_element(bad_t, bad_t.numel() - 1, 4);
  const Tensor w = random_uniform(dtype(), map_shape_, 0, 2, 22);
  const Tensor p = probabilities(dtype(), shape_, 23);
  const Tensor d = Tensor::scalar(dtype(), 1.5);
  const Snapshot snap{&x, &t, &bad_t, &w, &p, &d};
  for (caffe2::Variant variant : {caffe2::Variant::kCpu, caffe2::Variant::kCuda}) {
    caffe2::SpatialSoftmaxWithLossArgs args;
    args.variant = variant;
    args.scale = 2;
    for (const std::optional<TensorView>& weight :
         {std::optional<TensorView>(), std::optional<TensorView>(w.view())}) {
      EXPECT_OK_AND_UNCHANGED(snap, caffe2::spatial_softmax_with_loss(x, t, weight, args));
      // P is never overwritten (Caffe2's CUDA only_loss aliased dX to it).
      EXPECT_OK_AND_UNCHANGED(snap,
                              caffe2::spatial_softmax_with_loss_gradient(x, t, weight, p, d, args));
      EXPECT_ERROR_AND_UNCHANGED(snap, caffe2::spatial_softmax_with_loss(x, bad_t, weight, args));
      EXPECT_ERROR_AND_UNCHANGED(
          snap, caffe2::spatial_softmax_with_loss_gradient(x, bad_t, weight, p, d, args));
    }
    caffe2::SpatialSoftmaxWithLossArgs bad_args = args;
    bad_args.order = "NHWC";
    EXPECT_ERROR_AND_UNCHANGED(snap,
                               caffe2::spatial_softmax_with_loss_gradient(x, t, w, p, d, bad_args));
  }
}

TEST_P(InputsUnchanged, Caffe2Softmax) {
  const Tensor x = random_uniform(dtype(), {3, 4, 2}, -3, 3, 24);
  const Tensor labels = random_labels(DType::kInt32, {3}, 8, 25);
  Tensor bad_labels = Tensor::copy_of(labels);
  set_element(bad_labels, 2, 8);
  const Tensor t = probabilities(dtype(), {3, 8}, 26);
  Tensor bad_t = Tensor::copy_of(t);
  set_element(bad_t, 23, 0.9);  // the last row no longer sums to 1
  const Tensor w = random_uniform(dtype(), {3}, 0, 2, 27);
  const Tensor p = probabilities(dtype(), {3, 8}, 28);
  const TensorView p3(p.data(), dtype(), {3, 4, 2});
  const Tensor d = Tensor::scalar(dtype(), 0.5);
  const Snapshot snap{&x, &labels, &bad_labels, &t, &bad_t, &w, &p, &d};
  for (caffe2::Variant variant : {caffe2::Variant::kCpu, caffe2::Variant::kCuda}) {
    caffe2::SoftmaxWithLossArgs args;
    args.variant = variant;
    args.scale = 3;
    EXPECT_OK_AND_UNCHANGED(snap, caffe2::softmax_with_loss(x, labels, w, args));
    EXPECT_OK_AND_UNCHANGED(snap, caffe2::softmax_with_loss_gradient(x, labels, w, p3, d, args));
    EXPECT_ERROR_AND_UNCHANGED(snap, caffe2::softmax_with_loss(x, bad_labels, w, args));
    EXPECT_ERROR_AND_UNCHANGED(snap,
                               caffe2::softmax_with_loss_gradient(x, bad_labels, w, p3, d, args));
    args.label_prob = 1;
    EXPECT_OK_AND_UNCHANGED(snap, caffe2::softmax_with_loss(x, t, w, args));
    EXPECT_OK_AND_UNCHANGED(snap, caffe2::softmax_with_loss_gradient(x, t, w, p3, d, args));
    EXPECT_ERROR_AND_UNCHANGED(snap, caffe2::softmax_with_loss(x, bad_t, w, args));
    EXPECT_ERROR_AND_UNCHANGED(snap, caffe2::softmax_with_loss_gradient(x, bad_t, w, p3, d, args));
  }
}

TEST_P(InputsUnchanged, StridedInputsAreNotWrittenEither) {
  // A transposed (non-contiguous) view over a buffer: the library densifies
  // it internally; the buffer itself must stay as it was.
  const Tensor phys = random_uniform(dtype(), {2, 3, 5, 4}, -3, 3, 29);  // N H W C
  const TensorView xv(phys.data(), dtype(), {2, 4, 3, 5}, {60, 1, 20, 4});
  const Tensor labels = random_labels(DType::kInt64, {2, 3, 5}, 4, 30);
  const Tensor g = random_uniform(dtype(), {2, 3, 5}, -1, 1, 31);
  const Snapshot snap{&phys, &labels, &g};
  CrossEntropyOptions o;
  o.reduction = Reduction::kNone;
  o.want_prob = true;
  CrossEntropyGrads grads;
  grads.loss = g.view();
  EXPECT_OK_AND_UNCHANGED(snap, cross_entropy_forward_backward(xv, labels, o, grads));
  EXPECT_OK_AND_UNCHANGED(snap, softmax(xv));
  EXPECT_OK_AND_UNCHANGED(snap, spatial_soft_argmax(xv));
  EXPECT_OK_AND_UNCHANGED(snap, kl_div(xv, xv));
}

INSTANTIATE_TEST_SUITE_P(BothDtypes, InputsUnchanged,
                         ::testing::Values(DType::kFloat32, DType::kFloat64),
                         [](const auto& param_info) {
                           return std::string(dtype_name(param_info.param));
                         });

}  // namespace
}  // namespace spatialsoftmax
