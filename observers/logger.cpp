#include "observers/logger.h"

#include <filesystem>
#include <regex>
#include <utility>

#include "base/errors.h"

namespace trainbus::observers {

Logger::Logger(int64_t log_every_n_steps) : log_every_n_steps_(log_every_n_steps) {
  TRAINBUS_CHECK(log_every_n_steps >= 1, "Logger: log_every_n_steps must be >= 1, got ",
                 log_every_n_steps);
}

void Logger::select_events(events::EventSelection& selection) const {
  selection.add<events::FitStart>()
      .add<events::SanityCheckStart>()
      .add<events::SanityCheckEnd>()
      .add<events::TrainBatchEnd>()  // every one: only the steps tell which make a row
      .add<events::StopRequested>()
      .add<events::TrainEpochEnd>()
      .add<events::ValidationEpochEnd>()
      .add<events::ValidationEnd>()
      .add<events::TestEpochEnd>()
      .add<events::TestEnd>()
      .add<events::MetricsLogged>()
      .add<events::HyperparamsLogged>()
      .add<events::FitEnd>()
      .add<events::Exception>();
}

void Logger::attached(const events::Placement& placement) {
  if (placed_) {
    // Its files are its rank's, written on its first pool's threads: moving them from this
    // thread would race with those.
    TRAINBUS_CHECK(placement.global_rank == global_rank_, name(), " writes rank ", global_rank_,
                   "'s files already (", files_dir(), "); it cannot also be added on rank ",
                   placement.global_rank, ": make a logger for each rank");
    return;  // attached again on its rank: the same files
  }
  open_files_in(rank_files_dir(log_dir(), placement.global_rank));  // may throw: not placed
  global_rank_ = placement.global_rank;
  placed_ = true;
}

std::string Logger::files_dir() const { return rank_files_dir(log_dir(), global_rank_); }

void Logger::on_metrics_logged(const events::MetricsLogged& event) {
  if (event.metrics.empty() || !(event.logger.empty() || event.logger == name())) return;
  log_metrics(event.metrics, event.step, /*epoch=*/-1);
}

void Logger::on_hyperparams_logged(const events::HyperparamsLogged& event) {
  if (!(event.logger.empty() || event.logger == name())) return;
  add_hyperparams(event.hparams);
}

void Logger::add_hyperparams(const std::map<std::string, std::string>& hparams) {
  for (const auto& [name, value] : hparams) hparams_[name] = value;
  log_hyperparams(hparams_);
}

void Logger::on_fit_start(const events::FitStart& event) {
  add_hyperparams(event.hparams);
  stop_requested_ = false;
  last_global_step_ = event.progress.global_step;  // a resumed fit's steps
  // As the Trainer's batches_that_stepped: from a resumed fit's global_step.
  batches_stepped_ = event.progress.global_step;
  batch_step_.reset();
  if (event.progress.global_step > 0) resume_at(event.progress.global_step);
}

void Logger::on_train_batch_end(const events::TrainBatchEnd& event) {
  // As Lightning's _LoggerConnector.update_train_step_metrics: no row for a batch that
  // accumulates; else one when should_update_logs, i.e. (_batches_that_stepped + 1) %
  // log_every_n_steps == 0 or a stop was asked for, at step _batches_that_stepped (the batches
  // that stepped before this one).
  // Batches that stepped, counted once each: in manual optimization a batch may take several
  // optimizer steps, and Lightning's rows still count batches.
  const int64_t steps_before = std::exchange(last_global_step_, event.progress.global_step);
  const bool stepped = event.progress.global_step > steps_before;
  batch_step_ = batches_stepped_;
  if (stepped) ++batches_stepped_;
  if (!stepped || event.metrics.empty()) return;
  if ((*batch_step_ + 1) % log_every_n_steps_ != 0 && !stop_requested_) return;
  log_metrics(event.metrics, *batch_step_, event.progress.epoch);
}

void Logger::on_train_epoch_end(const events::TrainEpochEnd& event) {
  batch_step_.reset();
  // Lightning's update_train_epoch_metrics: at the last batch's step (_batches_that_stepped - 1).
  if (!event.metrics.empty())
    log_metrics(event.metrics, batches_stepped_ > 0 ? batches_stepped_ - 1 : 0,
                event.progress.epoch);
  flush();
}

void Logger::on_validation_epoch_end(const events::ValidationEpochEnd& event) {
  if (!sanity_checking_ && !event.metrics.empty()) {
    // Validation in a training epoch runs before the batch's own step counts (Lightning).
    log_metrics(event.metrics, batch_step_.value_or(step_of(event.progress)), event.progress.epoch);
  }
}

void Logger::on_validation_end(const events::ValidationEnd& event) {
  if (!sanity_checking_) flush();
}

void Logger::on_test_epoch_end(const events::TestEpochEnd& event) {
  if (!event.metrics.empty())
    log_metrics(event.metrics, step_of(event.progress), event.progress.epoch);
}

void Logger::on_test_end(const events::TestEnd& event) { flush(); }

std::string next_version_dir(const std::string& root) {
  namespace fs = std::filesystem;
  int64_t next = 0;
  std::error_code error;
  if (fs::is_directory(root, error)) {
    static const std::regex version("version_([0-9]+)");
    for (const auto& entry : fs::directory_iterator(root, error)) {
      std::smatch match;
      const std::string name = entry.path().filename().string();
      if (entry.is_directory() && std::regex_match(name, match, version)) {
        next = std::max<int64_t>(next, std::stoll(match[1]) + 1);
      }
    }
  }
  return (fs::path(root) / ("version_" + std::to_string(next))).string();
}

std::string rank_files_dir(const std::string& log_dir, int64_t global_rank) {
  if (global_rank == 0 || log_dir.empty()) return log_dir;
  return (std::filesystem::path(log_dir) / ("rank_" + std::to_string(global_rank))).string();
}

}  // namespace trainbus::observers
