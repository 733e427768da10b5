// SpatialSoftmaxWithLoss and its gradient with order "NHWC" (an extension:
// Caffe2 refused all but NCHW): X (N, H, W, D) gives, in X's layout, the
// bits that the NCHW call gives on the same values (the class-first and
// class-last kernels agree bitwise below 256 classes), through the functions
// and through a net of the operators, for both Caffe2 variants.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/workspace.h"
#include "spatialsoftmax/spatialsoftmax.h"
#include "test_support.h"

namespace spatialsoftmax {
namespace {

using testing::bitwise_equal;
using testing::random_labels;
using testing::random_uniform;
using testing::set_element;

// A dense (N, H, W, D) copy of an (N, D, H, W) tensor.
Tensor to_nhwc(const Tensor& nchw) {
  const Shape& s = nchw.shape();
  const TensorView moved(nchw.data(), nchw.dtype(), {s[0], s[2], s[3], s[1]},
                         {s[1] * s[2] * s[3], s[3], 1, s[2] * s[3]});
  return Tensor::copy_of(moved);
}

struct Inputs {
  Tensor x, t, w;
};

Inputs inputs(DType dtype, std::int64_t classes, std::uint64_t seed) {
  Inputs in;
  in.x = random_uniform(dtype, {2, classes, 5, 7}, -4, 4, seed);
  in.t = random_labels(DType::kInt32, {2, 5, 7}, classes, seed + 1);
  set_element(in.t, 3, -1);
  set_element(in.t, 40, -1);
  in.w = random_uniform(dtype, {2, 5, 7}, 0, 2, seed + 2);
  return in;
}

TEST(Caffe2Nhwc, TheFunctionsGiveTheNchwBits) {
  std::uint64_t seed = 1;
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    for (std::int64_t classes : {1, 3, 19, 150}) {
      for (caffe2::Variant variant : {caffe2::Variant::kCpu, caffe2::Variant::kCuda}) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " D " + std::to_string(classes));
        const Inputs in = inputs(dtype, classes, seed += 3);
        caffe2::SpatialSoftmaxWithLossArgs nchw, nhwc;
        nchw.scale = nhwc.scale = 0.5f;
        nchw.variant = nhwc.variant = variant;
        nhwc.order = "NHWC";
        const Tensor x_nhwc = to_nhwc(in.x);
        const caffe2::LossOutputs a = caffe2::spatial_softmax_with_loss(in.x, in.t, in.w, nchw);
        const caffe2::LossOutputs b = caffe2::spatial_softmax_with_loss(x_nhwc, in.t, in.w, nhwc);
        EXPECT_EQ(b.prob.shape(), x_nhwc.shape());
        EXPECT_TRUE(bitwise_equal(b.prob, to_nhwc(a.prob)));
        EXPECT_TRUE(bitwise_equal(b.loss, a.loss));
        const Tensor d = Tensor::scalar(dtype, 1.5);
        const Tensor da =
            caffe2::spatial_softmax_with_loss_gradient(in.x, in.t, in.w, a.prob, d, nchw);
        const Tensor db =
            caffe2::spatial_softmax_with_loss_gradient(x_nhwc, in.t, in.w, b.prob, d, nhwc);
        EXPECT_TRUE(bitwise_equal(db, to_nhwc(da)));
      }
    }
  }
}

TEST(Caffe2Nhwc, ANetOfTheOperatorsAndItsGradientGiveTheNchwBits) {
  const Inputs in = inputs(DType::kFloat32, 19, 100);
  std::vector<Tensor> results[2];
  for (const char* order : {"NCHW", "NHWC"}) {
    const bool nhwc = std::string(order) == "NHWC";
    op::NetDef net;
    op::OperatorDef def = op::test::make_def("SpatialSoftmaxWithLoss", {"X", "T", "W"},
                                             {"P", "avg_loss"}, {{"order", std::string(order)}});
    net.ops.push_back(def);
    op::add_gradient_ops(net, {"avg_loss"});
    op::Workspace ws;
    ws.set("X", nhwc ? to_nhwc(in.x) : Tensor::copy_of(in.x));
    ws.set("T", Tensor::copy_of(in.t));
    ws.set("W", Tensor::copy_of(in.w));
    op::run_net(net, ws);
    for (const char* blob : {"P", "avg_loss", "X_grad"})
      results[nhwc].push_back(Tensor::copy_of(ws.get(blob)));
  }
  EXPECT_TRUE(bitwise_equal(results[1][0], to_nhwc(results[0][0])));
  EXPECT_TRUE(bitwise_equal(results[1][1], results[0][1]));
  EXPECT_TRUE(bitwise_equal(results[1][2], to_nhwc(results[0][2])));
}

TEST(Caffe2Nhwc, ShapeInferenceReadsTheOrder) {
  const op::OperatorDef def = op::test::make_def(
      "SpatialSoftmaxWithLoss", {"X", "T"}, {"P", "avg_loss"}, {{"order", std::string("NHWC")}});
  const op::TensorSpecs out =
      op::schema_of("SpatialSoftmaxWithLoss")
          .infer_outputs(def, {op::TensorSpec{DType::kFloat32, {2, 5, 7, 3}},
                               op::TensorSpec{DType::kInt32, {2, 5, 7}}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]->shape, (Shape{2, 5, 7, 3}));
  EXPECT_ERROR_MENTIONS(op::schema_of("SpatialSoftmaxWithLoss")
                            .infer_outputs(def, {op::TensorSpec{DType::kFloat32, {2, 3, 5, 7}},
                                                 op::TensorSpec{DType::kInt32, {2, 5, 7}}}),
                        {"T", "(2, 3, 5)"});
}

}  // namespace
}  // namespace spatialsoftmax
