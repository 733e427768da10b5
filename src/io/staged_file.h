// Files that appear under their final name complete or not at all.
//
// A StagedFile is written under a hidden temporary name in the target's own
// folder (a rename is atomic only within one file system), synced, and then
// renamed over the final name by commit(). Until then an older file of that
// name is untouched; destroying an uncommitted StagedFile removes the
// temporary. A process killed before commit() leaves only the temporary:
// remove_stale_temporaries() deletes those of processes no longer alive.
//
// The temporary name does not contain the final name, so that a final name
// near the file system's length limit still gets a temporary.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace spatialsoftmax::io {

class StagedFile {
 public:
  // Creates the temporary beside `final_path`. Throws Error naming
  // final_path if the folder cannot hold it.
  explicit StagedFile(std::filesystem::path final_path);
  StagedFile(StagedFile&& other) noexcept;
  StagedFile& operator=(StagedFile&&) = delete;
  StagedFile(const StagedFile&) = delete;
  ~StagedFile();

  // Throws Error naming the final path and the system's reason (a full disk).
  void write(const void* data, std::size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Flushes the data to the disk and closes the temporary; throws on error.
  // After sync() only the rename is left, which cannot run out of space.
  void sync();
  // sync() if not yet done, then renames the temporary over the final name.
  void commit();

  const std::filesystem::path& final_path() const { return final_path_; }
  const std::filesystem::path& temporary_path() const { return temporary_path_; }

 private:
  [[noreturn]] void fail(const std::string& what, int error) const;
  void discard() noexcept;

  std::filesystem::path final_path_;
  std::filesystem::path temporary_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// The temporaries StagedFile leaves behind when its process is killed look
// like this: ".spatialsoftmax-<pid>-<random>.tmp".
bool is_staged_temporary(std::string_view file_name);

// Removes from `dir` the temporaries of processes that no longer run (a
// kill leaves them); those of live processes (a concurrent writer) stay.
// Errors are ignored: this is cleanup, not the work.
void remove_stale_temporaries(const std::filesystem::path& dir) noexcept;

// Throws Error naming `path` if a file could not later be renamed to it:
// its name too long for the file system, a folder in its place, no
// permission. Lets a writer of several files refuse before replacing any.
void check_can_replace(const std::filesystem::path& path);

}  // namespace spatialsoftmax::io
