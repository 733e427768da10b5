#include "spatialsoftmax/op/gradient.h"

#include <algorithm>
#include <map>
#include <set>

#include "op/tables.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::op {

void register_gradient(std::string type, GradientMaker maker) {
  detail::ensure_builtins();
  detail::add_gradient(std::move(type), std::move(maker));
}

bool has_gradient(std::string_view type) {
  detail::ensure_builtins();
  return detail::gradient_table().contains(type);
}

GradientOps make_gradient(const OperatorDef& forward,
                          const std::vector<std::string>& output_grads) {
  detail::ensure_builtins();
  const auto& table = detail::gradient_table();
  const auto it = table.find(forward.type);
  if (it == table.end())
    throw Error(describe(forward) + ": no gradient registered for " + forward.type);
  if (output_grads.size() != forward.outputs.size()) {
    throw Error(describe(forward) + ": expected " + std::to_string(forward.outputs.size()) +
                " output gradient names, got " + std::to_string(output_grads.size()));
  }
  GradientOps g = it->second(forward, output_grads);
  g.input_grads.resize(forward.inputs.size());
  for (OperatorDef& op : g.ops) {
    op.device = forward.device;
    op.engine = forward.engine;
    for (const Argument& a : forward.args) {
      if (op.find_arg(a.name) == nullptr) op.args.push_back(a);
    }
    op.is_gradient_op = true;
  }
  return g;
}

namespace {

void rename_output(std::vector<OperatorDef>& ops, const std::string& from, const std::string& to) {
  for (OperatorDef& op : ops) {
    for (std::string& name : op.outputs) {
      if (name == from) name = to;
    }
    for (std::string& name : op.inputs) {
      if (name == from) name = to;
    }
  }
}

}  // namespace

void add_gradient_ops(NetDef& net, const std::vector<std::string>& losses,
                      const std::map<std::string, std::string, std::less<>>& given_grads) {
  // SSA: each blob is written once, and never an external input.
  std::set<std::string, std::less<>> written(net.external_inputs.begin(),
                                             net.external_inputs.end());
  for (std::size_t k = 0; k < net.ops.size(); ++k) {
    for (const std::string& out : net.ops[k].outputs) {
      if (!out.empty() && !written.insert(out).second) {
        throw Error("add_gradient_ops: op " + std::to_string(k) + " " + describe(net.ops[k]) +
                    " writes blob '" + out +
                    "' a second time; gradients need a net where each blob is written once");
      }
    }
  }
  std::set<std::string, std::less<>> produced;
  for (const OperatorDef& op : net.ops) produced.insert(op.outputs.begin(), op.outputs.end());

  std::vector<OperatorDef> backward;
  // parts[B]: the blobs whose sum is the gradient of B, in the order found.
  std::map<std::string, std::vector<std::string>, std::less<>> parts;
  std::set<std::string, std::less<>> used_names = written;
  for (const std::string& loss : losses) {
    if (!produced.contains(loss)) {
      throw Error("add_gradient_ops: loss blob '" + loss + "' is not produced by any op of net '" +
                  net.name + "'");
    }
    if (!parts[loss].empty()) throw Error("add_gradient_ops: loss blob '" + loss + "' given twice");
    if (const auto given = given_grads.find(loss); given != given_grads.end()) {
      parts[loss].push_back(given->second);
      used_names.insert(given->second);
      continue;
    }
    OperatorDef seed = make_operator("ConstantFill", {loss}, {loss + "_grad"});
    seed.set_arg("value", 1.0f);
    for (const OperatorDef& op : net.ops) {  // on the device of the op producing the loss
      if (std::find(op.outputs.begin(), op.outputs.end(), loss) != op.outputs.end()) {
        seed.device = op.device;
      }
    }
    backward.push_back(std::move(seed));
    parts[loss].push_back(loss + "_grad");
    used_names.insert(loss + "_grad");
  }
  for (const auto& [loss, grad] : given_grads) {
    if (std::find(losses.begin(), losses.end(), loss) == losses.end()) {
      throw Error("add_gradient_ops: a gradient is given for '" + loss + "', which is not a loss");
    }
  }

  // The gradient of `blob`: its one part, or a Sum of its parts into B_grad.
  auto resolve = [&](const std::string& blob) -> std::string {
    auto it = parts.find(blob);
    if (it == parts.end() || it->second.empty()) return "";
    std::vector<std::string>& p = it->second;
    if (p.size() > 1) {
      backward.push_back(make_operator("Sum", p, {blob + "_grad"}));
      p = {blob + "_grad"};
    }
    return p.front();
  };

  for (std::size_t k = net.ops.size(); k-- > 0;) {
    const OperatorDef& op = net.ops[k];
    std::vector<std::string> output_grads;
    bool any = false;
    for (const std::string& out : op.outputs) {
      output_grads.push_back(out.empty() ? "" : resolve(out));
      any = any || !output_grads.back().empty();
    }
    if (!any) continue;
    if (!has_gradient(op.type)) {
      throw Error("add_gradient_ops: op " + std::to_string(k) + " " + describe(op) +
                  " has no registered gradient, and a loss depends on its outputs");
    }
    GradientOps g = make_gradient(op, output_grads);
    for (std::size_t i = 0; i < op.inputs.size(); ++i) {
      std::string grad = g.input_grads[i];
      if (grad.empty()) continue;
      const std::string& blob = op.inputs[i];
      std::vector<std::string>& p = parts[blob];
      if (!p.empty() || used_names.contains(grad)) {
        // A second contribution: give it its own name; a Sum adds them later.
        std::string renamed;
        for (int n = 0;; ++n) {
          renamed = blob + "_grad_autosplit_" + std::to_string(n);
          if (!used_names.contains(renamed)) break;
        }
        rename_output(g.ops, grad, renamed);
        grad = renamed;
      }
      used_names.insert(grad);
      p.push_back(grad);
    }
    for (OperatorDef& g_op : g.ops) backward.push_back(std::move(g_op));
  }
  // Blobs no op produces (external inputs) may still have several parts.
  for (auto& [blob, p] : parts) {
    if (p.size() > 1) resolve(blob);
  }
  for (OperatorDef& op : backward) net.ops.push_back(std::move(op));
}

}  // namespace spatialsoftmax::op
