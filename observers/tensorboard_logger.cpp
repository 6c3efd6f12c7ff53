#include "observers/tensorboard_logger.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include "base/errors.h"
#include "base/tfrecord.h"
#include "observers/hparams_file.h"
#include "proto/tensorboard.pb.h"

namespace trainbus::observers {
namespace {

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  return gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string("localhost");
}

// torch.utils.tensorboard's name: time, host, pid and a process-wide counter, so that two writers
// never collide and lexicographic order is chronological.
std::string event_file_name(const std::string& suffix) {
  static std::atomic<int> counter{0};
  char seconds[16];
  std::snprintf(seconds, sizeof seconds, "%010lld",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count()));
  return "events.out.tfevents." + std::string(seconds) + "." + host_name() + "." +
         std::to_string(::getpid()) + "." + std::to_string(counter++) + suffix;
}

// A hyper-parameter's typed YAML scalar as the hparams plugin's value, as
// torch.utils.tensorboard's hparams() sets it: numbers, strings, booleans; lists as their text.
// None (null) is left out, as there.
std::optional<tensorboard::HParamValue> plugin_value(const std::string& text) {
  tensorboard::HParamValue value;
  if (text == "null") return std::nullopt;
  if (text == "true" || text == "false") {
    value.set_bool_value(text == "true");
  } else if (text.size() >= 2 && text.front() == '\'' && text.back() == '\'') {
    std::string unquoted;  // yaml_quoted doubles a quote inside
    for (std::size_t i = 1; i + 1 < text.size(); ++i) {
      unquoted += text[i];
      if (text[i] == '\'' && text[i + 1] == '\'') ++i;
    }
    value.set_string_value(unquoted);
  } else {
    char* end = nullptr;
    const double number = std::strtod(text.c_str(), &end);
    if (!text.empty() && end == text.c_str() + text.size() && text.front() != '[') {
      value.set_number_value(number);
    } else {
      value.set_string_value(text);
    }
  }
  return value;
}

}  // namespace

TensorBoardLogger::TensorBoardLogger(TensorBoardLoggerOptions options)
    : Logger(options.log_every_n_steps()), options_(std::move(options)) {
  if (options_.log_dir().empty())
    throw std::invalid_argument("TensorBoardLogger: log_dir is empty; name the run directory");
  // The directory and the file wait until the logger is attached (or its first record): on a
  // rank R > 0 they belong in log_dir/rank_R, none of this rank's may land among rank 0's (where
  // TensorBoard would read it as part of rank 0's run), and a rank that does not run the logger
  // creates nothing.
  file_name_ = event_file_name(options_.filename_suffix());
  dir_ = options_.log_dir();
  path_ = (std::filesystem::path(dir_) / file_name_).string();
}

void TensorBoardLogger::open_files_in(const std::string& dir) {
  // Written to before it was attached (its hooks called directly): rank 0's file, kept.
  TRAINBUS_CHECK(!file_.is_open() || dir == dir_, name(), " wrote ", path_,
                 " before it was attached on a rank whose files go to ", dir,
                 ": attach it before giving it events, or make a logger for each rank");
  if (!file_.is_open()) create_file(dir);
}

void TensorBoardLogger::create_file(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error)
    throw std::runtime_error(dir + ": cannot create the run directory (" + error.message() + ")");
  const std::string path = (std::filesystem::path(dir) / file_name_).string();
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw std::runtime_error(path + ": cannot create the TensorBoard event file");
  dir_ = dir;
  path_ = path;
  file_ = std::move(file);
  tensorboard::Event first;
  first.set_wall_time(wall_time());
  first.set_file_version("brain.Event:2");
  first.mutable_source_metadata()->set_writer("trainbus");
  write_record(first.SerializeAsString());
  flush();
}

void TensorBoardLogger::log_metrics(const Metrics& metrics, int64_t step, int64_t epoch) {
  tensorboard::Event event;
  event.set_wall_time(wall_time());
  event.set_step(step);
  tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [name, value] : metrics) {
    tensorboard::Summary::Value* scalar = summary->add_value();
    scalar->set_tag(name);
    scalar->set_simple_value(static_cast<float>(value));  // TensorBoard scalars are float32
  }
  if (epoch >= 0) {
    tensorboard::Summary::Value* epoch_value = summary->add_value();
    epoch_value->set_tag("epoch");
    epoch_value->set_simple_value(static_cast<float>(epoch));
  }
  write_record(event.SerializeAsString());
}

void TensorBoardLogger::log_hyperparams(const std::map<std::string, std::string>& hparams) {
  // Each rank's directory keeps its own hparams.yaml, as CsvLogger's (see CsvLogger::use_dir).
  if (!file_.is_open()) create_file(dir_);  // not attached: rank 0's directory, created
  write_hparams_yaml((std::filesystem::path(dir_) / "hparams.yaml").string(), hparams);
  if (hparams.empty()) return;
  tensorboard::HParamsPluginData data;
  data.set_version(0);
  tensorboard::SessionStartInfo* session = data.mutable_session_start_info();
  session->set_start_time_secs(wall_time());
  for (const auto& [name, text] : hparams) {
    if (std::optional<tensorboard::HParamValue> value = plugin_value(text))
      (*session->mutable_hparams())[name] = *value;
  }
  tensorboard::Event event;
  event.set_wall_time(wall_time());
  tensorboard::Summary::Value* info = event.mutable_summary()->add_value();
  info->set_tag("_hparams_/session_start_info");
  tensorboard::SummaryMetadata::PluginData* plugin =
      info->mutable_metadata()->mutable_plugin_data();
  plugin->set_plugin_name("hparams");
  plugin->set_content(data.SerializeAsString());
  write_record(event.SerializeAsString());
}

void TensorBoardLogger::resume_at(int64_t step) {
  tensorboard::Event event;
  event.set_wall_time(wall_time());
  event.set_step(step);
  event.mutable_session_log()->set_status(tensorboard::SessionLog::START);
  write_record(event.SerializeAsString());
  flush();
}

void TensorBoardLogger::flush() {
  if (!file_.is_open()) return;  // nothing written yet
  file_.flush();
  if (!file_) throw std::runtime_error(path_ + ": cannot write the TensorBoard event file");
}

void TensorBoardLogger::write_record(const std::string& payload) {
  if (!file_.is_open()) create_file(dir_);  // fed events without being attached: rank 0's file
  const std::string record = tfrecord_frame(payload);
  file_.write(record.data(), static_cast<std::streamsize>(record.size()));
  if (!file_) throw std::runtime_error(path_ + ": cannot write the TensorBoard event file");
}

}  // namespace trainbus::observers
