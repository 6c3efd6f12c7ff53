#pragma once
/// The names a checkpoint lives under on disk, and the steps that change them atomically: a
/// checkpoint (a directory) or a `last` link appears under its final name only when complete,
/// replaces what was there in one step, and is removed without ever leaving a torn one behind.
/// No LibTorch: what is inside a checkpoint is core/checkpoint_io.h's business.
///
/// Names: a write in progress is `NAME.tmp-<pid>-<nonce>-<n>` (the nonce is random per process,
/// so a restarted process with the same pid, as PID 1 in a container, never reuses a name), and an
/// entry on its way out is the same with `.old` appended. Its writer holds an exclusive flock on a
/// temporary directory until it is committed or removed: a directory nobody holds was left by a
/// process that died, wherever it ran, and only then is it cleaned up.

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

namespace trainbus {

/// Marks a checkpoint entry still being written, or on its way out, or left by a crash; never loaded.
inline constexpr const char* kTemporarySuffix = ".tmp-";

/// A fresh name next to `path` for an entry still being written: `path`.tmp-<pid>-<nonce>-<n>.
std::string temporary_checkpoint_name(const std::string& path);

/// True if `path` names a temporary entry (a write in progress, an entry on its way out).
bool is_temporary_checkpoint(const std::string& path);

/// A new directory under a temporary name next to a checkpoint's final path, locked (flock) while
/// this object lives, so that remove_stale_temporaries() never takes it for a dead writer's.
/// Removed with its content by the destructor unless commit() moved it into place.
class TemporaryDirectory {
 public:
  /// Creates `temporary_checkpoint_name(final_path)`. Throws CheckpointError naming it.
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
/// network filesystems), a symlink replacing a symlink is still one rename(2); other replacements
/// move the old entry aside first, and a crash between the two renames leaves `path` missing with
/// the new entry complete under its temporary name: remove_stale_temporaries() moves it into place.
/// Throws CheckpointError naming the paths.
void commit_checkpoint(const std::string& temporary, const std::string& path);

/// Removes a checkpoint so that a crash half-way never leaves a torn one under its final name:
/// renamed aside first (atomic), then deleted. A symlink is just unlinked. Best effort: failures
/// are ignored (a leftover temporary entry is never loaded, and cleaned up later).
void remove_checkpoint(const std::string& path);

/// The temporary entries in `directory` left by writers of checkpoints named `*.ckpt` that died:
/// directories nobody holds locked (writers make a new `last` link inside such a directory too),
/// and bare temporary symlinks older than a minute (as older versions left them). Nothing else is touched: a user's files, a live run's
/// writes on this or another machine sharing the directory. Where a final name is missing but a
/// complete write for it is there (`complete(path)` says so and returns its creation time; a
/// commit cut by a crash without RENAME_EXCHANGE), the newest complete one is moved into place
/// instead of removed. Returns how many entries it removed or moved. Best effort: never throws.
using CheckpointCompleteness = std::function<std::optional<int64_t>(const std::string& path)>;
std::size_t remove_stale_temporaries(const std::string& directory, const CheckpointCompleteness& complete = {});

}  // namespace trainbus
