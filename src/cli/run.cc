// `spatialsoftmax run NET --input NAME=FILE.npy ... --out DIR [--gradients B ...]
// [--device cpu|cuda[:N]]`.
#include <exception>
#include <iostream>
#include <optional>
#include <set>
#include <string>

#include "cli/commands.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/functions.h"
#include "spatialsoftmax/npy.h"
#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/net_io.h"
#include "spatialsoftmax/op/workspace.h"

namespace spatialsoftmax::cli {
namespace {

// Blob names may hold '/' (Caffe2 name scopes) or other characters a file
// name should not: those become '_'. Two blobs mapping to one file name is
// an error rather than a silent overwrite.
std::string file_stem(const std::string& blob) {
  std::string stem = blob;
  for (char& ch : stem) {
    const bool safe = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.';
    if (!safe) ch = '_';
  }
  if (stem.empty() || stem.front() == '.') stem = "_" + stem;
  return stem;
}

// "cpu", "cuda" or "cuda:N".
op::DeviceOption parse_device(const std::string& text) {
  op::DeviceOption d;
  if (text == "cpu") return d;
  d.device = op::Device::kCuda;
  if (text == "cuda") return d;
  const std::string digits = text.starts_with("cuda:") ? text.substr(5) : std::string();
  if (digits.empty() || digits.size() > 4 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    throw Error("--device: '" + text + "', expected cpu, cuda or cuda:N");
  }
  d.device_id = std::stoi(digits);
  return d;
}

Device memory_of(const op::DeviceOption& d) {
  return d.device == op::Device::kCuda ? Device::cuda(d.device_id) : Device::cpu();
}

}  // namespace

CLI::App* add_run_command(CLI::App& app, RunOptions& options) {
  CLI::App* command = app.add_subcommand(
      "run",
      "Run a Caffe2 net (.json, .pb or .pbtxt NetDef) on .npy inputs and write every blob as "
      "OUT_DIR/BLOB.npy; with --gradients, also the gradient net the registry builds");
  command->add_option("NET", options.net, "NetDef file: .pb, .pbtxt (.prototxt) or .json")
      ->required();
  command->add_option("--input", options.inputs, "A blob and its .npy file (repeatable)")
      ->type_name("NAME=FILE.npy");
  command->add_option("--out", options.out_dir, "Folder for the blobs (created if missing)")
      ->type_name("DIR")
      ->required();
  command
      ->add_option("--gradients", options.gradients,
                   "Loss blobs to differentiate (seeded with 1); the gradient of blob B is "
                   "written as B_grad.npy")
      ->type_name("LOSS_BLOB");
  command
      ->add_option("--device", options.device,
                   "Run every operator (the gradient net's too) on this device: cpu, cuda or "
                   "cuda:N (the inputs are copied there, the blobs back); default: each "
                   "operator's device_option")
      ->type_name("DEVICE");
  return command;
}

int run_run(const RunOptions& options) {
  try {
    op::NetDef net = op::read_net(options.net);
    const std::optional<op::DeviceOption> device =
        options.device.empty() ? std::nullopt
                               : std::optional<op::DeviceOption>(parse_device(options.device));
    op::Workspace ws;
    for (const std::string& spec : options.inputs) {
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
        throw Error("--input '" + spec + "': expected NAME=FILE.npy");
      }
      const std::string name = spec.substr(0, eq);
      if (ws.has(name)) throw Error("--input: blob '" + name + "' given twice");
      Tensor value = read_npy(spec.substr(eq + 1));
      ws.set(name, device ? copy_to(value, memory_of(*device)) : std::move(value));
    }
    if (!options.gradients.empty()) op::add_gradient_ops(net, options.gradients);
    if (device) {
      for (op::OperatorDef& def : net.ops) def.device = *device;
    }
    op::run_net(net, ws);

    std::map<std::string, Tensor> outputs;
    std::map<std::string, std::string> blob_of_file;
    for (const auto& [name, tensor] : ws.blobs()) {
      const std::string stem = file_stem(name);
      if (const auto [it, inserted] = blob_of_file.emplace(stem, name); !inserted) {
        throw Error("--out: blobs '" + it->second + "' and '" + name +
                    "' would both be written as " + stem + ".npy");
      }
      outputs.emplace(stem, copy_to(tensor, Device::cpu()));
    }
    write_outputs(options.out_dir, outputs);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "spatialsoftmax run: " << one_line(e.what()) << "\n";
    return 1;
  }
}

}  // namespace spatialsoftmax::cli
