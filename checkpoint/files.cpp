#include "checkpoint/files.h"

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
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <system_error>
#include <vector>

#include "base/errors.h"
#include "checkpoint/durable_file.h"
#include "checkpoint/write_progress.h"

namespace trainbus::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUnlockedSuffix = ".new";  // a temporary directory before it is locked
constexpr const char* kDeletedSuffix = ".del";   // an entry being deleted: never moved back
constexpr const char* kLinkEntry = "link";  // a new link, inside its locked temporary directory
constexpr const char* kOldEntry = "old";  // a replaced entry, inside its locked temporary directory

// Random per process, so that names differ from any earlier process's with the same pid. A plain
// array: it must outlive every writer, also one destroyed during static destruction.
const char* process_nonce() {
  static char nonce[17] = {};
  static std::once_flag made;
  std::call_once(made, [] {
    std::random_device device;
    std::snprintf(nonce, sizeof nonce, "%08x%08x", device(), device());
  });
  return nonce;
}

// The path a symlink inside a temporary directory will point at once it is at `final_path`.
std::string target_at(const std::string& link, const std::string& final_path) {
  std::error_code error;
  const fs::path target = fs::read_symlink(link, error);
  if (error) return {};
  return target.is_absolute() ? target.string()
                              : (fs::path(final_path).parent_path() / target).string();
}

// Removes `path` and everything below it, best effort, one step (note_write_step) per entry
// directly in it: a disk stuck while freeing a large checkpoint is told from a slow one that
// frees it file by file. Listed first, then removed: nothing is removed from under the listing.
void remove_in_steps(const std::string& path) noexcept {
  try {
    const fs::path top(path);
    std::error_code error;
    // A symlink (`last` as a link) is removed, never listed: listing would follow it into the
    // checkpoint it names, and remove that checkpoint's files.
    if (!fs::is_directory(fs::symlink_status(top, error))) {
      fs::remove(top, error);
      note_write_step();
      return;
    }
    std::vector<fs::path> entries;
    for (fs::directory_iterator it(top, error), end; !error && it != end; it.increment(error))
      entries.push_back(it->path());
    for (const fs::path& entry : entries) {
      fs::remove_all(entry, error);  // an entry that is a symlink: the link, not its target
      note_write_step();
    }
    fs::remove_all(top, error);  // what is left: nothing, unless the listing failed
    note_write_step();
  } catch (...) {
    // Out of memory: best effort, as every removal here; a leftover temporary is cleaned later.
  }
}

// Copies the file `from` to the new file `to` durably (fsynced), in chunks of at most 4 MiB, each
// a step: where hard links are refused, a copy of a large file on a slow disk shows progress.
void copy_file_durably(const std::string& from, const std::string& to) {
  int fd = -1;
  do {
    fd = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int error = errno;
    throw CheckpointError(::trainbus::detail::concat("cannot open ", from, " to copy it to ", to,
                                                     ": ", std::strerror(error)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  constexpr std::size_t kChunk = std::size_t{4} << 20;
  std::vector<char> buffer(kChunk);
  DurableFile out(to);
  for (;;) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      throw CheckpointError(::trainbus::detail::concat("cannot read ", from, " to copy it to ", to,
                                                       ": ", std::strerror(error)));
    }
    if (got == 0) break;
    out.write(buffer.data(), static_cast<std::size_t>(got));
  }
  out.close_durably();
}

}  // namespace

std::string temporary_checkpoint_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + kTemporarySuffix + std::to_string(::getpid()) + "-" + process_nonce() + "-" +
         std::to_string(counter++);
}

bool is_temporary_checkpoint(const std::string& path) {
  return fs::path(path).filename().string().find(kTemporarySuffix) != std::string::npos;
}

TemporaryDirectory::TemporaryDirectory(const std::string& final_path) : final_path_(final_path) {
  // Made under a name cleanup may remove (.new), locked, then given its name: a directory under
  // that name is always either locked by its live writer or left by a dead one. If cleanup took
  // the .new directory before it was locked, it is made again under a fresh name.
  constexpr int kAttempts = 8;
  for (int attempt = 1;; ++attempt) {
    const std::string name = temporary_checkpoint_name(final_path);
    const std::string unlocked = name + kUnlockedSuffix;
    if (::mkdir(unlocked.c_str(), 0755) != 0) {
      const int error = errno;
      throw CheckpointError(::trainbus::detail::concat(
          "cannot create ", unlocked, " for checkpoint ", final_path_, ": ", std::strerror(error)));
    }
    const int fd = ::open(unlocked.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // Never waits: a lock held by someone else is a cleanup's, which is removing this .new; then
    // it is made again under a fresh name. Where flock is refused (ENOLCK, EOPNOTSUPP: some network
    // filesystems) cleanup cannot lock it either and leaves it, so the write goes on unlocked.
    bool taken_by_cleanup = false;
    if (fd >= 0) {
      int locked;
      do {
        locked = ::flock(fd, LOCK_EX | LOCK_NB);
      } while (locked != 0 && errno == EINTR);
      taken_by_cleanup = locked != 0 && errno == EWOULDBLOCK;
    }
    if (fd >= 0 && !taken_by_cleanup && ::rename(unlocked.c_str(), name.c_str()) == 0) {
      fd_ = fd;
      path_ = name;
      return;
    }
    const int error = taken_by_cleanup ? ENOENT : errno;
    if (fd >= 0) ::close(fd);
    ::rmdir(unlocked.c_str());
    if (error != ENOENT || attempt == kAttempts) {
      throw CheckpointError(::trainbus::detail::concat("cannot make the temporary directory ", name,
                                                       " for checkpoint ", final_path_, ": ",
                                                       std::strerror(error)));
    }
  }
}

TemporaryDirectory::~TemporaryDirectory() {
  if (!committed_) remove_in_steps(path_);
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
  if (!fs::exists(existing) || (fs::is_symlink(incoming) && fs::is_symlink(existing))) {
    rename_durably(temporary, path);  // nothing there, or a symlink over a symlink: one rename
    return;
  }
  if (exchange_paths(temporary, path)) {
    // The old entry, now under the temporary name: marked as being deleted, then deleted.
    const std::string doomed = temporary_checkpoint_name(path) + kDeletedSuffix;
    fs::rename(temporary, doomed, error);
    remove_in_steps(error ? temporary : doomed);
    return;
  }
  // No atomic exchange on this filesystem, and rename(2) cannot replace a directory, nor put one
  // over a symlink: the old entry goes aside into a locked temporary directory first. A crash
  // between the two renames leaves `path` missing; the next cleanup puts the newer of the two back.
  TemporaryDirectory aside(path);  // removed, with the old entry, when this returns
  const std::string old = (fs::path(aside.path()) / kOldEntry).string();
  rename_durably(path, old);
  try {
    rename_durably(temporary, path);
  } catch (...) {
    fs::rename(old, path, error);  // put the old one back
    throw;
  }
  remove_in_steps(old);  // entry by entry, before the holder goes
}

void link_checkpoint(const std::string& target, const std::string& link) {
  // Made inside a locked temporary directory, so that a crash never leaves a bare link a later run
  // cannot tell from a live writer's.
  TemporaryDirectory holder(link);
  const std::string temporary = (fs::path(holder.path()) / kLinkEntry).string();
  std::error_code error;
  detail::before_write_step(link);
  fs::create_directory_symlink(fs::path(target).filename(), temporary, error);
  TRAINBUS_CHECK_AS(CheckpointError, !error, "cannot create the symlink ", link, ": ",
                    error.message());
  note_write_step();
  commit_checkpoint(temporary, link);
}

namespace {
// For tests: hard links fail with this errno once `simulated_links_that_succeed` more succeeded.
std::atomic<int> simulated_hard_link_error{0};
std::atomic<int> simulated_links_that_succeed{0};

// Whether a copy of the bytes may succeed where a hard link failed. A filesystem says "no links
// here" in many ways (EPERM on FAT and exFAT, EOPNOTSUPP, the NFS client's ENOTSUPP 524, EACCES
// or EINVAL from SMB and sshfs, EMLINK for a file with all the links it may have), so only the
// errors a copy would meet too are said at once, as the link's own: a full disk or quota, a
// read-only filesystem, no memory, a name too long. For any other, a copy that fails still says
// why it copied.
bool copy_may_answer(const std::error_code& link_error) {
  switch (link_error.value()) {
    case ENOSPC:
    case EDQUOT:
    case EROFS:
    case ENOMEM:
    case ENAMETOOLONG:
      return false;
    default:
      return true;
  }
}

// link(2), again while a signal interrupts it (FUSE answers an interrupted request with EINTR);
// an EEXIST after a retry (or after an NFS request sent again) is success where the name is the
// file itself.
std::error_code hard_link(const fs::path& from, const fs::path& to) {
  if (const int simulated = simulated_hard_link_error.load()) {
    if (simulated_links_that_succeed.fetch_sub(1) <= 0)
      return std::error_code(simulated, std::generic_category());
  }
  bool retried = false;
  for (;;) {
    if (::link(from.c_str(), to.c_str()) == 0) return {};
    const int error = errno;
    if (error == EINTR) {
      retried = true;
      continue;
    }
    std::error_code unknown;  // a name that cannot be compared is not the file
    if (error == EEXIST && retried && fs::equivalent(from, to, unknown)) return {};
    return std::error_code(error, std::generic_category());
  }
}
}  // namespace

void detail::simulate_hard_link_error(int error, int links_that_succeed) noexcept {
  simulated_links_that_succeed.store(links_that_succeed);
  simulated_hard_link_error.store(error);
}

void copy_checkpoint_as_links(const std::string& from, const std::string& to) {
  TemporaryDirectory copy(to);  // removed unless committed
  const std::string kept =
      ::trainbus::detail::concat(" (", to, " is not written; what was there is kept)");
  for (const auto& entry : fs::directory_iterator(from)) {
    const fs::path target = fs::path(copy.path()) / entry.path().filename();
    detail::before_write_step(target.string());
    const std::error_code error = hard_link(entry.path(), target);
    if (!error) {
      note_write_step();
      continue;
    }
    const std::string refused = ::trainbus::detail::concat(
        "cannot hard-link ", entry.path().string(), " as ", target.string(), ": ", error.message());
    TRAINBUS_CHECK_AS(CheckpointError, copy_may_answer(error), refused, kept);
    // No hard links here (some network and FUSE filesystems, exFAT): the bytes are copied, as
    // durably as a checkpoint is written, chunk by chunk.
    try {
      copy_file_durably(entry.path().string(), target.string());
    } catch (const CheckpointError& copy_error) {
      throw CheckpointError(
          ::trainbus::detail::concat(copy_error.what(), ", copied because ", refused, kept));
    }
  }
  copy.commit();
}

void remove_checkpoint(const std::string& path) {
  // Every removal is a file step (note_write_step), so that a disk stuck in an eviction is told
  // from a slow one that removes a large checkpoint file by file.
  std::error_code error;
  try {
    detail::before_write_step(path);
  } catch (...) {
    return;  // a simulated failure of the disk: as any failure here, ignored
  }
  const fs::file_status status = fs::symlink_status(path, error);
  if (error || !fs::exists(status)) return;
  if (!fs::is_directory(status)) {
    fs::remove(path, error);
    note_write_step();
    return;
  }
  const std::string doomed = temporary_checkpoint_name(path) + kDeletedSuffix;
  fs::rename(path, doomed, error);
  note_write_step();
  if (error) return;
  remove_in_steps(doomed);
}

std::size_t remove_stale_temporaries(const std::string& directory,
                                     const CheckpointCompleteness& complete) {
  std::size_t changed = 0;
  std::vector<int> locks;  // held until the end: no live writer can take these names meanwhile
  try {
    static const std::regex ours(R"((.+\.ckpt)\.tmp-[0-9]+(-[0-9a-f]+)?-[0-9]+(\.new|\.del)?)");
    struct Stale {
      std::string path;
      std::string final_path;
      bool plain;  // a write, a link holder or an old-entry holder (not .new, not .del, not a link)
    };
    std::vector<Stale> stale;
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(directory, error)) {
      const std::string name = entry.path().filename().string();
      std::smatch match;
      if (!std::regex_match(name, match, ours)) continue;
      const std::string path = entry.path().string();
      const std::string final_path = (fs::path(directory) / match[1].str()).string();
      struct stat info {};
      if (::lstat(path.c_str(), &info) != 0) continue;
      // Entries being deleted, and bare links (an entry a commit exchanged out, on its way to being
      // deleted, or a link as older versions made them): nothing anyone still needs.
      if (match[3] == kDeletedSuffix || S_ISLNK(info.st_mode)) {
        stale.push_back({path, final_path, false});
        continue;
      }
      if (!S_ISDIR(info.st_mode)) continue;
      const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) continue;
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);  // a live writer's, or a filesystem that cannot lock: not ours to decide
        continue;
      }
      // Unlocked: its writer is gone, or (.new) has not locked it yet, and then makes another. A
      // .new is never a candidate: removed at once, so that no writer meets its lock for long.
      if (match[3] == kUnlockedSuffix) {
        std::error_code ignored;
        if (fs::remove_all(path, ignored) > 0 && !ignored) ++changed;
        ::close(fd);
        continue;
      }
      locks.push_back(fd);
      stale.push_back({path, final_path, match[3].length() == 0});
    }
    // A final name that is missing gets the newest complete candidate: a write, a new link, or the
    // entry it was to replace.
    std::set<std::string> kept;
    if (complete) {
      struct Candidate {
        int64_t created;
        std::string path;
        std::string holder;
      };
      std::map<std::string, Candidate> newest;  // by final path
      for (const Stale& entry : stale) {
        if (!entry.plain || fs::exists(fs::symlink_status(entry.final_path, error))) continue;
        auto consider = [&](const std::string& path, const std::string& as_final) {
          const std::optional<int64_t> created = complete(as_final);
          if (!created) return;
          auto found = newest.find(entry.final_path);
          if (found == newest.end() || *created > found->second.created) {
            newest[entry.final_path] = {*created, path, entry.path};
          }
        };
        consider(entry.path, entry.path);
        for (const char* inner : {kLinkEntry, kOldEntry}) {
          const std::string path = (fs::path(entry.path) / inner).string();
          const fs::file_status status = fs::symlink_status(path, error);
          if (fs::is_symlink(status)) consider(path, target_at(path, entry.final_path));
          if (fs::is_directory(status)) consider(path, path);
        }
      }
      for (const auto& [final_path, candidate] : newest) {
        try {
          rename_durably(candidate.path, final_path);
          ++changed;
        } catch (const CheckpointError&) {
          kept.insert(candidate.holder);  // left as it is: the next run tries again
        }
      }
    }
    for (const Stale& entry : stale) {
      std::error_code ignored;
      if (kept.count(entry.path) == 0 && fs::exists(fs::symlink_status(entry.path, ignored)) &&
          fs::remove_all(entry.path, ignored) > 0 && !ignored) {
        ++changed;
      }
    }
  } catch (...) {
    // best effort: what is left is never loaded, and the next run tries again
  }
  for (int fd : locks) ::close(fd);
  return changed;
}

}  // namespace trainbus::checkpoint
