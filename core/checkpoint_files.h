#pragma once
/// The names a checkpoint lives under on disk, and the steps that change them atomically: a
/// checkpoint (a directory) or a `last` link appears under its final name only when complete,
/// replaces what was there in one step, and is removed without ever leaving a torn one behind.
/// No LibTorch: what is inside a checkpoint is core/checkpoint_io.h's business.

#include <cstddef>
#include <string>

namespace trainbus {

/// Marks a checkpoint directory (or link) still being written, or left by a crash; never loaded.
inline constexpr const char* kTemporarySuffix = ".tmp-";

/// A fresh name next to `path` for an entry still being written: `path`.tmp-<pid>-<n>.
std::string temporary_checkpoint_name(const std::string& path);

/// True if `path` names a temporary entry of an unfinished write.
bool is_temporary_checkpoint(const std::string& path);

/// Puts the finished entry `temporary` (a checkpoint directory, or a symlink to one) at `path`:
/// fsyncs a directory's entries, then exchanges it with whatever is at `path` (a directory or a
/// symlink, either kind for either: renameat2 RENAME_EXCHANGE), so that `path` exists at every
/// instant, then removes the old entry and fsyncs the parent. On a filesystem without
/// RENAME_EXCHANGE, a symlink replacing a symlink is still one rename(2); other replacements move
/// the old entry aside first, and a crash in between leaves it under a temporary name.
/// Throws CheckpointError naming the paths.
void commit_checkpoint(const std::string& temporary, const std::string& path);

/// Removes a checkpoint so that a crash half-way never leaves a torn one under its final name:
/// renamed to a temporary name first (atomic), then deleted. A symlink is just unlinked.
/// Best effort: failures are ignored (a leftover temporary entry is never loaded).
void remove_checkpoint(const std::string& path);

/// Removes the temporary entries in `directory` that writers of checkpoints named `*.ckpt` left
/// when their process died: `NAME.ckpt.tmp-<pid>-<n>` whose <pid> is not a live process other
/// than this one. Nothing else is touched (a user's files, another live run's writes). Returns
/// how many it removed. Best effort.
std::size_t remove_stale_temporaries(const std::string& directory);

}  // namespace trainbus
