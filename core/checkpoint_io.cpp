#include "core/checkpoint_io.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

#include <c10/util/Exception.h>

#include "events/check.h"

namespace trainbus {
namespace {

namespace fs = std::filesystem;

StateDict to_state_dict(const Metrics& metrics) {
  StateDict dict;
  for (const auto& [name, value] : metrics) dict.insert(name, value);
  return dict;
}

StateDict to_state_dict(const c10::IValue& value, const std::string& path, const std::string& part) {
  try {
    return StateDict::from_ivalue(value, part);
  } catch (const std::invalid_argument& error) {
    throw CheckpointError(detail::concat("checkpoint ", path, ": part `", part, "` is damaged: ", error.what()));
  }
}

// First line of a c10::Error, without LibTorch's C++ stack trace.
std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

}  // namespace

void write_checkpoint_data(torch::serialize::OutputArchive& archive, const CheckpointData& data, bool weights_only) {
  StateDict dict;
  dict.insert("format_version", kCheckpointFormatVersion);
  dict.insert("weights_only", weights_only);
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
  archive.write("trainbus", dict.to_ivalue());
}

LoadedCheckpoint read_checkpoint(const std::string& path) {
  TRAINBUS_CHECK_AS(CheckpointError, fs::is_regular_file(path), "checkpoint ", path, " not found");
  LoadedCheckpoint loaded;
  loaded.path = path;
  c10::IValue root;
  try {
    loaded.archive.load_from(path);
    loaded.archive.read("trainbus", root);
  } catch (const c10::Error& error) {
    throw CheckpointError(detail::concat("checkpoint ", path, " cannot be read: ", first_line(error.what_without_backtrace()),
                                         "; the file is damaged or not a trainbus checkpoint"));
  }
  const StateDict dict = to_state_dict(root, path, "trainbus");
  // The version first: a newer format may lay out everything else differently.
  TRAINBUS_CHECK_AS(CheckpointError, dict.contains("format_version") && dict.at("format_version").isInt(),
                    "checkpoint ", path, ": part `format_version` is missing; the file is damaged or not a trainbus "
                    "checkpoint");
  const int64_t version = dict.at("format_version").toInt();
  TRAINBUS_CHECK_AS(CheckpointError, version <= kCheckpointFormatVersion, "checkpoint ", path,
                    " has format version ", version, ", newer than this trainbus reads (",
                    kCheckpointFormatVersion, "); upgrade trainbus to load it");
  for (const char* key : {"epoch", "global_step", "loops", "callbacks", "hyper_parameters", "datamodule",
                          "callback_metrics", "extra", "weights_only"}) {
    TRAINBUS_CHECK_AS(CheckpointError, dict.contains(key), "checkpoint ", path, ": part `", key,
                      "` is missing; the file is damaged or from an incompatible trainbus");
  }
  CheckpointData& data = loaded.data;
  loaded.weights_only = dict.at("weights_only").toBool();
  data.epoch = dict.at("epoch").toInt();
  data.global_step = dict.at("global_step").toInt();
  data.loops = to_state_dict(dict.at("loops"), path, "loops");
  for (const auto& [key, state] : to_state_dict(dict.at("callbacks"), path, "callbacks")) {
    data.callbacks.emplace(key, to_state_dict(state, path, "callbacks/" + key));
  }
  data.hyper_parameters = to_state_dict(dict.at("hyper_parameters"), path, "hyper_parameters");
  data.datamodule = to_state_dict(dict.at("datamodule"), path, "datamodule");
  for (const auto& [name, value] : to_state_dict(dict.at("callback_metrics"), path, "callback_metrics")) {
    data.callback_metrics.emplace(name, value.toDouble());
  }
  data.extra = to_state_dict(dict.at("extra"), path, "extra");
  return loaded;
}

void write_archive_atomically(torch::serialize::OutputArchive& archive, const std::string& path) {
  const fs::path target(path);
  std::error_code error;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), error);
  TRAINBUS_CHECK_AS(CheckpointError, !error, "cannot create directory ", target.parent_path().string(),
                    " for checkpoint ", path, ": ", error.message());
  const fs::path temporary = target.string() + ".tmp-" + std::to_string(::getpid());
  try {
    archive.save_to(temporary.string());
  } catch (const c10::Error& e) {
    fs::remove(temporary, error);
    throw CheckpointError(detail::concat("cannot write checkpoint ", path, ": ", first_line(e.what_without_backtrace())));
  }
  fs::rename(temporary, target, error);
  if (error) {
    const std::string cause = error.message();
    fs::remove(temporary, error);
    throw CheckpointError(detail::concat("cannot move checkpoint into place at ", path, ": ", cause));
  }
}

}  // namespace trainbus
