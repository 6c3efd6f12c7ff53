#include "callbacks/spike_detection.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/core/ivalue.h>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "checkpoint/durable_file.h"
#include "core/trainer.h"

namespace trainbus::callbacks {

TrainingSpikeException::TrainingSpikeException(int64_t batch_idx)
    : std::runtime_error("Training spike detected in batch " + std::to_string(batch_idx)),
      batch_idx_(batch_idx) {}

SpikeDetection::SpikeDetection(SpikeDetectionOptions options) : options_(std::move(options)) {
  TRAINBUS_CHECK(options_.mode() == "min" || options_.mode() == "max",
                 "SpikeDetection: mode must be min or max, got '", options_.mode(), "'");
  TRAINBUS_CHECK(options_.window() >= 1, "SpikeDetection: window must be >= 1, got ",
                 options_.window());
  TRAINBUS_CHECK(options_.warmup() >= 0, "SpikeDetection: warmup must be >= 0, got ",
                 options_.warmup());
}

// As torchmetrics' MeanMetric in Lightning's Running window: a NaN takes its slot in the window
// but is left out of the sum and the count.
double SpikeDetection::running_mean() const {
  double sum = 0;
  std::size_t count = 0;
  for (const double value : window_) {
    if (std::isnan(value)) continue;
    sum += value;
    ++count;
  }
  return count == 0 ? std::numeric_limits<double>::quiet_NaN() : sum / static_cast<double>(count);
}

bool SpikeDetection::is_spike(double loss) const {
  if (options_.finite_only() && !std::isfinite(loss)) return true;
  const double change = loss - last_value_;
  const bool better = options_.mode() == "min" ? change <= 0.0 : change >= 0.0;
  if (better) return false;
  // Lightning's comparisons: false for a NaN on either side, so an empty window finds no spike.
  const double mean = running_mean();
  const double distance = std::abs(loss - mean);
  const bool beyond_atol = !options_.atol() || distance >= std::abs(*options_.atol());
  const bool beyond_rtol = !options_.rtol() || distance >= std::abs(*options_.rtol() * mean);
  return beyond_atol && beyond_rtol;
}

void SpikeDetection::update(double loss) {
  window_.push_back(loss);
  while (static_cast<int64_t>(window_.size()) > options_.window()) window_.pop_front();
  last_value_ = loss;
}

void SpikeDetection::setup(Trainer&, Module&, Stage stage) {
  if (stage != Stage::kFit) return;
  // A new fit has its own history; a resume restores it afterwards (load_state_dict).
  window_.clear();
  last_value_ = 0.0;
  bad_batches_.clear();
  path_.clear();
}

void SpikeDetection::on_train_batch_end(Trainer& trainer, Module&, const StepOutput& outputs,
                                        const Batch&, int64_t batch_idx) {
  TRAINBUS_CHECK(outputs.has_loss(),
                 "SpikeDetection watches the loss, but training_step returned none at batch ",
                 batch_idx, "; return the loss (or {\"loss\": loss, ...})");
  if (path_.empty()) {
    std::filesystem::path path = options_.exclude_batches_path().empty()
                                     ? std::filesystem::path(trainer.default_root_dir())
                                     : std::filesystem::path(options_.exclude_batches_path());
    if (path.extension() != ".json") path /= "skip_batches.json";
    path_ = path.string();
  }
  const double loss = outputs.loss().detach().item<double>();
  if (batch_idx >= options_.warmup() && is_spike(loss)) {
    // The batch before is listed too: it may have changed the weights that made this one spike.
    bad_batches_.push_back(batch_idx - 1);
    bad_batches_.push_back(batch_idx);
    if (trainer.is_global_zero() && !trainer.replaying()) {
      try {
        write_bad_batches();
        info("SpikeDetection: a loss spike at batch " + std::to_string(batch_idx) +
             "; the batches to skip are listed in " + path_);
      } catch (const std::exception& e) {
        // The spike matters more than its list: raise it all the same.
        warn("SpikeDetection: could not write the batches to skip to " + path_ + ": " + e.what());
      }
    }
    throw TrainingSpikeException(batch_idx);
  }
  if (std::isfinite(loss) || options_.finite_only()) update(loss);
}

void SpikeDetection::write_bad_batches() const {
  const std::filesystem::path path(path_);
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::string json = "[";
  for (std::size_t i = 0; i < bad_batches_.size(); ++i) {
    json += (i == 0 ? "\n    " : ",\n    ") + std::to_string(bad_batches_[i]);
  }
  json += bad_batches_.empty() ? "]" : "\n]";
  const std::string temporary = path_ + ".tmp-" + std::to_string(::getpid());
  std::filesystem::remove(temporary);  // left by a crash of an earlier process with this pid
  checkpoint::DurableFile file(temporary);
  file.write(json.data(), json.size());
  file.close_durably();
  checkpoint::rename_durably(temporary, path_);
}

StateDict SpikeDetection::state_dict() const {
  StateDict state;
  state.insert("last_val", last_value_);
  state.insert("mode", options_.mode());
  state.insert("warmup", options_.warmup());
  state.insert("atol", options_.atol() ? c10::IValue(*options_.atol()) : c10::IValue());
  state.insert("rtol", options_.rtol() ? c10::IValue(*options_.rtol()) : c10::IValue());
  state.insert("bad_batches", c10::List<int64_t>(bad_batches_));
  state.insert("bad_batches_path", path_);
  state.insert("window", c10::List<double>(std::vector<double>(window_.begin(), window_.end())));
  return state;
}

void SpikeDetection::load_state_dict(const StateDict& state) {
  // The options come from the constructor (a resumed run may change them); the history from the
  // checkpoint.
  last_value_ = state.at("last_val").toDouble();
  bad_batches_ = state.at("bad_batches").toIntVector();
  const std::vector<double> window = state.at("window").toDoubleVector();
  window_.assign(window.begin(), window.end());
  while (static_cast<int64_t>(window_.size()) > options_.window()) window_.pop_front();
  if (options_.exclude_batches_path().empty()) path_ = state.at("bad_batches_path").toStringRef();
}

}  // namespace trainbus::callbacks
