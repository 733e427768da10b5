// The three registries' storage. Built-in operators are added on first use
// (ensure_builtins), never by static initializers, so that linking the static
// library keeps them all.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/registry.h"
#include "spatialsoftmax/op/schema.h"

namespace spatialsoftmax::op::detail {

std::map<std::string, std::unique_ptr<OpSchema>, std::less<>>& schema_table();
std::map<std::string, std::map<Device, OperatorFactory>, std::less<>>& operator_table();
std::map<std::string, GradientMaker, std::less<>>& gradient_table();

// Registers the built-in operators once (thread-safe).
void ensure_builtins();

// Raw additions, used by the built-in registration itself.
OpSchema& add_schema(std::string type);
void add_operator(Device device, std::string type, OperatorFactory factory);
void add_gradient(std::string type, GradientMaker maker);

}  // namespace spatialsoftmax::op::detail
