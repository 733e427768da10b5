#include "spatialsoftmax/op/workspace.h"

#include <memory>

#include "spatialsoftmax/error.h"
#include "spatialsoftmax/op/registry.h"

namespace spatialsoftmax::op {

const Tensor& Workspace::get(std::string_view name) const {
  const auto it = blobs_.find(name);
  if (it == blobs_.end()) throw Error("workspace: blob '" + std::string(name) + "' does not exist");
  return it->second;
}

std::vector<std::string> Workspace::names() const {
  std::vector<std::string> out;
  for (const auto& [name, blob] : blobs_) out.push_back(name);
  return out;
}

void run_net(const NetDef& net, Workspace& ws) {
  std::vector<std::unique_ptr<Operator>> ops;
  ops.reserve(net.ops.size());
  for (std::size_t k = 0; k < net.ops.size(); ++k) {
    try {
      ops.push_back(create_operator(net.ops[k]));
    } catch (const Error& e) {
      throw Error("net '" + net.name + "', op " + std::to_string(k) + ": " + e.what());
    }
  }
  for (std::size_t k = 0; k < ops.size(); ++k) {
    try {
      ops[k]->run(ws);
    } catch (const Error& e) {
      throw Error("net '" + net.name + "', op " + std::to_string(k) + ": " + e.what());
    }
  }
}

void run_operator(const OperatorDef& def, Workspace& ws) { create_operator(def)->run(ws); }

}  // namespace spatialsoftmax::op
