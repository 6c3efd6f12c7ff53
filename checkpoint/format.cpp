#include "checkpoint/format.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <tuple>

#include <c10/util/Exception.h>
#include <torch/version.h>

#include "base/errors.h"
#include "checkpoint/durable_file.h"
#include "checkpoint/module_state.h"
#include "checkpoint/optimizer_state.h"
#include "proto/checkpoint.pb.h"

#ifndef TRAINBUS_VERSION
#define TRAINBUS_VERSION "unknown"
#endif

namespace trainbus::checkpoint {
namespace {

namespace fs = std::filesystem;
using Manifest = trainbus::checkpoint::Manifest;

StateDict to_state_dict(const Metrics& metrics) {
  StateDict dict;
  for (const auto& [name, value] : metrics) dict.insert(name, value);
  return dict;
}

StateDict to_state_dict(const c10::IValue& value, const std::string& path,
                        const std::string& part) {
  try {
    return StateDict::from_ivalue(value, part);
  } catch (const std::invalid_argument& error) {
    throw CheckpointError(::trainbus::detail::concat(
        "checkpoint ", path, ": part `trainer` entry `", part, "` is damaged: ", error.what()));
  }
}

// First line of a c10::Error, without LibTorch's C++ stack trace.
std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

std::string hex(uint32_t value) {
  char text[11];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

// Serialises one part into `file`, fsynced; returns its size and CRC32C.
FileDigest write_part(CheckpointPart& part, const std::string& file) {
  DurableFile out(file, /*direct=*/true);
  if (!part.serialized.empty()) {
    out.write(part.serialized.data(), part.serialized.size());
  } else {
    // LibTorch writes through a C zip library: an exception must not cross it. Nor may the writer
    // report a short write: LibTorch 1.13 then throws, and its PyTorchStreamWriter destructor
    // writes the end of the archive again and throws once more, which terminates the process.
    // So after the first failed write the rest is discarded, and the error is rethrown here.
    std::exception_ptr error;
    try {
      part.archive.save_to([&](const void* data, size_t size) -> size_t {
        if (error) return size;
        try {
          out.write(data, size);
        } catch (...) {
          error = std::current_exception();
        }
        return size;
      });
    } catch (const c10::Error& e) {
      if (error) std::rethrow_exception(error);
      throw CheckpointError(::trainbus::detail::concat("cannot serialise part `", part.name,
                                                       "` to ", file, ": ",
                                                       first_line(e.what_without_backtrace())));
    }
    if (error) std::rethrow_exception(error);
  }
  out.close_durably();
  return {out.size(), out.crc32c()};
}

Manifest make_manifest(const CheckpointSnapshot& snapshot) {
  Manifest manifest;
  manifest.set_format_version(kCheckpointFormatVersion);
  manifest.set_framework_version(TRAINBUS_VERSION);
  manifest.set_libtorch_version(TORCH_VERSION);
  manifest.set_created_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
  const CheckpointData& data = snapshot.data;
  manifest.set_epoch(data.epoch);
  manifest.set_global_step(data.global_step);
  if (data.loops.contains("batches_done_in_epoch")) {
    manifest.set_batches_done_in_epoch(data.loops.at("batches_done_in_epoch").toInt());
  }
  manifest.set_weights_only(snapshot.weights_only);
  for (const auto& [key, state] : data.callbacks) manifest.add_callback_state_keys(key);
  for (const auto& [name, value] : data.callback_metrics)
    (*manifest.mutable_callback_metrics())[name] = value;
  return manifest;
}

Manifest read_manifest(const std::string& path) {
  const std::string file = (fs::path(path) / kManifestFile).string();
  std::ifstream in(file, std::ios::binary);
  TRAINBUS_CHECK_AS(
      CheckpointError, in.good(), "checkpoint ", path, ": part `", kManifestFile,
      "` is missing; the checkpoint is incomplete or not a trainbus checkpoint directory");
  Manifest manifest;
  TRAINBUS_CHECK_AS(CheckpointError, manifest.ParseFromIstream(&in), "checkpoint ", path, ": ",
                    kManifestFile, " is damaged (not a valid manifest)");
  return manifest;
}

// Checks the layout and every part against the manifest; throws CheckpointError on the first
// problem.
void verify(const std::string& path, const Manifest& manifest) {
  TRAINBUS_CHECK_AS(CheckpointError, manifest.format_version() >= 1, "checkpoint ", path, ": ",
                    kManifestFile, " has no format version; it is damaged");
  TRAINBUS_CHECK_AS(CheckpointError, manifest.format_version() <= kCheckpointFormatVersion,
                    "checkpoint ", path, " has format version ", manifest.format_version(),
                    ", newer than this trainbus reads (", kCheckpointFormatVersion,
                    "); upgrade trainbus to load it");
  bool has_model = false, has_trainer = false;
  for (const auto& part : manifest.parts()) {
    has_model |= part.name() == "model";
    has_trainer |= part.name() == "trainer";
    const std::string file = (fs::path(path) / part.file()).string();
    TRAINBUS_CHECK_AS(CheckpointError, fs::is_regular_file(file), "checkpoint ", path, ": part `",
                      part.name(), "` (", part.file(), ") is missing");
    const FileDigest digest = digest_file(file);
    TRAINBUS_CHECK_AS(CheckpointError, digest.size == part.size(), "checkpoint ", path, ": part `",
                      part.name(), "` (", part.file(), ") is ",
                      digest.size < part.size() ? "truncated" : "too long", ": ", digest.size,
                      " bytes, the manifest says ", part.size());
    TRAINBUS_CHECK_AS(CheckpointError, digest.crc32c == part.crc32c(), "checkpoint ", path,
                      ": part `", part.name(), "` (", part.file(), ") has CRC32C ",
                      hex(digest.crc32c), ", the manifest says ", hex(part.crc32c()),
                      "; the file is damaged");
  }
  TRAINBUS_CHECK_AS(CheckpointError, has_model, "checkpoint ", path,
                    ": part `model` is missing from ", kManifestFile);
  TRAINBUS_CHECK_AS(CheckpointError, has_trainer, "checkpoint ", path,
                    ": part `trainer` is missing from ", kManifestFile);
}

void load_part(const std::string& path, const trainbus::checkpoint::Part& part,
               torch::serialize::InputArchive& archive) {
  try {
    archive.load_from((fs::path(path) / part.file()).string());
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        "checkpoint ", path, ": part `", part.name(), "` (", part.file(),
        ") cannot be read: ", first_line(error.what_without_backtrace())));
  }
}

void require_directory(const std::string& path) {
  TRAINBUS_CHECK_AS(CheckpointError, !is_temporary_checkpoint(path), "checkpoint ", path,
                    " is an unfinished write (a temporary directory left by a crash); load a "
                    "checkpoint without `",
                    kTemporarySuffix, "` in its name");
  TRAINBUS_CHECK_AS(CheckpointError, fs::exists(path), "checkpoint ", path, " not found");
  TRAINBUS_CHECK_AS(CheckpointError, fs::is_directory(path), "checkpoint ", path,
                    " is a file, not a trainbus checkpoint (a directory with a ", kManifestFile,
                    ")");
}

}  // namespace

torch::serialize::OutputArchive& add_trainer_part(CheckpointSnapshot& snapshot) {
  const CheckpointData& data = snapshot.data;
  StateDict dict;
  dict.insert("format_version", kCheckpointFormatVersion);
  dict.insert("weights_only", snapshot.weights_only);
  dict.insert("epoch", data.epoch);
  dict.insert("global_step", data.global_step);
  dict.insert("loops", data.loops);
  StateDict callbacks;
  for (const auto& [key, state] : data.callbacks) callbacks.insert(key, state);
  dict.insert("callbacks", callbacks);
  dict.insert("hyper_parameters", data.hyper_parameters);
  dict.insert("datamodule", data.datamodule);
  dict.insert("callback_metrics", to_state_dict(data.callback_metrics));
  dict.insert("extra", data.extra);
  snapshot.parts.emplace_back("trainer", "trainer.pt");
  snapshot.parts.back().archive.write("trainbus", dict.to_ivalue());
  return snapshot.parts.back().archive;
}

void write_checkpoint(CheckpointSnapshot& snapshot, const std::string& path) {
  const fs::path target(path);
  std::error_code error;
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(parent, error);
  TRAINBUS_CHECK_AS(CheckpointError, !error, "cannot create directory ", parent.string(),
                    " for checkpoint ", path, ": ", error.message());
  try {
    TemporaryDirectory directory(path);  // removed unless committed
    const std::string& temporary = directory.path();
    Manifest manifest = make_manifest(snapshot);
    for (CheckpointPart& part : snapshot.parts) {
      const FileDigest digest = write_part(part, (fs::path(temporary) / part.file).string());
      auto* entry = manifest.add_parts();
      entry->set_name(part.name);
      entry->set_file(part.file);
      entry->set_size(digest.size);
      entry->set_crc32c(digest.crc32c);
    }
    const std::string bytes = manifest.SerializeAsString();
    DurableFile manifest_file((fs::path(temporary) / kManifestFile).string());
    manifest_file.write(bytes.data(), bytes.size());
    manifest_file.close_durably();
    directory.commit();
  } catch (const CheckpointError& e) {
    throw CheckpointError(
        ::trainbus::detail::concat("cannot write checkpoint ", path, ": ", e.what()));
  }
}

LoadedCheckpoint read_checkpoint(const std::string& path) {
  require_directory(path);
  const Manifest manifest = read_manifest(path);
  verify(path, manifest);
  LoadedCheckpoint loaded;
  loaded.path = path;
  loaded.weights_only = manifest.weights_only();
  for (const auto& part : manifest.parts()) {
    if (part.name() == "model") {
      torch::serialize::InputArchive model;
      load_part(path, part, model);
      loaded.data.state_dict = read_module_state(model);
    } else if (part.name() == "trainer") {
      load_part(path, part, loaded.trainer);
    } else if (part.name().rfind("optimizer_", 0) == 0) {
      loaded.optimizer_files.push_back(part.file());
    }
  }
  c10::IValue root;
  try {
    loaded.trainer.read("trainbus", root);
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat("checkpoint ", path,
                                                     ": part `trainer` holds no `trainbus` entry: ",
                                                     first_line(error.what_without_backtrace())));
  }
  const StateDict dict = to_state_dict(root, path, "trainbus");
  for (const char* key : {"epoch", "global_step", "loops", "callbacks", "hyper_parameters",
                          "datamodule", "callback_metrics", "extra"}) {
    TRAINBUS_CHECK_AS(CheckpointError, dict.contains(key), "checkpoint ", path,
                      ": part `trainer` entry `", key,
                      "` is missing; the checkpoint is from an incompatible trainbus");
  }
  CheckpointData& data = loaded.data;
  data.epoch = dict.at("epoch").toInt();
  data.global_step = dict.at("global_step").toInt();
  data.loops = to_state_dict(dict.at("loops"), path, "loops");
  for (const auto& [key, state] : to_state_dict(dict.at("callbacks"), path, "callbacks")) {
    data.callbacks.emplace(key, to_state_dict(state, path, "callbacks/" + key));
  }
  data.hyper_parameters = to_state_dict(dict.at("hyper_parameters"), path, "hyper_parameters");
  data.datamodule = to_state_dict(dict.at("datamodule"), path, "datamodule");
  for (const auto& [name, value] :
       to_state_dict(dict.at("callback_metrics"), path, "callback_metrics")) {
    data.callback_metrics.emplace(name, value.toDouble());
  }
  data.extra = to_state_dict(dict.at("extra"), path, "extra");
  return loaded;
}

void read_optimizer_states(LoadedCheckpoint& checkpoint) {
  checkpoint.data.optimizer_states.clear();
  for (const std::string& file : checkpoint.optimizer_files) {
    const std::string what = "checkpoint " + checkpoint.path + ": part " + file;
    std::ifstream in(fs::path(checkpoint.path) / file, std::ios::binary);
    TRAINBUS_CHECK_AS(CheckpointError, in.is_open(), what, " cannot be opened");
    std::ostringstream bytes;
    bytes << in.rdbuf();
    checkpoint.data.optimizer_states.push_back(optimizer_state_from_bytes(bytes.str(), what));
  }
}

std::optional<CheckpointSummary> complete_checkpoint(const std::string& path) {
  try {
    const Manifest manifest = read_manifest(path);
    verify(path, manifest);
    return CheckpointSummary{path, manifest.epoch(), manifest.global_step(),
                             manifest.created_unix_ms()};
  } catch (const CheckpointError&) {
    return std::nullopt;  // not a checkpoint, or a damaged one
  }
}

std::vector<CheckpointSummary> list_complete_checkpoints(const std::string& directory) {
  std::vector<CheckpointSummary> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(directory, error)) {
    const std::string path = entry.path().string();
    if (is_temporary_checkpoint(path) || !fs::is_directory(entry.path(), error)) continue;
    if (std::optional<CheckpointSummary> summary = complete_checkpoint(path))
      found.push_back(*summary);
  }
  std::sort(found.begin(), found.end(), [](const CheckpointSummary& a, const CheckpointSummary& b) {
    return std::tie(a.global_step, a.created_unix_ms) > std::tie(b.global_step, b.created_unix_ms);
  });
  return found;
}

CheckpointReport inspect_checkpoint(const std::string& path) {
  CheckpointReport report;
  std::ostringstream text;
  text << "checkpoint " << path << "\n";
  Manifest manifest;
  try {
    require_directory(path);
    manifest = read_manifest(path);
  } catch (const CheckpointError& e) {
    report.problem = e.what();
    text << "  INVALID: " << report.problem << "\n";
    report.text = text.str();
    return report;
  }
  text << "  format version    " << manifest.format_version() << " (trainbus "
       << manifest.framework_version() << ", LibTorch " << manifest.libtorch_version() << ")\n";
  text << "  progress          epoch " << manifest.epoch() << ", global step "
       << manifest.global_step() << ", batches done in the epoch "
       << manifest.batches_done_in_epoch() << "\n";
  text << "  weights only      "
       << (manifest.weights_only() ? "yes (cannot resume training)" : "no") << "\n";
  text << "  parts\n";
  for (const auto& part : manifest.parts()) {
    char line[200];
    std::snprintf(line, sizeof line, "    %-14s %-16s %12llu bytes  crc32c %s\n",
                  part.name().c_str(), part.file().c_str(),
                  static_cast<unsigned long long>(part.size()), hex(part.crc32c()).c_str());
    text << line;
  }
  text << "  callback states  ";
  if (manifest.callback_state_keys().empty()) text << " (none)";
  for (const auto& key : manifest.callback_state_keys()) text << " " << key;
  text << "\n  callback metrics ";
  if (manifest.callback_metrics().empty()) text << " (none)";
  std::map<std::string, double> metrics(manifest.callback_metrics().begin(),
                                        manifest.callback_metrics().end());
  for (const auto& [name, value] : metrics) text << " " << name << "=" << value;
  text << "\n";
  try {
    LoadedCheckpoint loaded = read_checkpoint(path);
    read_optimizer_states(loaded);
    report.valid = true;
    text << "  VALID: every part matches the manifest and loads\n";
  } catch (const CheckpointError& e) {
    report.problem = e.what();
    text << "  INVALID: " << report.problem << "\n";
  }
  report.text = text.str();
  return report;
}

}  // namespace trainbus::checkpoint
