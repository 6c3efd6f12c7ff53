#include "observers/tensorboard_logger.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "base/tfrecord.h"
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

}  // namespace

TensorBoardLogger::TensorBoardLogger(TensorBoardLoggerOptions options)
    : Logger(options.log_every_n_steps()), options_(std::move(options)) {
  if (options_.log_dir().empty())
    throw std::invalid_argument("TensorBoardLogger: log_dir is empty; name the run directory");
  std::error_code error;
  std::filesystem::create_directories(options_.log_dir(), error);
  if (error)
    throw std::runtime_error(options_.log_dir() + ": cannot create the run directory (" +
                             error.message() + ")");
  path_ = (std::filesystem::path(options_.log_dir()) / event_file_name(options_.filename_suffix()))
              .string();
  file_.open(path_, std::ios::binary | std::ios::trunc);
  if (!file_) throw std::runtime_error(path_ + ": cannot create the TensorBoard event file");
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

void TensorBoardLogger::resume_at(int64_t step) {
  tensorboard::Event event;
  event.set_wall_time(wall_time());
  event.set_step(step);
  event.mutable_session_log()->set_status(tensorboard::SessionLog::START);
  write_record(event.SerializeAsString());
  flush();
}

void TensorBoardLogger::flush() {
  file_.flush();
  if (!file_) throw std::runtime_error(path_ + ": cannot write the TensorBoard event file");
}

void TensorBoardLogger::write_record(const std::string& payload) {
  const std::string record = tfrecord_frame(payload);
  file_.write(record.data(), static_cast<std::streamsize>(record.size()));
  if (!file_) throw std::runtime_error(path_ + ": cannot write the TensorBoard event file");
}

}  // namespace trainbus::observers
