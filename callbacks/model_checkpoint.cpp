#include "callbacks/model_checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <regex>
#include <system_error>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "base/python_format.h"
#include "checkpoint/durable_file.h"
#include "checkpoint/format.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

namespace fs = std::filesystem;

// As Lightning's `filename.format(metrics)` on tensors: Python's format(value, spec) of an int
// (epoch, step) or a float (a logged metric).
std::string format_value(double value, const std::string& spec, bool integer,
                         const std::string& filename) {
  std::string why;
  try {
    return integer ? python_format(static_cast<int64_t>(std::llround(value)), spec)
                   : python_format(value, spec);
  } catch (const std::invalid_argument& error) {
    why = error.what();
  }
  throw MisconfigurationError(::trainbus::detail::concat(
      "ModelCheckpoint filename `", filename, "`: format spec `:", spec, "` is not supported (",
      why, "); use one of Python's for ", integer ? "an int" : "a float",
      " such as `:.2f`, `:.3e`, `:.1%`", integer ? " or `:03d`" : ""));
}

}  // namespace

ModelCheckpoint::ModelCheckpoint(ModelCheckpointOptions options) : options_(std::move(options)) {
  const ModelCheckpointOptions& o = options_;
  TRAINBUS_CHECK(o.save_top_k() >= -1,
                 "ModelCheckpoint: invalid value for save_top_k=", o.save_top_k(),
                 "; must be >= -1");
  TRAINBUS_CHECK(o.mode() == "min" || o.mode() == "max",
                 "ModelCheckpoint: mode must be \"min\" or \"max\", got \"", o.mode(), "\"");
  TRAINBUS_CHECK(!o.every_n_train_steps() || *o.every_n_train_steps() >= 0,
                 "ModelCheckpoint: every_n_train_steps must be >= 0, got ",
                 *o.every_n_train_steps());
  TRAINBUS_CHECK(!o.every_n_epochs() || *o.every_n_epochs() >= 0,
                 "ModelCheckpoint: every_n_epochs must be >= 0, got ", *o.every_n_epochs());
  TRAINBUS_CHECK(!o.train_time_interval() || o.train_time_interval()->count() > 0,
                 "ModelCheckpoint: train_time_interval must be positive");
  const int triggers = (o.every_n_train_steps() && *o.every_n_train_steps() > 0) +
                       (o.every_n_epochs() && *o.every_n_epochs() > 0) +
                       (o.train_time_interval() ? 1 : 0);
  TRAINBUS_CHECK(triggers <= 1,
                 "ModelCheckpoint: every_n_train_steps, every_n_epochs and train_time_interval are "
                 "mutually exclusive; set one of them");
  TRAINBUS_CHECK(
      !o.monitor().empty() || o.save_top_k() == -1 || o.save_top_k() == 0 || o.save_top_k() == 1,
      "ModelCheckpoint(save_top_k=", o.save_top_k(),
      ", monitor=\"\") is not a valid configuration: no quantity for top_k to track; set monitor");
  const bool none_set = !o.every_n_train_steps() && !o.every_n_epochs() && !o.train_time_interval();
  every_n_train_steps_ = o.every_n_train_steps().value_or(0);
  every_n_epochs_ = none_set ? 1 : o.every_n_epochs().value_or(0);
}

std::string ModelCheckpoint::state_key() const {
  const std::string interval = options_.train_time_interval()
                                   ? std::to_string(options_.train_time_interval()->count()) + "ms"
                                   : "None";
  return "ModelCheckpoint{'monitor': " +
         (options_.monitor().empty() ? std::string("None") : "'" + options_.monitor() + "'") +
         ", 'mode': '" + options_.mode() +
         "', 'every_n_train_steps': " + std::to_string(every_n_train_steps_) +
         ", 'every_n_epochs': " + std::to_string(every_n_epochs_) +
         ", 'train_time_interval': " + interval + "}";
}

StateDict ModelCheckpoint::state_dict() const {
  StateDict state;
  state.insert("monitor", options_.monitor());
  state.insert("best_model_score",
               best_model_score_ ? c10::IValue(*best_model_score_) : c10::IValue());
  state.insert("best_model_path", best_model_path_);
  state.insert("current_score", current_score_ ? c10::IValue(*current_score_) : c10::IValue());
  state.insert("dirpath", dirpath_);
  StateDict best_k;
  for (const auto& [path, score] : best_k_models_) best_k.insert(path, score);
  state.insert("best_k_models", best_k);
  state.insert("kth_best_model_path", kth_best_model_path_);
  state.insert("kth_value", kth_value_ ? c10::IValue(*kth_value_) : c10::IValue());
  state.insert("last_model_path", last_model_path_);
  return state;
}

void ModelCheckpoint::load_state_dict(const StateDict& state) {
  auto optional_double = [&](const char* key) -> std::optional<double> {
    if (!state.contains(key) || state.at(key).isNone()) return std::nullopt;
    return state.at(key).toDouble();
  };
  const std::string saved_dirpath = state.at("dirpath").toStringRef();
  if (dirpath_.empty() || saved_dirpath == dirpath_) {
    best_model_score_ = optional_double("best_model_score");
    current_score_ = optional_double("current_score");
    kth_value_ = optional_double("kth_value");
    kth_best_model_path_ = state.at("kth_best_model_path").toStringRef();
    last_model_path_ = state.at("last_model_path").toStringRef();
    best_k_models_.clear();
    for (const auto& [path, score] : state.dict_at("best_k_models"))
      best_k_models_[path] = score.toDouble();
  } else {
    warn("ModelCheckpoint: the checkpoint's dirpath " + saved_dirpath +
         " differs from this one's (" + dirpath_ + "); only best_model_path is restored");
  }
  best_model_path_ = state.at("best_model_path").toStringRef();
}

void ModelCheckpoint::setup(Trainer& trainer, Module& module, Stage stage) {
  if (dirpath_.empty()) {
    // As Lightning's __resolve_ckpt_dir: trainer.log_dir is the first logger's directory, else
    // default_root_dir; rank 0's, broadcast: with loggers on every rank, rank R's names the
    // same log_dir, but only rank 0's is the one every rank must agree on.
    dirpath_ = options_.dirpath().empty()
                   ? trainer.strategy().broadcast_text(
                         (fs::path(trainer.log_dir()) / "checkpoints").string())
                   : options_.dirpath();
  }
  TRAINBUS_CHECK(!trainer.replaying() || !options_.train_time_interval(),
                 "ModelCheckpoint(train_time_interval=...) cannot be replayed: a recording replays "
                 "without the live run's training time; use every_n_train_steps or every_n_epochs");
  std::error_code error;
  // A replay never touches the disk: the live run's directory is left as it is.
  if (stage == Stage::kFit && trainer.is_global_zero() && !trainer.replaying() &&
      fs::is_directory(dirpath_, error)) {
    // What a killed run was writing when it died: never loadable, and nobody else removes it.
    // A write whose commit a crash cut (no RENAME_EXCHANGE here) is moved into place, if complete.
    const auto created_if_complete = [](const std::string& path) -> std::optional<int64_t> {
      const std::optional<checkpoint::CheckpointSummary> summary =
          checkpoint::complete_checkpoint(path);
      return summary ? std::optional<int64_t>(summary->created_unix_ms) : std::nullopt;
    };
    if (const std::size_t cleaned =
            checkpoint::remove_stale_temporaries(dirpath_, created_if_complete)) {
      info("ModelCheckpoint: cleaned up " + std::to_string(cleaned) +
           " unfinished checkpoint write(s) a crashed run "
           "left in " +
           dirpath_);
    }
    if (!fs::is_empty(dirpath_, error))
      info("ModelCheckpoint: checkpoint directory " + dirpath_ + " exists and is not empty");
  }
}

void ModelCheckpoint::on_train_start(Trainer& trainer, Module& module) {
  save_deferred_to_validation_ = false;
  validation_ran_ = false;
  last_time_check_ = std::chrono::steady_clock::now();
  resumed_from_ = trainer.checkpoints().resumed_from();
  // The first save's buffers are new memory, slow to allocate: start with the weights' now.
  if (prepares_ahead()) trainer.checkpoints().prepare();
}

bool ModelCheckpoint::should_skip_saving(const Trainer& trainer) const {
  return trainer.fn() != Stage::kFit || trainer.sanity_checking() ||
         last_global_step_saved_ == trainer.global_step();
}

bool ModelCheckpoint::saves_on_train_epoch_end(const Trainer& trainer) const {
  if (options_.save_on_train_epoch_end()) return *options_.save_on_train_epoch_end();
  const TrainerOptions& o = trainer.options();
  if (o.check_val_every_n_epoch().value_or(0) != 1) return false;
  if (trainer.num_val_batches() == 0) return true;
  return o.val_check_interval().is_fraction() && o.val_check_interval().fraction() == 1.0;
}

bool ModelCheckpoint::saves_on_validation_end(const Trainer& trainer) const {
  return !saves_on_train_epoch_end(trainer) && saves_this_epoch(trainer);
}

bool ModelCheckpoint::saves_this_epoch(const Trainer& trainer) const {
  return every_n_epochs_ >= 1 && (trainer.current_epoch() + 1) % every_n_epochs_ == 0;
}

bool ModelCheckpoint::prepares_ahead() const {
  return options_.async() && options_.prepare_ahead() &&
         (options_.save_top_k() != 0 ||
          options_.save_last() != ModelCheckpointOptions::SaveLast::kNo);
}

void ModelCheckpoint::on_train_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                           int64_t batch_idx) {
  if (!prepares_ahead() || trainer.fn() != Stage::kFit) return;
  // From the batch before the one that ends in a save: preparing takes about a step where memory
  // is slow to touch (bench/README.md).
  constexpr int64_t kBatchesAhead = 2;
  const bool step_save_near =
      every_n_train_steps_ >= 1 && !options_.train_time_interval() &&
      every_n_train_steps_ - trainer.global_step() % every_n_train_steps_ <= kBatchesAhead;
  const bool epoch_end_save_near = trainer.num_training_batches() - batch_idx <= kBatchesAhead &&
                                   saves_on_train_epoch_end(trainer) && saves_this_epoch(trainer);
  if (step_save_near || epoch_end_save_near) trainer.checkpoints().prepare();
}

void ModelCheckpoint::on_train_batch_end(Trainer& trainer, Module& module,
                                         const StepOutput& outputs, const Batch& batch,
                                         int64_t batch_idx) {
  if (should_skip_saving(trainer)) return;
  bool skip = every_n_train_steps_ < 1 || trainer.global_step() % every_n_train_steps_ != 0;
  if (options_.train_time_interval()) {
    const auto now = std::chrono::steady_clock::now();
    skip = now - last_time_check_ < *options_.train_time_interval();
    // As Lightning: rank 0's clock decides for every rank (the save is a collective).
    if (trainer.world_size() > 1) skip = trainer.strategy().broadcast(skip ? 1 : 0, 0) == 1;
    if (!skip) last_time_check_ = now;
  }
  if (skip) return;
  if (defers_to_validation(trainer, batch_idx)) {
    save_deferred_to_validation_ = true;
    return;
  }
  save_topk_and_last(trainer);
}

bool ModelCheckpoint::defers_to_validation(const Trainer& trainer, int64_t batch_idx) const {
  if (options_.monitor().empty() || options_.save_top_k() == 0) return false;
  if (trainer.callback_metrics().count(options_.monitor()) == 0) return true;  // not logged yet
  // Logged, but by an earlier validation that is about to be replaced. (Lightning defers this only
  // when it saves in on_validation_end; a step-triggered save is stale either way.)
  return trainer.validates_after_batch(batch_idx);
}

void ModelCheckpoint::on_train_epoch_end(Trainer& trainer, Module& module) {
  if (!should_skip_saving(trainer) && saves_on_train_epoch_end(trainer) &&
      saves_this_epoch(trainer)) {
    save_topk_and_last(trainer);
  }
}

void ModelCheckpoint::on_validation_start(Trainer& trainer, Module& module) {
  if (!prepares_ahead() || trainer.fn() != Stage::kFit || trainer.sanity_checking()) return;
  if (save_deferred_to_validation_ || saves_on_validation_end(trainer))
    trainer.checkpoints().prepare();
}

void ModelCheckpoint::on_validation_end(Trainer& trainer, Module& module) {
  if (!trainer.sanity_checking()) validation_ran_ = true;
  if (save_deferred_to_validation_ && !trainer.sanity_checking()) {
    save_deferred_to_validation_ = false;
    if (!should_skip_saving(trainer)) save_topk_and_last(trainer);
    return;
  }
  if (!should_skip_saving(trainer) && saves_on_validation_end(trainer)) save_topk_and_last(trainer);
}

void ModelCheckpoint::on_train_end(Trainer& trainer, Module& module) {
  save_deferred_to_validation_ = false;
  if (options_.save_last() == ModelCheckpointOptions::SaveLast::kNo || should_skip_saving(trainer))
    return;
  save_last_checkpoint(trainer, monitor_candidates(trainer));
  last_global_step_saved_ = trainer.global_step();
}

void ModelCheckpoint::on_exception(Trainer& trainer, Module& module, const std::exception& error) {
  if (!options_.save_on_exception() || trainer.fn() != Stage::kFit) return;
  const Metrics metrics = monitor_candidates(trainer);
  const std::string name = options_.filename().empty() ? "{epoch}-{step}" : options_.filename();
  const std::string exception_path = interpolated_path(trainer, metrics, name + "-exception");
  trainer.save_checkpoint(
      exception_path,
      SaveCheckpointOptions().weights_only(options_.save_weights_only()).async(false));
  if (options_.verbose())
    std::cout << "ModelCheckpoint: saved " << exception_path << " on exception\n";
}

Metrics ModelCheckpoint::monitor_candidates(const Trainer& trainer) const {
  Metrics metrics = trainer.callback_metrics();
  metrics["epoch"] = static_cast<double>(trainer.current_epoch());
  metrics["step"] = static_cast<double>(trainer.global_step());
  return metrics;
}

void ModelCheckpoint::save_topk_and_last(Trainer& trainer) {
  const Metrics metrics = monitor_candidates(trainer);
  const std::string saved_before = last_saved_path_;
  if (options_.save_top_k() != 0) {
    if (options_.monitor().empty()) {
      save_none_monitor_checkpoint(trainer, metrics);
    } else {
      auto found = metrics.find(options_.monitor());
      if (found != metrics.end()) {
        save_monitor_checkpoint(trainer, metrics, found->second);
      } else {
        std::string keys;
        for (const auto& [name, value] : metrics) keys += (keys.empty() ? "" : ", ") + name;
        const std::string message =
            "ModelCheckpoint(monitor='" + options_.monitor() +
            "') could not find the monitored key in the returned metrics: [" + keys +
            "]. HINT: Did you call log('" + options_.monitor() + "', value) in the Module?";
        // As Lightning: an error once validation has run; before (a run stopped by max_steps ahead
        // of its first validation), a warning, and no score means no top-k save: `last` only.
        if (validation_ran_) throw MisconfigurationError(message);
        warn(message + " No validation has run yet, so no top-k checkpoint is saved now.");
      }
    }
  }
  // `last` rides on the save just made; without one, it is a save of its own.
  if (options_.save_last() != ModelCheckpointOptions::SaveLast::kNo &&
      last_saved_path_ == saved_before) {
    save_last_checkpoint(trainer, metrics);
  }
  last_global_step_saved_ = trainer.global_step();
}

void ModelCheckpoint::save_monitor_checkpoint(Trainer& trainer, const Metrics& metrics,
                                              double current) {
  if (std::isnan(current)) {
    current = options_.mode() == "min" ? std::numeric_limits<double>::infinity()
                                       : -std::numeric_limits<double>::infinity();
  }
  const int64_t k_limit = options_.save_top_k();
  bool in_top_k = k_limit == -1 || static_cast<int64_t>(best_k_models_.size()) < k_limit;
  if (!in_top_k) {
    const double kth = best_k_models_.at(kth_best_model_path_);
    in_top_k = options_.mode() == "min" ? current < kth : current > kth;
    // As Lightning's check_monitor_top_k: saved only if every rank agrees (a metric not reduced
    // across ranks may differ); the save is a collective, so all ranks must decide alike.
    if (trainer.world_size() > 1)
      in_top_k = trainer.strategy().reduce_boolean_decision(in_top_k, /*all=*/true);
  }
  if (!in_top_k) {
    if (options_.verbose()) {
      std::cout << "Epoch " << trainer.current_epoch() << ", global step " << trainer.global_step()
                << ": '" << options_.monitor() << "' was not in top " << k_limit << "\n";
    }
    return;
  }
  const int64_t k = k_limit == -1 ? static_cast<int64_t>(best_k_models_.size()) + 1 : k_limit;
  std::vector<std::string> remove_after;
  std::string evicted;
  if (static_cast<int64_t>(best_k_models_.size()) == k && k > 0) {
    evicted = kth_best_model_path_;
    best_k_models_.erase(evicted);
    if (removable(trainer, evicted)) remove_after.push_back(evicted);
  }
  const std::string path = interpolated_path(trainer, metrics, options_.filename(), evicted);
  current_score_ = current;
  best_k_models_[path] = current;
  update_best_and_kth();
  if (options_.verbose()) {
    std::cout << "Epoch " << trainer.current_epoch() << ", global step " << trainer.global_step()
              << ": '" << options_.monitor() << "' reached " << current << " (best "
              << *best_model_score_ << "), saving " << path << " as top " << k << "\n";
  }
  save(trainer, metrics, path, std::move(remove_after), /*with_last=*/true);
}

void ModelCheckpoint::save_none_monitor_checkpoint(Trainer& trainer, const Metrics& metrics) {
  const std::string previous = best_model_path_;
  const std::string path = interpolated_path(trainer, metrics, options_.filename(), previous);
  best_model_path_ = path;
  std::vector<std::string> remove_after;
  if (options_.save_top_k() == 1 && !previous.empty() && previous != path &&
      removable(trainer, previous)) {
    remove_after.push_back(previous);
  }
  if (options_.save_top_k() == 1) {
    best_k_models_.clear();
  }
  best_k_models_[path] = static_cast<double>(trainer.global_step());
  save(trainer, metrics, path, std::move(remove_after), /*with_last=*/true);
}

void ModelCheckpoint::save_last_checkpoint(Trainer& trainer, const Metrics& metrics) {
  std::vector<std::string> remove_after;
  const std::string path = next_last_path(trainer, metrics, remove_after);
  save(trainer, metrics, path, std::move(remove_after), /*with_last=*/false);
}

// The `last` checkpoint's path for these metrics, made last_model_path; a previous `last` under
// another name (a templated kNameLast) is added to `remove_after`.
std::string ModelCheckpoint::next_last_path(const Trainer& trainer, const Metrics& metrics,
                                            std::vector<std::string>& remove_after) {
  const std::string path =
      (fs::path(dirpath_) / (format_checkpoint_name(metrics, kNameLast) + kFileExtension)).string();
  if (!last_model_path_.empty() && last_model_path_ != path &&
      removable(trainer, last_model_path_)) {
    remove_after.push_back(last_model_path_);
  }
  last_model_path_ = path;
  return path;
}

// Queues (or writes) `path`; with `with_last`, `last` is updated from it once it is durable.
void ModelCheckpoint::save(Trainer& trainer, const Metrics& metrics, const std::string& path,
                           std::vector<std::string> remove_after, bool with_last) {
  std::function<void(const std::string&)> after_commit;
  if (with_last && options_.save_last() != ModelCheckpointOptions::SaveLast::kNo) {
    const std::string last = next_last_path(trainer, metrics, remove_after);
    const bool link = options_.save_last() == ModelCheckpointOptions::SaveLast::kLink;
    after_commit = [last, link](const std::string& written) {
      if (link) {
        checkpoint::link_checkpoint(written, last);
      } else {
        checkpoint::copy_checkpoint_as_links(written, last);
      }
    };
  }
  last_saved_path_ = path;
  submitted_.insert(path);
  CheckpointRequest request;
  request.path = path;
  request.weights_only = options_.save_weights_only();
  request.remove_after_commit = std::move(remove_after);
  request.after_commit = std::move(after_commit);
  request.after_commit_makes_file_steps = true;  // a link or a copy, watched as the write is
  // Alike on every rank, where the file name may not be (its version suffix counts the files
  // this rank sees; a metric in it may not be reduced).
  request.agreement_name = state_key() + (with_last ? "" : " last");
  if (with_last && !options_.monitor().empty()) {
    if (auto ranked = best_k_models_.find(path); ranked != best_k_models_.end()) {
      request.monitor = options_.monitor();
      request.score = ranked->second;
    }
  }
  if (!options_.async()) {
    trainer.checkpoints().save_now(std::move(request));
    return;
  }
  // Only a save that the next one of its kind supersedes anyway may be replaced while pending:
  // the latest (save_top_k=1 without monitor) by the next latest, `last` alone by the next `last`.
  // A top-k member must land.
  if (!with_last) {
    request.replace_group = state_key() + " last";
  } else if (options_.monitor().empty() && options_.save_top_k() == 1) {
    request.replace_group = state_key() + " latest";
  }
  if (std::optional<std::string> replaced = trainer.checkpoints().submit(std::move(request))) {
    forget_replaced(*replaced);
  }
}

// A pending save was superseded and will never be written: it is no longer among the best.
void ModelCheckpoint::forget_replaced(const std::string& path) {
  submitted_.erase(path);
  if (best_k_models_.erase(path) > 0) update_best_and_kth();
  if (best_model_path_ == path && best_k_models_.empty()) best_model_path_.clear();
}

void ModelCheckpoint::update_best_and_kth() {
  if (best_k_models_.empty()) {
    best_model_path_.clear();
    best_model_score_.reset();
    kth_best_model_path_.clear();
    kth_value_.reset();
    return;
  }
  const bool min = options_.mode() == "min";
  auto better = [&](const auto& a, const auto& b) {
    return min ? a.second < b.second : a.second > b.second;
  };
  const auto best = std::min_element(best_k_models_.begin(), best_k_models_.end(), better);
  const auto worst = std::max_element(best_k_models_.begin(), best_k_models_.end(), better);
  best_model_path_ = best->first;
  best_model_score_ = best->second;
  kth_best_model_path_ = worst->first;
  kth_value_ = worst->second;
}

bool ModelCheckpoint::removable(const Trainer& trainer, const std::string& path) const {
  if (path.empty()) return false;
  std::error_code error;
  if (!resumed_from_.empty() &&
      fs::weakly_canonical(path, error) == fs::weakly_canonical(resumed_from_, error)) {
    return false;  // never the checkpoint this run resumed from
  }
  return fs::path(path).parent_path() == fs::path(dirpath_);  // never outside dirpath
}

std::string ModelCheckpoint::format_checkpoint_name(const Metrics& metrics,
                                                    const std::string& filename,
                                                    std::optional<int64_t> version) const {
  const std::string name_template = filename.empty() ? "{epoch}-{step}" : filename;
  static const std::regex group(R"(\{([^{}:]+)(?::([^{}]*))?\})");
  std::string out;
  auto begin = std::sregex_iterator(name_template.begin(), name_template.end(), group);
  std::size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const std::smatch& match = *it;
    out += name_template.substr(last, static_cast<std::size_t>(match.position()) - last);
    const std::string name = match[1];
    const auto found = metrics.find(name);
    // Lightning: epoch and step are int tensors, a missing metric torch.tensor(0), the others
    // float tensors.
    const bool missing = found == metrics.end();
    const double value = missing ? 0.0 : found->second;
    const bool integer = missing || name == "epoch" || name == "step";
    if (options_.auto_insert_metric_name()) out += name + "=";
    out += format_value(value, match[2], integer, name_template);
    last = static_cast<std::size_t>(match.position() + match.length());
  }
  out += name_template.substr(last);
  if (version) out += "-v" + std::to_string(*version);
  return out;
}

std::string ModelCheckpoint::interpolated_path(const Trainer& trainer, const Metrics& metrics,
                                               const std::string& template_name,
                                               const std::string& replacing) const {
  auto path_for = [&](std::optional<int64_t> version) {
    return (fs::path(dirpath_) /
            (format_checkpoint_name(metrics, template_name, version) + kFileExtension))
        .string();
  };
  std::string path = path_for(std::nullopt);
  if (!options_.enable_version_counter()) return path;
  auto taken = [&](const std::string& candidate) {
    return candidate != replacing &&
           (trainer.checkpoints().exists(candidate) || submitted_.count(candidate) > 0);
  };
  for (int64_t version = 1; taken(path); ++version) path = path_for(version);
  return path;
}

std::string ModelCheckpoint::find_last_checkpoint() const {
  const std::string directory = dirpath_.empty() ? options_.dirpath() : dirpath_;
  if (directory.empty()) return {};
  const std::vector<checkpoint::CheckpointSummary> complete =
      checkpoint::list_complete_checkpoints(directory);
  return complete.empty() ? std::string() : complete.front().path;
}

ModelCheckpoint* checkpoint_callback(const Trainer& trainer) {
  return trainer.find_callback<ModelCheckpoint>();
}

std::vector<ModelCheckpoint*> checkpoint_callbacks(const Trainer& trainer) {
  return trainer.find_callbacks<ModelCheckpoint>();
}

}  // namespace trainbus::callbacks
