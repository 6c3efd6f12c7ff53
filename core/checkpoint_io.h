#pragma once
/// Reading and writing trainbus checkpoint files (LibTorch archives).

#include <string>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "core/checkpoint_data.h"

namespace trainbus {

/// Version of the checkpoint layout; a reader refuses files from a newer one.
inline constexpr int64_t kCheckpointFormatVersion = 1;

/// A checkpoint read from disk: the hook-visible data, and the archive holding the tensors
/// ("model", "optimizers/<i>", "rng").
struct LoadedCheckpoint {
  std::string path;
  CheckpointData data;
  bool weights_only = false;
  torch::serialize::InputArchive archive;
};

/// Reads `path`. Throws CheckpointError naming the file and what is wrong with it.
LoadedCheckpoint read_checkpoint(const std::string& path);

/// Stores `data` (and the format version) in `archive`.
void write_checkpoint_data(torch::serialize::OutputArchive& archive, const CheckpointData& data, bool weights_only);

/// Writes `archive` to `path` through a temporary file in the same directory and a rename, so that
/// `path` is either the old file or the complete new one. Creates missing parent directories.
/// Throws CheckpointError naming the path and the cause.
void write_archive_atomically(torch::serialize::OutputArchive& archive, const std::string& path);

}  // namespace trainbus
