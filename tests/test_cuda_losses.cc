// The loss family on a GPU against the CPU (CTest label `cuda`):
// cross-entropy forward, backward and fused with every option, NLL, KL, the
// Caffe2 operators and the spatial soft-argmax; run-to-run bitwise
// identity; bad labels and weights reported through check_device_errors
// with the CPU's message and no device-side abort; a CUDA graph capture of
// the fused call. Where no GPU is present every test reports skipped.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cuda_test_support.h"
#include "spatialsoftmax/spatialsoftmax.h"

namespace spatialsoftmax {
namespace {

using testing::bitwise_equal;
using testing::Cuda;
using testing::DeviceBuffer;
using testing::expect_close;
using testing::random_labels;
using testing::random_uniform;
using testing::set_element;
using testing::tolerance_of;

Shape map_shape_of(const Shape& shape, ClassAxis axis) {
  Shape map = shape;
  map.erase(map.begin() + (axis == ClassAxis::kFirst ? 1 : static_cast<long>(shape.size()) - 1));
  return map;
}
std::int64_t classes_of(const Shape& shape, ClassAxis axis) {
  return axis == ClassAxis::kFirst ? shape[1] : shape.back();
}

struct LossCase {
  Shape shape;
  ClassAxis axis = ClassAxis::kFirst;
  bool soft = false;
  bool class_weight = false, pixel_weight = false;
  std::optional<std::int64_t> ignore_index;
  double label_smoothing = 0;
  Reduction reduction = Reduction::kMean;
  DType dtype = DType::kFloat32;
  std::string describe() const {
    return shape_string(shape) + (axis == ClassAxis::kFirst ? " class-first" : " class-last") +
           (soft ? " soft" : " index") + (class_weight ? " cw" : "") + (pixel_weight ? " pw" : "") +
           (ignore_index ? " ignore" : "") + " eps " + std::to_string(label_smoothing) + " " +
           std::string(to_string(reduction)) + " " + std::string(dtype_name(dtype));
  }
};

std::vector<LossCase> loss_cases() {
  const std::vector<std::pair<Shape, ClassAxis>> shapes = {
      {{2, 1, 5, 3}, ClassAxis::kFirst},    {{3, 2, 33}, ClassAxis::kFirst},
      {{2, 19, 7, 9}, ClassAxis::kFirst},   {{2, 300, 17}, ClassAxis::kFirst},
      {{2, 5, 3, 19}, ClassAxis::kLast},    {{3, 33, 65}, ClassAxis::kLast},
      {{2, 7, 300}, ClassAxis::kLast},      {{64, 32000}, ClassAxis::kLast},
      {{1, 19, 3, 5, 7}, ClassAxis::kFirst}};
  std::vector<LossCase> cases;
  int variant = 0;
  for (const auto& [shape, axis] : shapes) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (int v = 0; v < 6; ++v, ++variant) {
        LossCase k;
        k.shape = shape;
        k.axis = axis;
        k.dtype = dtype;
        k.reduction = static_cast<Reduction>(variant % 3);  // none, sum, mean
        switch (v) {
          case 1:
            k.class_weight = k.pixel_weight = true;
            k.ignore_index = 0;
            break;
          case 2:
            k.label_smoothing = 0.1;
            k.ignore_index = 1;
            k.reduction = Reduction::kMean;
            break;
          case 3:
            k.soft = true;
            k.pixel_weight = true;
            break;
          case 4:
            k.soft = true;
            k.class_weight = true;
            k.label_smoothing = 0.2;
            break;
          case 5:
            k.class_weight = true;
            k.reduction = Reduction::kMean;
            break;
        }
        cases.push_back(k);
      }
    }
  }
  return cases;
}

// A case's inputs on the host and their device copies.
struct LossInputs {
  Tensor x, targets, class_weight, pixel_weight;
  std::unique_ptr<DeviceBuffer> dx, dtargets, dclass_weight, dpixel_weight;
  CrossEntropyOptions host, device;

  explicit LossInputs(const LossCase& k, std::uint64_t seed) {
    const std::int64_t C = classes_of(k.shape, k.axis);
    const Shape map = map_shape_of(k.shape, k.axis);
    x = random_uniform(k.dtype, k.shape, -6, 6, seed);
    targets = k.soft ? softmax(random_uniform(k.dtype, k.shape, -3, 3, seed + 1), k.axis)
                     : random_labels(DType::kInt64, map, C, seed + 1);
    dx = std::make_unique<DeviceBuffer>(x);
    dtargets = std::make_unique<DeviceBuffer>(targets);
    for (CrossEntropyOptions* o : {&host, &device}) {
      o->class_axis = k.axis;
      o->reduction = k.reduction;
      o->label_smoothing = k.label_smoothing;
      o->ignore_index = k.soft ? std::nullopt : k.ignore_index;
    }
    if (k.class_weight) {
      class_weight = random_uniform(k.dtype, {C}, 0.2, 2, seed + 2);
      dclass_weight = std::make_unique<DeviceBuffer>(class_weight);
      host.class_weight = class_weight.view();
      device.class_weight = dclass_weight->view();
    }
    if (k.pixel_weight) {
      pixel_weight = random_uniform(k.dtype, map, 0, 2, seed + 3);
      dpixel_weight = std::make_unique<DeviceBuffer>(pixel_weight);
      host.pixel_weight = pixel_weight.view();
      device.pixel_weight = dpixel_weight->view();
    }
  }
};

TEST_F(Cuda, CrossEntropyFusedMatchesTheCpuOnEveryOption) {
  std::uint64_t seed = 1;
  for (const LossCase& k : loss_cases()) {
    SCOPED_TRACE(k.describe());
    LossInputs in(k, seed += 10);
    CrossEntropyOptions host = in.host;
    host.want_prob = host.want_log_prob = host.want_entropy = true;
    const CrossEntropyResult want = cross_entropy_forward_backward(in.x, in.targets, host);
    const Shape map = map_shape_of(k.shape, k.axis);
    const DeviceBuffer loss(k.dtype, k.reduction == Reduction::kNone ? map : Shape{}),
        prob(k.dtype, k.shape), log_prob(k.dtype, k.shape), h(k.dtype, map), dx(k.dtype, k.shape);
    CrossEntropyOutputs out;
    out.loss = loss.out();
    out.prob = prob.out();
    out.log_prob = log_prob.out();
    out.entropy = h.out();
    out.grad_logits = dx.out();
    cross_entropy_forward_backward_into(in.dx->view(), in.dtargets->view(), out, in.device);
    ASSERT_NO_THROW(check_device_errors());
    const double t = tolerance_of(k.dtype);
    expect_close(loss.to_host(), want.loss, t, "loss");
    expect_close(prob.to_host(), want.prob, t, "prob");
    expect_close(log_prob.to_host(), want.log_prob, t, "log_prob");
    expect_close(h.to_host(), want.entropy, t, "entropy");
    expect_close(dx.to_host(), want.grad_logits, t, "grad_logits");
    // Run to run, bitwise.
    const DeviceBuffer loss2(k.dtype, k.reduction == Reduction::kNone ? map : Shape{}),
        dx2(k.dtype, k.shape);
    CrossEntropyOutputs again;
    again.loss = loss2.out();
    again.grad_logits = dx2.out();
    cross_entropy_forward_backward_into(in.dx->view(), in.dtargets->view(), again, in.device);
    EXPECT_TRUE(bitwise_equal(loss2.to_host(), loss.to_host()));
    EXPECT_TRUE(bitwise_equal(dx2.to_host(), dx.to_host()));
  }
}

TEST_F(Cuda, CrossEntropyForwardAndBackwardReadTheUpstreamOnTheDevice) {
  std::uint64_t seed = 7;
  for (const LossCase& k : loss_cases()) {
    SCOPED_TRACE(k.describe());
    LossInputs in(k, seed += 10);
    const Shape map = map_shape_of(k.shape, k.axis);
    const Tensor grad = k.reduction == Reduction::kNone
                            ? random_uniform(k.dtype, map, -1, 1, seed + 5)
                            : Tensor::scalar(k.dtype, 0.75);
    const DeviceBuffer dgrad(grad);
    CrossEntropyGrads host_grads, device_grads;
    host_grads.loss = grad.view();
    device_grads.loss = dgrad.view();
    const Tensor want_dx = cross_entropy_backward(in.x, in.targets, host_grads, in.host);
    const DeviceBuffer dx(k.dtype, k.shape);
    cross_entropy_backward_into(in.dx->view(), in.dtargets->view(), device_grads, dx.out(),
                                in.device);
    expect_close(dx.to_host(), want_dx, tolerance_of(k.dtype), "grad_logits");
    const Tensor want_loss = cross_entropy(in.x, in.targets, in.host).loss;
    const DeviceBuffer loss(k.dtype, want_loss.shape());
    CrossEntropyOutputs out;
    out.loss = loss.out();
    cross_entropy_into(in.dx->view(), in.dtargets->view(), out, in.device);
    expect_close(loss.to_host(), want_loss, tolerance_of(k.dtype), "loss");
  }
}

TEST_F(Cuda, NllLossMatchesTheCpu) {
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    const Shape shape = axis == ClassAxis::kFirst ? Shape{2, 7, 5, 3} : Shape{2, 5, 3, 45};
    const Tensor lp = log_softmax(random_uniform(DType::kFloat64, shape, -3, 3, 11), axis);
    const Tensor labels =
        random_labels(DType::kInt32, map_shape_of(shape, axis), classes_of(shape, axis), 12);
    CrossEntropyOptions o;
    o.class_axis = axis;
    o.ignore_index = 2;
    const DeviceBuffer dlp(lp), dlabels(labels), loss(DType::kFloat64, {}),
        dx(DType::kFloat64, shape), g(Tensor::scalar(DType::kFloat64, 2.0));
    nll_loss_into(dlp.view(), dlabels.view(), loss.out(), o);
    expect_close(loss.to_host(), nll_loss(lp, labels, o), 1e-12, "nll_loss");
    nll_loss_backward_into(dlp.view(), dlabels.view(), g.view(), dx.out(), o);
    expect_close(dx.to_host(),
                 nll_loss_backward(lp, labels, Tensor::scalar(DType::kFloat64, 2.0), o), 1e-12,
                 "nll_loss_backward");
  }
}

TEST_F(Cuda, KlDivMatchesTheCpu) {
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    for (bool log_target : {false, true}) {
      for (Reduction r :
           {Reduction::kNone, Reduction::kSum, Reduction::kMean, Reduction::kBatchMean}) {
        const Shape shape = axis == ClassAxis::kFirst ? Shape{3, 19, 11} : Shape{3, 11, 70};
        const Tensor x = random_uniform(DType::kFloat32, shape, -4, 4, 21);
        Tensor target = softmax(random_uniform(DType::kFloat32, shape, -2, 2, 22), axis);
        if (log_target)
          target = log_softmax(random_uniform(DType::kFloat32, shape, -2, 2, 22), axis);
        KlDivOptions o{axis, log_target, r};
        const Tensor want = kl_div(x, target, o);
        const Tensor grad = r == Reduction::kNone
                                ? random_uniform(DType::kFloat32, shape, -1, 1, 23)
                                : Tensor::scalar(DType::kFloat32, 1.5);
        const DeviceBuffer dx(x), dt(target), out(DType::kFloat32, want.shape()), dg(grad),
            ddx(DType::kFloat32, shape);
        kl_div_into(dx.view(), dt.view(), out.out(), o);
        expect_close(out.to_host(), want, 2e-5, "kl_div");
        kl_div_backward_into(dx.view(), dt.view(), dg.view(), ddx.out(), o);
        expect_close(ddx.to_host(), kl_div_backward(x, target, grad, o), 2e-5, "kl_div_backward");
      }
    }
  }
}

TEST_F(Cuda, Caffe2OperatorsMatchTheCpu) {
  using caffe2::Variant;
  const Shape shape{2, 5, 7, 3};
  const Tensor X = random_uniform(DType::kFloat32, shape, -3, 3, 31);
  Tensor T = random_labels(DType::kInt32, {2, 7, 3}, 5, 32);
  set_element(T, 4, -1);  // ignored
  const Tensor w = random_uniform(DType::kFloat32, {2, 7, 3}, 0, 2, 33);
  const DeviceBuffer dX(X), dT(T), dw(w);
  for (Variant variant : {Variant::kCpu, Variant::kCuda}) {
    caffe2::SpatialSoftmaxWithLossArgs args;
    args.scale = 0.5f;
    args.variant = variant;
    const caffe2::LossOutputs want = caffe2::spatial_softmax_with_loss(X, T, w.view(), args);
    const DeviceBuffer P(DType::kFloat32, shape), loss(DType::kFloat32, {});
    caffe2::spatial_softmax_with_loss_into(dX.view(), dT.view(), dw.view(), {P.out(), loss.out()},
                                           args);
    expect_close(P.to_host(), want.prob, 2e-5, "P");
    expect_close(loss.to_host(), want.loss, 2e-5, "avg_loss");
    const Tensor d_loss = Tensor::scalar(DType::kFloat32, 1.25);
    const DeviceBuffer dd(d_loss), dX_out(DType::kFloat32, shape);
    caffe2::spatial_softmax_with_loss_gradient_into(dX.view(), dT.view(), dw.view(), P.view(),
                                                    dd.view(), dX_out.out(), args);
    expect_close(
        dX_out.to_host(),
        caffe2::spatial_softmax_with_loss_gradient(X, T, w.view(), want.prob, d_loss, args), 2e-5,
        "dX");
  }
  // SoftmaxWithLoss on (N, D) rows, labels and probabilities.
  const Tensor X2 = random_uniform(DType::kFloat64, {6, 9}, -3, 3, 34);
  const Tensor labels = random_labels(DType::kInt32, {6}, 9, 35);
  const Tensor probs =
      softmax(random_uniform(DType::kFloat64, {6, 9}, -1, 1, 36), ClassAxis::kLast);
  const Tensor rows = random_uniform(DType::kFloat64, {6}, 0, 2, 37);
  const DeviceBuffer dX2(X2), dlabels(labels), dprobs(probs), drows(rows);
  for (int label_prob : {0, 1}) {
    for (Variant variant : {Variant::kCpu, Variant::kCuda}) {
      caffe2::SoftmaxWithLossArgs args;
      args.label_prob = label_prob;
      args.variant = variant;
      args.scale = 2.0f;
      const Tensor& t = label_prob ? probs : labels;
      const DeviceBuffer& dt = label_prob ? dprobs : dlabels;
      const caffe2::LossOutputs want = caffe2::softmax_with_loss(X2, t, rows.view(), args);
      const DeviceBuffer P(DType::kFloat64, {6, 9}), loss(DType::kFloat64, {});
      caffe2::softmax_with_loss_into(dX2.view(), dt.view(), drows.view(), {P.out(), loss.out()},
                                     args);
      expect_close(P.to_host(), want.prob, 1e-12, "P");
      expect_close(loss.to_host(), want.loss, 1e-12, "avg_loss");
      const Tensor d_loss = Tensor::scalar(DType::kFloat64, 0.5);
      const DeviceBuffer dd(d_loss), dX_out(DType::kFloat64, {6, 9});
      caffe2::softmax_with_loss_gradient_into(dX2.view(), dt.view(), drows.view(), P.view(),
                                              dd.view(), dX_out.out(), args);
      expect_close(dX_out.to_host(),
                   caffe2::softmax_with_loss_gradient(X2, t, rows.view(), want.prob, d_loss, args),
                   1e-12, "dX");
    }
  }
}

TEST_F(Cuda, SpatialSoftArgmaxMatchesTheCpu) {
  for (ClassAxis axis : {ClassAxis::kFirst, ClassAxis::kLast}) {
    const Shape shape = axis == ClassAxis::kFirst ? Shape{2, 3, 17, 33} : Shape{2, 9, 31, 4};
    const Tensor x = random_uniform(DType::kFloat64, shape, -3, 3, 41);
    SpatialSoftArgmaxOptions o;
    o.channel_axis = axis;
    o.want_softmax = o.want_covariance = true;
    const SpatialSoftArgmaxResult want = spatial_soft_argmax(x, o);
    const DeviceBuffer dx(x), keypoints(DType::kFloat64, want.keypoints.shape()),
        s(DType::kFloat64, shape), cov(DType::kFloat64, want.covariance.shape());
    SpatialSoftArgmaxOutputs out{keypoints.out(), s.out(), cov.out()};
    spatial_soft_argmax_into(dx.view(), out, o);
    expect_close(keypoints.to_host(), want.keypoints, 1e-12, "keypoints");
    expect_close(s.to_host(), want.softmax, 1e-12, "softmax");
    expect_close(cov.to_host(), want.covariance, 1e-12, "covariance");
    const Tensor gk = random_uniform(DType::kFloat64, want.keypoints.shape(), -1, 1, 42);
    const Tensor gc = random_uniform(DType::kFloat64, want.covariance.shape(), -1, 1, 43);
    SpatialSoftArgmaxGrads host{gk.view(), std::nullopt, gc.view()};
    const DeviceBuffer dgk(gk), dgc(gc), dgx(DType::kFloat64, shape);
    SpatialSoftArgmaxGrads device{dgk.view(), std::nullopt, dgc.view()};
    const double grad_t = spatial_soft_argmax_backward_into(dx.view(), device, dgx.out(), o);
    EXPECT_TRUE(std::isnan(grad_t));
    expect_close(dgx.to_host(), spatial_soft_argmax_backward(x, host, o).grad_input, 1e-12,
                 "grad_input");
  }
}

// A bad label is no device-side abort: the call returns, the next check
// raises the CPU's message, and the device keeps working.
TEST_F(Cuda, BadLabelsAreTheLibrarysErrorAtTheNextCheck) {
  const Shape shape{2, 5, 4, 3};
  const Tensor x = random_uniform(DType::kFloat32, shape, -1, 1, 51);
  Tensor labels = random_labels(DType::kInt64, {2, 4, 3}, 5, 52);
  set_element(labels, 9, 5);
  set_element(labels, 17, -3);
  const DeviceBuffer dx(x), dlabels(labels), loss(DType::kFloat32, {}),
      grad(DType::kFloat32, shape);
  CrossEntropyOutputs out;
  out.loss = loss.out();
  out.grad_logits = grad.out();
  ASSERT_NO_THROW(cross_entropy_forward_backward_into(dx.view(), dlabels.view(), out));
  EXPECT_ERROR_MENTIONS(check_device_errors(),
                        {"cross_entropy_forward_backward_into", "targets[0, 3, 0]",
                         "(flat index 9)", "= 5", "expected in [0, 5)"});
  EXPECT_NO_THROW(check_device_errors());  // taken
  // The next device call after a failed kernel raises it too.
  ASSERT_NO_THROW(cross_entropy_forward_backward_into(dx.view(), dlabels.view(), out));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const Tensor good = random_labels(DType::kInt64, {2, 4, 3}, 5, 53);
  const DeviceBuffer dgood(good);
  CrossEntropyOutputs loss_only;
  loss_only.loss = loss.out();
  EXPECT_ERROR_MENTIONS(cross_entropy_into(dx.view(), dgood.view(), loss_only), {"flat index 9"});
  // And then the device computes as before.
  cross_entropy_into(dx.view(), dgood.view(), loss_only);
  ASSERT_NO_THROW(check_device_errors());
  expect_close(loss.to_host(), cross_entropy(x, good).loss, 2e-5, "loss after the error");
}

TEST_F(Cuda, BadWeightsAreTheLibrarysErrorAtTheNextCheck) {
  const Shape shape{2, 4, 6};
  const Tensor x = random_uniform(DType::kFloat64, shape, -1, 1, 61);
  const Tensor labels = random_labels(DType::kInt64, {2, 6}, 4, 62);
  Tensor w = random_uniform(DType::kFloat64, {4}, 0.5, 1, 63);
  set_element(w, 2, -1.0);
  const DeviceBuffer dx(x), dlabels(labels), dw(w), loss(DType::kFloat64, {});
  CrossEntropyOptions o;
  o.class_weight = dw.view();
  CrossEntropyOutputs out;
  out.loss = loss.out();
  ASSERT_NO_THROW(cross_entropy_into(dx.view(), dlabels.view(), out, o));
  EXPECT_ERROR_MENTIONS(check_device_errors(), {"cross_entropy_into", "class_weight[flat index 2]",
                                                "= -1", "finite and >= 0"});
}

// The fused call, captured into a CUDA graph on a stream of its own and
// replayed, gives the eager call's bits: no operation synchronises or
// allocates outside the stream's order.
TEST_F(Cuda, TheFusedCallIsCapturedInACudaGraph) {
  const Shape shape{4, 19, 9, 11};
  const Tensor x = random_uniform(DType::kFloat32, shape, -5, 5, 71);
  const Tensor labels = random_labels(DType::kInt64, {4, 9, 11}, 19, 72);
  CrossEntropyOptions o = CrossEntropyOptions::pytorch();
  const DeviceBuffer dx(x), dlabels(labels), loss(DType::kFloat32, {}),
      grad(DType::kFloat32, shape), loss_eager(DType::kFloat32, {}),
      grad_eager(DType::kFloat32, shape);
  CrossEntropyOutputs eager{loss_eager.out(), std::nullopt, std::nullopt, std::nullopt,
                            grad_eager.out()};
  cross_entropy_forward_backward_into(dx.view(), dlabels.view(), eager, o);  // warm-up
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ExecutionContext context;
  context.cuda_stream = stream;
  CrossEntropyOutputs out{loss.out(), std::nullopt, std::nullopt, std::nullopt, grad.out()};
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  cross_entropy_forward_backward_into(dx.view(), dlabels.view(), out, o, {}, context);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_TRUE(bitwise_equal(loss.to_host(), loss_eager.to_host()));
  EXPECT_TRUE(bitwise_equal(grad.to_host(), grad_eager.to_host()));
  expect_close(loss.to_host(), cross_entropy(x, labels, o).loss, 2e-5, "loss");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// No positions: the scalar is still written (NaN for a mean over nothing,
// 0 for a sum), as on the CPU, and bad class weights are still reported.
TEST_F(Cuda, EmptyInputsStillWriteTheirScalar) {
  const Tensor x(DType::kFloat32, {0, 4, 3});
  const Tensor labels(DType::kInt64, {0, 3});
  const DeviceBuffer dx(x), dlabels(labels), loss(DType::kFloat32, {});
  CrossEntropyOutputs out;
  out.loss = loss.out();
  cross_entropy_into(dx.view(), dlabels.view(), out);
  EXPECT_TRUE(std::isnan(loss.to_host().at(0)));
  CrossEntropyOptions sum;
  sum.reduction = Reduction::kSum;
  cross_entropy_into(dx.view(), dlabels.view(), out, sum);
  EXPECT_EQ(loss.to_host().at(0), 0.0);
  const Tensor bad = testing::values(DType::kFloat32, {4}, {1, 1, -2, 1});
  const DeviceBuffer dw(bad);
  sum.class_weight = dw.view();
  cross_entropy_into(dx.view(), dlabels.view(), out, sum);
  EXPECT_ERROR_MENTIONS(check_device_errors(), {"class_weight[flat index 2]", "= -2"});
}

// The fused pass written over the logits (an _into grad_logits view of X's
// own memory), class-last, where a warp shares each row.
TEST_F(Cuda, TheFusedPassOverTheLogitsMatchesTheCpu) {
  const Shape shape{3, 7, 45};
  const Tensor x = random_uniform(DType::kFloat32, shape, -4, 4, 91);
  const Tensor labels = random_labels(DType::kInt64, {3, 7}, 45, 92);
  CrossEntropyOptions o;
  o.class_axis = ClassAxis::kLast;
  const CrossEntropyResult want = cross_entropy_forward_backward(x, labels, o);
  const DeviceBuffer dx(x), dlabels(labels), loss(DType::kFloat32, {});
  CrossEntropyOutputs out;
  out.loss = loss.out();
  out.grad_logits = dx.out();
  cross_entropy_forward_backward_into(dx.view(), dlabels.view(), out, o);
  expect_close(loss.to_host(), want.loss, 2e-5, "loss");
  expect_close(dx.to_host(), want.grad_logits, 2e-5, "dX over X");
}

TEST_F(Cuda, TensorsOnAnotherDeviceThanTheCurrentOneAreRefused) {
  const Tensor x = random_uniform(DType::kFloat32, {2, 3}, -1, 1, 81);
  const DeviceBuffer dx(x), prob(DType::kFloat32, {2, 3});
  const TensorView elsewhere(dx.view().data(), DType::kFloat32, {2, 3}, Device::cuda(7));
  const MutableTensorView out(prob.out().data(), DType::kFloat32, {2, 3}, Device::cuda(7));
  EXPECT_ERROR_MENTIONS(softmax_into(elsewhere, out), {"softmax_into", "cuda:7"});
}

}  // namespace
}  // namespace spatialsoftmax
