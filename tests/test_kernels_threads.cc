// Every output of the kernels is bitwise identical for 1, 2, 3 and 7
// threads, on the default backend (highway, its best target): the loss
// family, softmax and its backward, entropy, and the Caffe2 operators.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>

#include "kernel_test_support.h"
#include "spatialsoftmax/caffe2.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

Shape to_class_last(const Shape& first) {
  Shape s{first[0]};
  s.insert(s.end(), first.begin() + 2, first.end());
  s.push_back(first[1]);
  return s;
}

TEST(ThreadCount, CrossEntropyAndSoftmaxAreBitwiseIdentical) {
  struct Config {
    Shape shape;  // class-first shape (N, C, d...)
    ClassAxis axis;
  };
  const Config configs[] = {
      {{3, 19, 67, 129}, ClassAxis::kFirst}, {{3, 19, 67, 129}, ClassAxis::kLast},
      {{300, 300}, ClassAxis::kFirst},       // rows: P = 1, C >= kRowClasses
      {{3000, 300}, ClassAxis::kFirst},      // rows, many row blocks
      {{2, 300, 13, 17}, ClassAxis::kLast},  // class-last, C = 300: the row kernel
      {{4, 300, 31, 33}, ClassAxis::kLast},  // the same with many row blocks
      {{2, 70, 33, 17}, ClassAxis::kLast},   // transposed tiles, C = 70
      {{300, 150}, ClassAxis::kFirst},       // transposed tiles, P = 1
      {{2, 7, 301, 257}, ClassAxis::kLast},  // transposed tiles (small C class-last)
  };
  for (const Config& cfg : configs) {
    const Shape xs = cfg.axis == ClassAxis::kFirst ? cfg.shape : to_class_last(cfg.shape);
    const std::int64_t C = cfg.shape[1];
    Shape ms{cfg.shape[0]};
    ms.insert(ms.end(), cfg.shape.begin() + 2, cfg.shape.end());
    SCOPED_TRACE("logits " + shape_string(xs) +
                 (cfg.axis == ClassAxis::kFirst ? " class-first" : " class-last"));
    const Tensor x = testing::random_uniform(DType::kFloat32, xs, -6, 6, 11);
    Tensor y = testing::random_labels(DType::kInt64, ms, C, 12);
    for (std::int64_t i = 0; i < y.numel(); i += 7) testing::set_element(y, i, 255);
    const Tensor cw = testing::random_uniform(DType::kFloat32, {C}, 0.5, 2, 13);
    const Tensor pw = testing::random_uniform(DType::kFloat32, ms, 0, 2, 14);
    Tensor soft = testing::random_uniform(DType::kFloat32, xs, 0, 1, 15);
    const Tensor upstream = testing::random_uniform(DType::kFloat32, xs, -1, 1, 16);

    CrossEntropyOptions o = CrossEntropyOptions::pytorch();
    o.class_axis = cfg.axis;
    o.ignore_index = 255;
    o.class_weight = cw.view();
    o.pixel_weight = pw.view();
    o.label_smoothing = 0.1;
    o.reduction = Reduction::kSum;
    o.want_prob = o.want_log_prob = o.want_entropy = true;
    CrossEntropyOptions map = o;
    map.reduction = Reduction::kNone;
    map.want_prob = map.want_log_prob = map.want_entropy = false;
    CrossEntropyOptions caffe2_like = CrossEntropyOptions::caffe2_spatial();
    caffe2_like.class_axis = cfg.axis;
    caffe2_like.ignore_index = 255;
    CrossEntropyOptions soft_options;
    soft_options.class_axis = cfg.axis;
    soft_options.reduction = Reduction::kSum;

    check_thread_counts([&] {
      Snapshot s;
      CrossEntropyResult sum = cross_entropy(x, y, o);
      s.scalars.push_back(sum.loss.at(0));
      s.tensors.push_back(std::move(sum.loss));
      s.tensors.push_back(std::move(sum.prob));
      s.tensors.push_back(std::move(sum.log_prob));
      s.tensors.push_back(std::move(sum.entropy));
      s.tensors.push_back(cross_entropy(x, y, map).loss);
      CrossEntropyResult fused = cross_entropy_forward_backward(x, y, caffe2_like);
      s.scalars.push_back(fused.loss.at(0));
      s.tensors.push_back(std::move(fused.grad_logits));
      CrossEntropyResult fused_soft = cross_entropy_forward_backward(x, soft, soft_options);
      s.scalars.push_back(fused_soft.loss.at(0));
      s.tensors.push_back(std::move(fused_soft.grad_logits));
      Tensor p = softmax(x, cfg.axis), logp = log_softmax(x, cfg.axis);
      s.tensors.push_back(softmax_backward(p, upstream, cfg.axis));
      s.tensors.push_back(log_softmax_backward(logp, upstream, cfg.axis));
      s.tensors.push_back(std::move(p));
      s.tensors.push_back(std::move(logp));
      s.tensors.push_back(entropy(x, cfg.axis));
      return s;
    });
  }
}

TEST(ThreadCount, Caffe2OperatorsAreBitwiseIdentical) {
  // SpatialSoftmaxWithLoss on (3, 19, 67, 129) with weights and ignored pixels.
  {
    const Tensor x = testing::random_uniform(DType::kFloat32, {3, 19, 67, 129}, -6, 6, 21);
    Tensor t = testing::random_labels(DType::kInt32, {3, 67, 129}, 19, 22);
    for (std::int64_t i = 0; i < t.numel(); i += 5) testing::set_element(t, i, -1);
    const Tensor w = testing::random_uniform(DType::kFloat32, {3, 67, 129}, 0, 2, 23);
    const Tensor d_loss = Tensor::scalar(DType::kFloat32, 1.0);
    SCOPED_TRACE("SpatialSoftmaxWithLoss (3, 19, 67, 129)");
    check_thread_counts([&] {
      Snapshot s;
      caffe2::LossOutputs out = caffe2::spatial_softmax_with_loss(x, t, w.view());
      s.tensors.push_back(
          caffe2::spatial_softmax_with_loss_gradient(x, t, w.view(), out.prob, d_loss));
      s.tensors.push_back(std::move(out.prob));
      s.tensors.push_back(std::move(out.loss));
      return s;
    });
  }
  // SoftmaxWithLoss on (5000, 150) rows, labels and probabilities.
  for (int label_prob : {0, 1}) {
    const Tensor x = testing::random_uniform(DType::kFloat32, {5000, 150}, -6, 6, 31);
    Tensor t;
    if (label_prob) {
      t = Tensor(DType::kFloat32, {5000, 150});
      for (std::int64_t i = 0; i < 5000 * 150; ++i)
        testing::set_element(t, i, (i % 150 == i / 150 % 150) ? 1.0 : 0.0);
    } else {
      t = testing::random_labels(DType::kInt32, {5000}, 150, 32);
    }
    const Tensor w = testing::random_uniform(DType::kFloat32, {5000}, 0, 2, 33);
    const Tensor d_loss = Tensor::scalar(DType::kFloat32, 1.0);
    caffe2::SoftmaxWithLossArgs args;
    args.label_prob = label_prob;
    SCOPED_TRACE("SoftmaxWithLoss (5000, 150), label_prob " + std::to_string(label_prob));
    check_thread_counts([&] {
      Snapshot s;
      caffe2::LossOutputs out = caffe2::softmax_with_loss(x, t, w.view(), args);
      s.tensors.push_back(
          caffe2::softmax_with_loss_gradient(x, t, w.view(), out.prob, d_loss, args));
      s.tensors.push_back(std::move(out.prob));
      s.tensors.push_back(std::move(out.loss));
      return s;
    });
  }
}

}  // namespace
}  // namespace spatialsoftmax::testing
