// The gradient registry: for each differentiable operator a gradient maker
// that, given the forward OperatorDef and the names of its outputs' gradient
// blobs, emits the gradient OperatorDefs (Caffe2's GradientMakerBase
// conventions: the gradient of blob B is named B_grad).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/op/operator_def.h"

namespace spatialsoftmax::op {

struct GradientOps {
  std::vector<OperatorDef> ops;
  // One entry per forward input: the blob the ops write its gradient to, or
  // "" when the input gets none (labels, weights).
  std::vector<std::string> input_grads;
};

// `output_grads` has one entry per forward output: the blob holding its
// gradient, or "" when none flows into it.
using GradientMaker = std::function<GradientOps(const OperatorDef& forward,
                                                const std::vector<std::string>& output_grads)>;

void register_gradient(std::string type, GradientMaker maker);
bool has_gradient(std::string_view type);

// Runs the maker, then copies the forward op's device option, engine and
// every argument into each gradient op and marks it as a gradient op, as
// Caffe2's GetGradientForOp did. Error if none is registered.
GradientOps make_gradient(const OperatorDef& forward, const std::vector<std::string>& output_grads);

// Appends to `net` the operators computing the gradient of each blob in
// `losses` with respect to every blob it depends on: each loss gradient is
// seeded with 1 (a ConstantFill shaped like the loss, as Caffe2 did), the
// forward ops are visited in reverse, and a blob whose gradient comes from
// several operators gets its parts (the first B_grad, the others
// B_grad_autosplit_K) added in place by a Sum op into B_grad. The net must be in SSA form (each
// blob written once). `given_grads` maps a loss to a blob that already holds its upstream gradient
// (a map for an unreduced loss), used instead of the seed of 1.
void add_gradient_ops(NetDef& net, const std::vector<std::string>& losses,
                      const std::map<std::string, std::string, std::less<>>& given_grads = {});

}  // namespace spatialsoftmax::op
