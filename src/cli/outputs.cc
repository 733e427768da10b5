// What the subcommands share: one-line errors and all-or-nothing outputs.
#include <algorithm>
#include <system_error>
#include <vector>

#include "cli/commands.h"
#include "io/npy_format.h"
#include "io/staged_file.h"
#include "spatialsoftmax/error.h"

namespace spatialsoftmax::cli {

namespace fs = std::filesystem;

std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  return text;
}

void write_outputs(const fs::path& out_dir, const std::map<std::string, Tensor>& outputs) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("--out " + out_dir.string() + ": cannot create the folder: " + ec.message());
  // Temporaries of runs that were killed; a later run is where they can go.
  io::remove_stale_temporaries(out_dir);

  std::vector<fs::path> files;
  for (const auto& [name, tensor] : outputs) {
    files.push_back(out_dir / (name + ".npy"));
    io::check_can_replace(files.back());
  }
  // Every file is complete on disk before the first older file is replaced;
  // on an error the StagedFiles' destructors remove the temporaries.
  std::vector<io::StagedFile> staged;
  staged.reserve(outputs.size());
  std::size_t i = 0;
  for (const auto& [name, tensor] : outputs) staged.push_back(io::stage_npy(files[i++], tensor));
  for (i = 0; i < staged.size(); ++i) {
    try {
      staged[i].commit();
    } catch (const Error& e) {
      // A rename that fails after the checks above (the folder removed
      // under us) cannot be undone for the files already renamed.
      std::string replaced;
      for (std::size_t j = 0; j < i; ++j) replaced += " " + files[j].filename().string();
      throw Error(std::string(e.what()) +
                  (i == 0 ? "; no output was replaced" : "; already replaced:" + replaced));
    }
  }
}

}  // namespace spatialsoftmax::cli
