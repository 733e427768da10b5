// What the subcommands share: one-line errors and all-or-nothing outputs.
#include <algorithm>
#include <system_error>

#include "cli/commands.h"
#include "spatialsoftmax/npy.h"

namespace spatialsoftmax::cli {

namespace fs = std::filesystem;

std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  return text;
}

void write_outputs(const fs::path& out_dir, const std::map<std::string, Tensor>& outputs) {
  fs::create_directories(out_dir);
  std::vector<fs::path> written;
  try {
    for (const auto& [name, tensor] : outputs) {
      const fs::path file = out_dir / (name + ".npy");
      write_npy(file, tensor);
      written.push_back(file);
    }
  } catch (...) {
    std::error_code ignored;
    for (const fs::path& file : written) fs::remove(file, ignored);
    throw;
  }
}

}  // namespace spatialsoftmax::cli
