#include "op/tables.h"

#include <mutex>

#include "op/operators/builtin.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::op::detail {

std::map<std::string, std::unique_ptr<OpSchema>, std::less<>>& schema_table() {
  static std::map<std::string, std::unique_ptr<OpSchema>, std::less<>> table;
  return table;
}

std::map<std::string, std::map<Device, OperatorFactory>, std::less<>>& operator_table() {
  static std::map<std::string, std::map<Device, OperatorFactory>, std::less<>> table;
  return table;
}

std::map<std::string, GradientMaker, std::less<>>& gradient_table() {
  static std::map<std::string, GradientMaker, std::less<>> table;
  return table;
}

void ensure_builtins() {
  static std::once_flag once;
  std::call_once(once, [] { register_builtin_operators(); });
}

OpSchema& add_schema(std::string type) {
  auto [it, inserted] = schema_table().try_emplace(type, nullptr);
  if (!inserted) throw Error("define_schema: operator " + type + " already has a schema");
  it->second = std::make_unique<OpSchema>(std::move(type));
  return *it->second;
}

void add_operator(Device device, std::string type, OperatorFactory factory) {
  auto& per_device = operator_table()[type];
  if (!per_device.emplace(device, std::move(factory)).second) {
    throw Error("register_operator: " + type + " is already registered on " +
                std::string(device_name(device)));
  }
}

void add_gradient(std::string type, GradientMaker maker) {
  if (!gradient_table().emplace(type, std::move(maker)).second) {
    throw Error("register_gradient: " + type + " already has a gradient maker");
  }
}

}  // namespace spatialsoftmax::op::detail
