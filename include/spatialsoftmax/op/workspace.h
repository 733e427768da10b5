// Workspaces of named blobs, and nets run over them.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/op/operator_def.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::op {

class Workspace {
 public:
  bool has(std::string_view name) const { return blobs_.find(name) != blobs_.end(); }
  // Throws Error naming the blob if absent.
  const Tensor& get(std::string_view name) const;
  void set(std::string name, Tensor value) {
    blobs_.insert_or_assign(std::move(name), std::move(value));
  }
  std::vector<std::string> names() const;  // sorted
  const std::map<std::string, Tensor, std::less<>>& blobs() const { return blobs_; }

 private:
  std::map<std::string, Tensor, std::less<>> blobs_;
};

// Creates every operator of the net first (so an unknown operator, a bad
// argument or an operator missing on its device is reported with the net
// still unrun), then runs them in order.
void run_net(const NetDef& net, Workspace& ws);
void run_operator(const OperatorDef& def, Workspace& ws);

}  // namespace spatialsoftmax::op
