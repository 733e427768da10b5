// The operator registry: operators are created by (type, device) from an
// OperatorDef. CPU operators are built in; CUDA ones exist only in CUDA builds.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "spatialsoftmax/op/operator_def.h"
#include "spatialsoftmax/op/workspace.h"

namespace spatialsoftmax::op {

class Operator {
 public:
  explicit Operator(OperatorDef def) : def_(std::move(def)) {}
  virtual ~Operator() = default;
  Operator(const Operator&) = delete;
  Operator& operator=(const Operator&) = delete;

  const OperatorDef& def() const { return def_; }
  // Reads the def's inputs from `ws` and writes its outputs there; throws
  // Error (naming the operator) on bad inputs, leaving `ws` unchanged.
  virtual void run(Workspace& ws) = 0;

 private:
  OperatorDef def_;
};

// Builds an operator from a def that its schema has validated.
using OperatorFactory = std::function<std::unique_ptr<Operator>(const OperatorDef&)>;

void register_operator(Device device, std::string type, OperatorFactory factory);
// Validates the def against its schema, then creates the operator for the
// def's device. Unknown type, or a type not registered on that device: Error
// naming the type and the devices where it is registered.
std::unique_ptr<Operator> create_operator(const OperatorDef& def);
// Devices on which `type` is registered (empty if none).
std::vector<Device> devices_of(std::string_view type);

}  // namespace spatialsoftmax::op
