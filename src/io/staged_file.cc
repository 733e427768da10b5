#include "io/staged_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <random>
#include <system_error>

#include "spatialsoftmax/error.h"

namespace spatialsoftmax::io {
namespace {

constexpr std::string_view kPrefix = ".spatialsoftmax-";
constexpr std::string_view kSuffix = ".tmp";

std::filesystem::path temporary_beside(const std::filesystem::path& final_path) {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  char name[64];
  const int n = std::snprintf(
      name, sizeof name, "%.*s%ld-%016llx%.*s", static_cast<int>(kPrefix.size()), kPrefix.data(),
      static_cast<long>(::getpid()), static_cast<unsigned long long>(random()),
      static_cast<int>(kSuffix.size()), kSuffix.data());
  return final_path.parent_path() / std::string(name, static_cast<std::size_t>(n));
}

// The pid in a temporary's name, or 0 if the name is not one of ours.
long pid_of_temporary(std::string_view name) {
  if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix)) return 0;
  name.remove_prefix(kPrefix.size());
  name.remove_suffix(kSuffix.size());
  const std::size_t dash = name.find('-');
  if (dash == std::string_view::npos || name.size() - dash - 1 != 16) return 0;
  long pid = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + dash, pid);
  if (ec != std::errc() || end != name.data() + dash || pid <= 0) return 0;
  for (char c : name.substr(dash + 1)) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return 0;
  }
  return pid;
}

}  // namespace

StagedFile::StagedFile(std::filesystem::path final_path)
    : final_path_(std::move(final_path)), temporary_path_(temporary_beside(final_path_)) {
  fd_ = ::open(temporary_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0) fail("cannot create the temporary " + temporary_path_.string(), errno);
}

StagedFile::StagedFile(StagedFile&& other) noexcept
    : final_path_(std::move(other.final_path_)),
      temporary_path_(std::move(other.temporary_path_)),
      fd_(other.fd_),
      committed_(other.committed_) {
  other.fd_ = -1;
  other.committed_ = true;  // nothing left for the moved-from object to remove
}

StagedFile::~StagedFile() {
  if (!committed_) discard();
}

void StagedFile::fail(const std::string& what, int error) const {
  throw Error("cannot write " + final_path_.string() + ": " + what + ": " + std::strerror(error));
}

void StagedFile::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temporary_path_.c_str());
}

void StagedFile::write(const void* data, std::size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Linux writes at most about 2 GiB per call.
    const ssize_t n = ::write(fd_, p, std::min<std::size_t>(bytes, std::size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("writing " + temporary_path_.string() + " failed", errno);
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

void StagedFile::sync() {
  if (fd_ < 0) return;
  // Without the fsync a crash of the machine (not of the process) after the
  // rename could leave an empty file under the final name.
  if (::fsync(fd_) != 0) fail("syncing " + temporary_path_.string() + " failed", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("closing " + temporary_path_.string() + " failed", errno);
}

void StagedFile::commit() {
  sync();
  if (::rename(temporary_path_.c_str(), final_path_.c_str()) != 0) {
    fail("renaming " + temporary_path_.string() + " into place failed", errno);
  }
  committed_ = true;
}

bool is_staged_temporary(std::string_view file_name) { return pid_of_temporary(file_name) != 0; }

void remove_stale_temporaries(const std::filesystem::path& dir) noexcept {
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const long pid = pid_of_temporary(it->path().filename().native());
    if (pid != 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      std::filesystem::remove(it->path(), ignored);
    }
  }
}

void check_can_replace(const std::filesystem::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      throw Error("cannot write " + path.string() + ": a folder of that name is in the way");
    }
    return;
  }
  if (errno != ENOENT) throw Error("cannot write " + path.string() + ": " + std::strerror(errno));
}

}  // namespace spatialsoftmax::io
