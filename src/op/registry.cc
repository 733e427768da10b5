#include "spatialsoftmax/op/registry.h"

#include "op/tables.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/op/schema.h"

namespace spatialsoftmax::op {

void register_operator(Device device, std::string type, OperatorFactory factory) {
  detail::ensure_builtins();
  if (!detail::schema_table().contains(type)) {
    throw Error("register_operator: " + type + " has no schema (define_schema first)");
  }
  detail::add_operator(device, std::move(type), std::move(factory));
}

std::vector<Device> devices_of(std::string_view type) {
  detail::ensure_builtins();
  std::vector<Device> devices;
  const auto& table = detail::operator_table();
  if (const auto it = table.find(type); it != table.end()) {
    for (const auto& [device, factory] : it->second) devices.push_back(device);
  }
  return devices;
}

std::unique_ptr<Operator> create_operator(const OperatorDef& def) {
  const OpSchema& schema = schema_of(def.type);
  schema.validate(def);
  const auto& table = detail::operator_table();
  const auto it = table.find(def.type);
  if (it != table.end()) {
    if (const auto f = it->second.find(def.device.device); f != it->second.end()) {
      return f->second(def);
    }
  }
  std::string where;
  for (Device d : devices_of(def.type))
    where += (where.empty() ? "" : ", ") + std::string(device_name(d));
  throw Error(describe(def) + ": not registered on device " +
              std::string(device_name(def.device.device)) +
              " (registered on: " + (where.empty() ? std::string("no device") : where) + ")");
}

}  // namespace spatialsoftmax::op
