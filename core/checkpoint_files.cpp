#include "core/checkpoint_files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <regex>
#include <system_error>
#include <vector>

#include "core/durable_file.h"
#include "events/check.h"

namespace trainbus {
namespace {

namespace fs = std::filesystem;

// Suffix of an entry on its way out (replaced or removed): never moved back into place.
constexpr const char* kOldSuffix = ".old";
// A temporary symlink lives microseconds in a live writer; one this old was left by a dead one.
constexpr std::chrono::seconds kStaleSymlinkAge(60);

// Random per process, so that names differ from any earlier process's with the same pid.
const std::string& process_nonce() {
  static const std::string nonce = [] {
    std::random_device device;
    char text[17];
    std::snprintf(text, sizeof text, "%08x%08x", device(), device());
    return std::string(text);
  }();
  return nonce;
}

// A directory entry's final name: the part before ".tmp-".
std::string final_name_of(const std::string& name) { return name.substr(0, name.find(kTemporarySuffix)); }

// Locks `fd` exclusively without waiting; true if it got the lock.
bool try_lock(int fd) { return ::flock(fd, LOCK_EX | LOCK_NB) == 0; }

}  // namespace

std::string temporary_checkpoint_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + kTemporarySuffix + std::to_string(::getpid()) + "-" + process_nonce() + "-" +
         std::to_string(counter++);
}

bool is_temporary_checkpoint(const std::string& path) {
  return fs::path(path).filename().string().find(kTemporarySuffix) != std::string::npos;
}

TemporaryDirectory::TemporaryDirectory(const std::string& final_path)
    : final_path_(final_path), path_(temporary_checkpoint_name(final_path)) {
  if (::mkdir(path_.c_str(), 0755) != 0) {
    const int error = errno;
    throw CheckpointError(detail::concat("cannot create ", path_, " for checkpoint ", final_path_, ": ",
                                         std::strerror(error)));
  }
  fd_ = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  // Best effort: where flock is refused (some network filesystems), cleanup of this name is left
  // undecided (remove_stale_temporaries skips what it cannot lock), never wrong.
  if (fd_ >= 0) (void)::flock(fd_, LOCK_EX | LOCK_NB);
}

TemporaryDirectory::~TemporaryDirectory() {
  if (!committed_) {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

void TemporaryDirectory::commit() {
  commit_checkpoint(path_, final_path_);
  committed_ = true;
}

void commit_checkpoint(const std::string& temporary, const std::string& path) {
  std::error_code error;
  const fs::file_status incoming = fs::symlink_status(temporary, error);
  if (fs::is_directory(incoming)) fsync_directory(temporary);
  const fs::file_status existing = fs::symlink_status(path, error);
  if (fs::exists(existing)) {
    if (exchange_paths(temporary, path)) {
      // The old entry, now under the temporary name: marked as on its way out, then removed.
      const std::string old = temporary + kOldSuffix;
      fs::rename(temporary, old, error);
      fs::remove_all(error ? temporary : old, error);
      return;
    }
    if (!fs::is_symlink(incoming) || fs::is_directory(existing)) {
      // No atomic exchange on this filesystem, and rename(2) cannot put a directory over a symlink
      // or a symlink over a directory: move the old one aside first. A crash in between leaves
      // `path` missing and the new entry complete under its temporary name, which the next run's
      // remove_stale_temporaries() moves into place.
      const std::string old = temporary_checkpoint_name(path) + kOldSuffix;
      rename_durably(path, old);
      rename_durably(temporary, path);
      fs::remove_all(old, error);
      return;
    }
  }
  rename_durably(temporary, path);  // nothing there, or a symlink over a symlink: one rename
}

void remove_checkpoint(const std::string& path) {
  std::error_code error;
  const fs::file_status status = fs::symlink_status(path, error);
  if (error || !fs::exists(status)) return;
  if (!fs::is_directory(status)) {
    fs::remove(path, error);
    return;
  }
  const std::string doomed = temporary_checkpoint_name(path) + kOldSuffix;
  fs::rename(path, doomed, error);
  if (error) return;
  fs::remove_all(doomed, error);
}

std::size_t remove_stale_temporaries(const std::string& directory, const CheckpointCompleteness& complete) {
  std::size_t changed = 0;
  try {
    static const std::regex ours(R"(.+\.ckpt\.tmp-[0-9]+(-[0-9a-f]+)?-[0-9]+(\.old)?)");
    struct Stale {
      std::string path;
      int fd;  // holds the lock while we decide (-1 for a symlink)
    };
    std::vector<Stale> stale;
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(directory, error)) {
      const std::string name = entry.path().filename().string();
      if (!std::regex_match(name, ours)) continue;
      const std::string path = entry.path().string();
      struct stat info {};
      if (::lstat(path.c_str(), &info) != 0) continue;
      if (S_ISLNK(info.st_mode)) {
        const auto age = std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(info.st_mtime);
        if (age >= kStaleSymlinkAge) stale.push_back({path, -1});
      } else if (S_ISDIR(info.st_mode)) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) continue;
        if (try_lock(fd)) {
          stale.push_back({path, fd});  // nobody holds it: its writer is gone
        } else {
          ::close(fd);  // a live writer (or a filesystem without flock): not ours to decide
        }
      }
    }
    // A final name that is missing gets the newest complete write for it (not an `.old` one).
    std::map<std::string, std::pair<int64_t, std::string>> newest;  // final path -> (created, temporary)
    if (complete) {
      for (const Stale& entry : stale) {
        const std::string name = fs::path(entry.path).filename().string();
        const bool on_its_way_out = name.size() >= 4 && name.compare(name.size() - 4, 4, kOldSuffix) == 0;
        if (entry.fd < 0 || on_its_way_out) continue;
        const std::string final_path = (fs::path(directory) / final_name_of(name)).string();
        if (fs::exists(fs::symlink_status(final_path, error))) continue;
        if (const std::optional<int64_t> created = complete(entry.path)) {
          auto found = newest.find(final_path);
          if (found == newest.end() || *created > found->second.first) newest[final_path] = {*created, entry.path};
        }
      }
    }
    for (const auto& [final_path, write] : newest) {
      try {
        rename_durably(write.second, final_path);
        ++changed;
      } catch (const CheckpointError&) {
        // left as it is: the next run tries again
      }
    }
    for (const Stale& entry : stale) {
      std::error_code ignored;
      if (fs::exists(fs::symlink_status(entry.path, ignored)) && fs::remove_all(entry.path, ignored) > 0 && !ignored) {
        ++changed;
      }
      if (entry.fd >= 0) ::close(entry.fd);
    }
  } catch (const std::exception&) {
    // best effort: what is left is never loaded, and the next run tries again
  }
  return changed;
}

}  // namespace trainbus
