#pragma once
/// The names a checkpoint lives under on disk, and the steps that change them atomically: a
/// checkpoint (a directory) or a `last` link appears under its final name only when complete,
/// replaces what was there in one step, and is removed without ever leaving a torn one behind.
/// No LibTorch: what is inside a checkpoint is core/checkpoint_io.h's business.
///
/// Temporary entries sit next to the final name F, as `F.tmp-<pid>-<nonce>-<n>` (the nonce is
/// random per process, so a restarted process with the same pid, as PID 1 in a container, never
/// reuses a name) with a suffix saying what they are:
///   (none)  a write in progress: a directory its writer holds an exclusive flock on until it is
///           committed (a new `last` link is made inside such a directory too);
///   .new    such a directory in the microseconds before its writer has locked it (if cleanup
///           removes it then, the writer makes another);
///   .old    the previous entry at F, moved aside by a commit on a filesystem without
///           RENAME_EXCHANGE, locked by that commit until it is removed;
///   .del    an entry being deleted.
/// A directory nobody holds locked was left by a process that died; only then is it cleaned up.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace trainbus::checkpoint {

/// Marks a checkpoint entry still being written, or on its way out, or left by a crash; never
/// loaded.
inline constexpr const char* kTemporarySuffix = ".tmp-";

/// A fresh name next to `path` for an entry still being written: `path`.tmp-<pid>-<nonce>-<n>.
std::string temporary_checkpoint_name(const std::string& path);

/// True if `path` names a temporary entry (see above).
bool is_temporary_checkpoint(const std::string& path);

/// A new directory under a temporary name next to a checkpoint's final path, locked (flock) while
/// this object lives, so that remove_stale_temporaries() never takes it for a dead writer's.
/// Removed with its content by the destructor unless commit() moved it into place.
class TemporaryDirectory {
 public:
  /// Creates and locks it. Throws CheckpointError naming it.
  explicit TemporaryDirectory(const std::string& final_path);
  ~TemporaryDirectory();
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

  const std::string& path() const noexcept { return path_; }
  /// commit_checkpoint(path(), final path): from now on the directory is the checkpoint.
  void commit();

 private:
  std::string final_path_;
  std::string path_;
  int fd_ = -1;  // holds the flock
  bool committed_ = false;
};

/// Puts the finished entry `temporary` (a checkpoint directory, or a symlink to one) at `path`:
/// fsyncs a directory's entries, then exchanges it with whatever is at `path` (a directory or a
/// symlink, either kind for either: renameat2 RENAME_EXCHANGE), so that `path` exists at every
/// instant, then removes the old entry and fsyncs the parent. Without RENAME_EXCHANGE (some
/// network filesystems), a symlink replacing a symlink is still one rename(2); any replacement of
/// a directory, or by one, moves the old entry aside first (`.old`, locked), and a crash between
/// the two renames leaves `path` missing until remove_stale_temporaries() puts the newest complete
/// one of the two into place. Throws CheckpointError naming the paths.
void commit_checkpoint(const std::string& temporary, const std::string& path);

/// Makes `link` a relative symlink to the checkpoint `target` (in the same directory), replacing
/// what was there atomically (see commit_checkpoint).
void link_checkpoint(const std::string& target, const std::string& link);

/// Makes `to` a copy of the checkpoint directory `from` whose files are hard links (no bytes
/// copied; parts never change once written), replacing what was there atomically. Where a hard
/// link fails, the file is copied and fsynced, in chunks of at most 4 MiB, unless the failure is
/// one a copy meets too (ENOSPC, EDQUOT, EROFS, ENOMEM, ENAMETOOLONG): then, as when the copy
/// fails, it throws CheckpointError with the link's own error, and what was at `to` is kept.
void copy_checkpoint_as_links(const std::string& from, const std::string& to);

namespace detail {
/// Makes copy_checkpoint_as_links()'s hard links fail with the errno `error` (0: they do not
/// fail) once `links_that_succeed` more have succeeded, as a filesystem that refuses them (EPERM)
/// or a disk that fills up (ENOSPC) does (tests of the copy).
void simulate_hard_link_error(int error, int links_that_succeed = 0) noexcept;
}  // namespace detail

/// Removes a checkpoint so that a crash half-way never leaves a torn one under its final name:
/// renamed aside first (atomic), then deleted. A symlink is just unlinked. Best effort: failures
/// are ignored (a leftover temporary entry is never loaded, and cleaned up later).
void remove_checkpoint(const std::string& path);

/// Tells whether `path` (a checkpoint directory, or a link to one) is a complete checkpoint, and
/// when it was created (to pick the newest of several); nullopt if it is not complete.
using CheckpointCompleteness = std::function<std::optional<int64_t>(const std::string& path)>;

/// Cleans up what writers of checkpoints named `*.ckpt` in `directory` left when they died:
/// temporary directories nobody holds locked, entries being deleted (`.del`) and bare temporary
/// links (an old entry a commit exchanged out, on its way to deletion). Nothing else is touched:
/// a user's files, a live writer's entries (locked), directories it cannot lock (a filesystem
/// without flock: they stay, never loaded). Where a final name is missing (a commit cut between its
/// two renames), the newest complete candidate for it, a new write, a new link or the `.old` entry,
/// is moved into place instead of removed. An unlocked `.new` directory (a live writer's, before it
/// locked it) is removed too: that writer never waits for the lock and starts again under another
/// name. Assumes every writer in `directory` is this version: older builds made their links
/// under a bare temporary name, which this removes. Returns how many entries it removed or moved.
/// Never throws.
std::size_t remove_stale_temporaries(const std::string& directory,
                                     const CheckpointCompleteness& complete = {});

}  // namespace trainbus::checkpoint
