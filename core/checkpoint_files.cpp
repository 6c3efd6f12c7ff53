#include "core/checkpoint_files.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <regex>
#include <system_error>

#include "core/durable_file.h"
#include "events/check.h"

namespace trainbus {
namespace {

namespace fs = std::filesystem;

// Whether process `pid` is gone (ESRCH); a live one, or one we may not signal, is kept.
bool process_is_gone(long long pid) { return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

}  // namespace

std::string temporary_checkpoint_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + kTemporarySuffix + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

bool is_temporary_checkpoint(const std::string& path) {
  return fs::path(path).filename().string().find(kTemporarySuffix) != std::string::npos;
}

void commit_checkpoint(const std::string& temporary, const std::string& path) {
  std::error_code error;
  const fs::file_status incoming = fs::symlink_status(temporary, error);
  if (fs::is_directory(incoming)) fsync_directory(temporary);
  const fs::file_status existing = fs::symlink_status(path, error);
  if (fs::exists(existing)) {
    if (exchange_paths(temporary, path)) {
      fs::remove_all(temporary, error);  // the old entry, now under the temporary name
      return;
    }
    if (!fs::is_symlink(incoming) || fs::is_directory(existing)) {
      // No atomic exchange on this filesystem, and rename(2) cannot put a directory over a symlink
      // or a symlink over a directory: move the old one aside first; a crash in between leaves it
      // under a temporary name, which a later run removes (remove_stale_temporaries).
      const std::string old = temporary_checkpoint_name(path);
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
  const std::string doomed = temporary_checkpoint_name(path);
  fs::rename(path, doomed, error);
  if (error) return;
  fs::remove_all(doomed, error);
}

std::size_t remove_stale_temporaries(const std::string& directory) {
  static const std::regex ours(R"(.+\.ckpt\.tmp-([0-9]+)-[0-9]+)");
  std::size_t removed = 0;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(directory, error)) {
    const std::string name = entry.path().filename().string();
    std::smatch match;
    if (!std::regex_match(name, match, ours)) continue;
    const long long pid = std::stoll(match[1]);
    if (pid == static_cast<long long>(::getpid()) || !process_is_gone(pid)) continue;
    std::error_code ignored;
    if (fs::remove_all(entry.path(), ignored) > 0 && !ignored) ++removed;
  }
  return removed;
}

}  // namespace trainbus
