// `spatialsoftmax ops [NAME]`.
#include <exception>
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/registry.h"
#include "spatialsoftmax/op/schema.h"

namespace spatialsoftmax::cli {

CLI::App* add_ops_command(CLI::App& app, OpsOptions& options) {
  CLI::App* command = app.add_subcommand(
      "ops", "List the registered operators with their devices, or print one operator's schema");
  command->add_option("NAME", options.name, "Operator type, e.g. SpatialSoftmaxWithLoss");
  return command;
}

int run_ops(const OpsOptions& options) {
  try {
    if (!options.name.empty()) {
      std::cout << op::schema_of(options.name).describe();
      std::cout << "devices:";
      for (op::Device d : op::devices_of(options.name)) std::cout << " " << op::device_name(d);
      std::cout << "\ngradient: " << (op::has_gradient(options.name) ? "registered" : "none")
                << "\n";
      return 0;
    }
    std::cout << std::left << std::setw(36) << "operator" << std::setw(12) << "devices"
              << "gradient\n";
    for (const std::string& type : op::schema_types()) {
      std::string devices;
      for (op::Device d : op::devices_of(type)) {
        if (!devices.empty()) devices += ",";
        devices += op::device_name(d);
      }
      std::cout << std::setw(36) << type << std::setw(12) << devices
                << (op::has_gradient(type) ? "yes" : "-") << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "spatialsoftmax ops: " << one_line(e.what()) << "\n";
    return 1;
  }
}

}  // namespace spatialsoftmax::cli
