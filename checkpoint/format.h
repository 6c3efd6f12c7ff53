#pragma once
/// The checkpoint on disk: a directory (named like Lightning's files, `epoch=3-step=1200.ckpt`)
/// holding one LibTorch archive per part and a protobuf MANIFEST listing each part's size and
/// CRC32C. It is written under a temporary name, fsynced, and renamed into place, so that a
/// directory with the final name is always complete; a reader checks every part against the
/// manifest before it loads anything.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/serialize/input-archive.h>

#include "checkpoint/checkpoint_data.h"
#include "checkpoint/files.h"
#include "checkpoint/snapshot.h"

namespace trainbus::checkpoint {

/// Version of the checkpoint layout; a reader refuses a newer one.
inline constexpr int64_t kCheckpointFormatVersion = 2;
/// The manifest's file name inside a checkpoint directory.
inline constexpr const char* kManifestFile = "MANIFEST";

/// A checkpoint read from disk and verified: what its hooks see (the weights included; the
/// optimizer states once read_optimizer_states has read them), and the archive of the part
/// "trainer" for the rest.
struct LoadedCheckpoint {
  std::string path;
  CheckpointData data;
  bool weights_only = false;
  /// The parts "optimizer_<i>" in order, by file name: verified, read by read_optimizer_states.
  std::vector<std::string> optimizer_files;
  torch::serialize::InputArchive trainer;  ///< "trainbus" (data), "schedulers", "rng.torch_cpu"
};

/// Adds `data` as the part "trainer" (with the format version), for the Trainer to add the
/// scheduler and RNG state to.
torch::serialize::OutputArchive& add_trainer_part(CheckpointSnapshot& snapshot);

/// Serialises every part into `path`.tmp-*, fsyncs each file and the manifest, renames the
/// directory to `path` (atomically replacing an existing checkpoint there) and fsyncs the parent.
/// On failure removes the temporary directory and throws CheckpointError naming the path and the
/// cause; whatever was at `path` before is untouched.
void write_checkpoint(CheckpointSnapshot& snapshot, const std::string& path);

/// Reads and verifies `path`. Throws CheckpointError naming the file, the part and the problem
/// (missing, truncated, bad CRC, newer format, not a checkpoint).
LoadedCheckpoint read_checkpoint(const std::string& path);

/// Reads the optimizer states of `checkpoint` into checkpoint.data.optimizer_states (only a
/// resumed fit needs them: evaluating from a checkpoint never reads them, so that a part an
/// optimizer's own save() wrote cannot stop it). Throws CheckpointError naming the path and the
/// part for a part that is no LibTorch archive.
void read_optimizer_states(LoadedCheckpoint& checkpoint);

/// What `trainbus ckpt inspect` prints: the manifest, progress and callback states, and whether
/// every part matches it. Never throws for a damaged checkpoint; says what is wrong instead.
struct CheckpointReport {
  bool valid = false;
  std::string problem;  ///< why it is not valid
  std::string text;     ///< human-readable summary
};
CheckpointReport inspect_checkpoint(const std::string& path);

/// A complete checkpoint found in a directory.
struct CheckpointSummary {
  std::string path;
  int64_t epoch = 0;
  int64_t global_step = 0;
  int64_t created_unix_ms = 0;
};
/// `path` if it is a checkpoint whose every part matches its manifest; nullopt otherwise.
std::optional<CheckpointSummary> complete_checkpoint(const std::string& path);
/// The checkpoints directly in `directory` whose every part matches their manifest, newest first
/// (by global step, then creation time). Temporary and damaged ones are left out.
std::vector<CheckpointSummary> list_complete_checkpoints(const std::string& directory);

}  // namespace trainbus::checkpoint
