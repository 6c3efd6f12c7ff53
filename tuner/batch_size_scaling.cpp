#include "tuner/batch_size_scaling.h"

#include <algorithm>
#include <iomanip>
#include <memory>
#include <sstream>
#include <utility>

#include <boost/core/demangle.hpp>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"
#include "tuner/detail/restore_point.h"
#include "tuner/out_of_memory.h"

namespace trainbus::tuner {

BatchSizeMode parse_batch_size_mode(const std::string& text) {
  if (text == "power") return BatchSizeMode::kPower;
  if (text == "binsearch") return BatchSizeMode::kBinsearch;
  throw MisconfigurationError("the batch size finder's mode is \"" + text +
                              "\": expected power or binsearch");
}

std::string to_string(BatchSizeMode mode) {
  return mode == BatchSizeMode::kPower ? "power" : "binsearch";
}

void check_batch_size_finder_options(const BatchSizeFinderOptions& o) {
  TRAINBUS_CHECK(o.steps_per_trial() >= 1, "BatchSizeFinder: steps_per_trial must be >= 1, got ",
                 o.steps_per_trial());
  TRAINBUS_CHECK(o.init_val() >= 1, "BatchSizeFinder: init_val must be >= 1, got ", o.init_val());
  TRAINBUS_CHECK(o.max_trials() >= 1, "BatchSizeFinder: max_trials must be >= 1, got ",
                 o.max_trials());
  TRAINBUS_CHECK(o.max_val() >= o.init_val(), "BatchSizeFinder: max_val (", o.max_val(),
                 ") must be >= init_val (", o.init_val(), ")");
  TRAINBUS_CHECK(o.margin() >= 0.0 && o.margin() < 1.0,
                 "BatchSizeFinder: margin must be in [0, 1) (a fraction of the size found), got ",
                 o.margin());
  TRAINBUS_CHECK(!o.batch_arg_name().empty(),
                 "BatchSizeFinder: batch_arg_name is empty; name the data module's batch size, "
                 "e.g. batch_size");
  TRAINBUS_CHECK(!o.memory_budget() || *o.memory_budget() > 0,
                 "BatchSizeFinder: memory_budget must be a positive number of bytes (or unset: "
                 "only real out-of-memory errors), got ",
                 o.memory_budget().value_or(0));
}

std::string BatchSizeResult::table() const {
  std::ostringstream out;
  out << "  trial  batch size  fits  peak CPU memory\n";
  for (std::size_t i = 0; i < trials.size(); ++i) {
    const BatchSizeTrial& trial = trials[i];
    out << std::setw(7) << i + 1 << std::setw(12) << trial.batch_size << std::setw(6)
        << (trial.fits ? "yes" : "no") << "  " << std::setw(15)
        << (trial.peak_bytes ? format_bytes(*trial.peak_bytes) : std::string("-"));
    // A budget's error repeats the peak; a real out-of-memory error says what it could not get.
    if (!trial.error.empty() && !trial.peak_bytes) out << "  " << trial.error;
    out << "\n";
  }
  out << "largest that fits: " << largest_fitting << "; batch size: " << batch_size << "\n";
  return out.str();
}

namespace {

// The search's state, one trial at a time: the size to try next and what is known.
class Search {
 public:
  Search(const BatchSizeFinderOptions& options, const BatchSizeTrialRunner& run_trial)
      : options_(options), run_trial_(run_trial), size_(options.init_val()) {}

  // One trial at the current size; true when it fit.
  bool trial() {
    BatchSizeTrial result = run_trial_(size_);
    result.batch_size = size_;
    if (result.num_samples >= 0) num_samples_ = result.num_samples;
    const bool fits = result.fits;
    if (fits) last_fitting_ = size_;
    info("BatchSizeFinder: batch size " + std::to_string(size_) +
         (fits ? " fits" : " ran out of memory") + (fits ? "" : " (" + result.error + ")"));
    trials_.push_back(std::move(result));
    return fits;
  }
  // Lightning's _adjust_batch_size after a success: no larger size once a batch holds the whole
  // training set; max_val caps. Returns whether the size changed.
  bool grow_to(int64_t value) {
    if (num_samples_ >= 0 && size_ >= num_samples_) {
      info("BatchSizeFinder: the batch size " + std::to_string(size_) +
           " is greater or equal than the length of your dataset.");
      return false;
    }
    if (value > options_.max_val()) {
      value = options_.max_val();
      if (size_ < value) info("BatchSizeFinder: capped at max_val " + std::to_string(value));
    }
    return std::exchange(size_, value) != value;
  }

  int64_t run_power() {
    for (int64_t i = 0; i < options_.max_trials(); ++i) {
      if (trial()) {
        if (i + 1 >= options_.max_trials() || !grow_to(size_ * 2)) break;
      } else {
        // Back to the last size that fit; with none yet, halve and go on.
        if (last_fitting_ > 0 || size_ == 1) break;
        size_ /= 2;
      }
    }
    return last_fitting_;
  }

  int64_t run_binsearch() {
    int64_t low = 0;              // the largest size known to fit (Lightning starts at 1, untried)
    std::optional<int64_t> high;  // the smallest size known to fail
    int64_t successes = 0;
    while (true) {
      if (trial()) {
        low = size_;
        if (++successes >= options_.max_trials()) break;
        if (high) {
          if (*high - low <= 1) break;
          if (!grow_to((*high + low) / 2)) break;
        } else if (!grow_to(size_ * 2)) {
          break;
        }
      } else {
        high = size_;
        size_ = (*high + low) / 2;
        if (*high - low <= 1 || size_ == 0) break;
      }
    }
    return last_fitting_;
  }

  BatchSizeResult result(int64_t largest_fitting) {
    if (largest_fitting == 0) {
      throw MisconfigurationError("BatchSizeFinder: no batch size fits, the smallest tried (" +
                                  std::to_string(trials_.back().batch_size) +
                                  ") ran out of memory: " + trials_.back().error +
                                  "; raise memory_budget, lower init_val or use a smaller model");
    }
    BatchSizeResult out;
    out.largest_fitting = largest_fitting;
    out.batch_size = largest_fitting;
    if (options_.mode() == BatchSizeMode::kBinsearch && options_.margin() > 0) {
      out.batch_size = std::max<int64_t>(
          1, static_cast<int64_t>(static_cast<double>(largest_fitting) * (1 - options_.margin())));
      if (out.batch_size != largest_fitting) {
        std::ostringstream message;
        message << "BatchSizeFinder: margin " << options_.margin() << " lowers the batch size from "
                << largest_fitting << " to " << out.batch_size;
        info(message.str());
      }
    }
    out.trials = std::move(trials_);
    return out;
  }

 private:
  const BatchSizeFinderOptions& options_;
  const BatchSizeTrialRunner& run_trial_;
  int64_t size_;
  int64_t last_fitting_ = 0;
  int64_t num_samples_ = -1;
  std::vector<BatchSizeTrial> trials_;
};

// Measures the CPU memory the trial's loop takes, from its start (fit: on_fit_start, after setup,
// the data, configure_model and configure_optimizers; validate/test/predict: their on_*_start) on;
// fails the trial at the end of the first batch by which it went past the budget. Notes the size
// of the data set the trial's loop reads (the finder does not double past it).
class TrialCallback : public Callback {
 public:
  TrialCallback(std::optional<int64_t> budget, Stage stage, int64_t batch_size, std::string name)
      : budget_(budget), stage_(stage), batch_size_(batch_size), name_(std::move(name)) {}
  using Callback::on_predict_batch_start;
  using Callback::on_test_batch_start;
  using Callback::on_validation_batch_start;
  void on_validation_batch_start(Trainer&, Module&, const Batch& batch, int64_t) override {
    if (stage_ == Stage::kValidate) check_batch_size(batch);
  }
  void on_test_batch_start(Trainer&, Module&, const Batch& batch, int64_t) override {
    check_batch_size(batch);
  }
  void on_predict_batch_start(Trainer&, Module&, const Batch& batch, int64_t) override {
    check_batch_size(batch);
  }
  void on_fit_start(Trainer& trainer, Module&) override {
    if (trainer.train_dataloader()) num_samples = trainer.train_dataloader()->num_samples();
    start_measuring();
  }
  void on_validation_start(Trainer& trainer, Module&) override {
    if (stage_ == Stage::kValidate) start_evaluating(trainer.val_dataloaders(), "val");
  }
  void on_test_start(Trainer& trainer, Module&) override {
    start_evaluating(trainer.test_dataloaders(), "test");
  }
  void on_predict_start(Trainer& trainer, Module&) override {
    if (trainer.predict_dataloader()) num_samples = trainer.predict_dataloader()->num_samples();
    start_measuring();
  }
  void on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t) override {
    check_budget();
  }
  void on_validation_batch_end(Trainer&, Module&, const StepOutput&, const Batch&,
                               int64_t) override {
    if (stage_ == Stage::kValidate) check_budget();
  }
  void on_test_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t) override {
    check_budget();
  }
  void on_predict_batch_end(Trainer&, Module&, const at::Tensor&, const Batch&, int64_t) override {
    check_budget();
  }
  void on_fit_end(Trainer&, Module&) override { stop_measuring(); }
  void on_validation_end(Trainer&, Module&) override {
    if (stage_ == Stage::kValidate) stop_measuring();
  }
  void on_test_end(Trainer&, Module&) override { stop_measuring(); }
  void on_predict_end(Trainer&, Module&) override { stop_measuring(); }
  void on_exception(Trainer&, Module&, const std::exception&) override { stop_measuring(); }

  int64_t num_samples = -1;
  std::optional<int64_t> peak_bytes;

 private:
  void start_measuring() {
    if (budget_) meter_.emplace();
  }
  // A validate or test trial starts: as Lightning's BatchSizeFinder.setup, the size of one loader
  // is what is searched.
  void start_evaluating(const std::vector<std::shared_ptr<DataLoader>>& loaders, const char* kind) {
    TRAINBUS_CHECK(loaders.size() <= 1, "the batch size finder cannot be used with multiple ", kind,
                   " dataloaders (", loaders.size(), ")");
    if (!loaders.empty()) num_samples = loaders.front()->num_samples();
    start_measuring();
  }
  // The first batch of a validate/test/predict trial has the trial's size: else batch_arg_name
  // names another loader's size (FashionMnistDataModule's batch_size is the training loader's),
  // and every trial would "fit" at the loader's own size.
  void check_batch_size(const Batch& batch) {
    if (checked_) return;
    checked_ = true;
    const int64_t expected = num_samples > 0 ? std::min(batch_size_, num_samples) : batch_size_;
    const int64_t seen = data::batch_size_of(batch);
    TRAINBUS_CHECK(seen == expected, "BatchSizeFinder: the trial set `", name_, "` to ",
                   batch_size_, ", but the ", to_string(stage_), " loader's first batch has ", seen,
                   " samples: `", name_,
                   "` is not the size that loader uses; name the one it uses "
                   "with batch_arg_name (FashionMnistDataModule: eval_batch_size)");
  }
  void check_budget() {
    if (meter_ && meter_->peak_bytes() > *budget_) {
      throw MemoryBudgetExceeded(meter_->peak_bytes(), *budget_);
    }
  }
  void stop_measuring() {
    if (meter_) peak_bytes = meter_->peak_bytes();
    meter_.reset();
  }
  std::optional<int64_t> budget_;
  Stage stage_;
  int64_t batch_size_;
  std::string name_;
  bool checked_ = false;
  std::optional<CpuMemoryMeter> meter_;  // on the training thread, from the loop's start to its end
};

// Lightning's lightning_setattr: the data module's batch size, and the module's hyper-parameter
// of that name when it has one.
void set_batch_size(Module& module, data::DataModule& data, const std::string& name,
                    int64_t value) {
  data.set_batch_arg(name, value);
  if (module.hparams().contains(name)) {
    StateDict hparams = module.hparams();
    hparams.insert(name, value);
    module.save_hyperparameters(std::move(hparams));
  }
}

}  // namespace

BatchSizeResult search_batch_size(const BatchSizeFinderOptions& options,
                                  const BatchSizeTrialRunner& run_trial) {
  check_batch_size_finder_options(options);
  Search search(options, run_trial);
  const int64_t largest =
      options.mode() == BatchSizeMode::kPower ? search.run_power() : search.run_binsearch();
  return search.result(largest);
}

BatchSizeResult scale_batch_size(const TrainerOptions& options, Module& module,
                                 data::DataModule& data, const BatchSizeFinderOptions& finder,
                                 Stage stage) {
  check_batch_size_finder_options(finder);
  TRAINBUS_CHECK(stage != Stage::kSanityCheck,
                 "scale_batch_size: the stage is fit, validate, test or predict (Lightning's "
                 "method), not the sanity check");
  // As Lightning's BatchSizeFinder: each rank would search alone and could settle on its own
  // size (an out-of-memory error on one rank only leaves the others in a collective).
  TRAINBUS_CHECK(!options.strategy() || options.strategy()->world_size() == 1,
                 "the batch size finder is not supported with data-parallel training (",
                 options.strategy() ? options.strategy()->world_size() : 1,
                 " ranks): run `trainbus tune batch-size` without --nproc-per-node, then give "
                 "each rank the size it finds (divided by the ranks to keep the global batch)");
  const std::string& name = finder.batch_arg_name();
  const std::optional<int64_t> initial = data.batch_arg(name);
  TRAINBUS_CHECK(initial.has_value(), "BatchSizeFinder: field `", name,
                 "` not found in the data module (", boost::core::demangle(typeid(data).name()),
                 "): override DataModule::batch_arg and set_batch_arg to hand out the batch size "
                 "its train_dataloader uses, or name yours with batch_arg_name (loaders passed "
                 "directly, as LoaderDataModule, cannot be resized)");

  // Lightning's __scale_batch_reset_params: the whole training set, steps_per_trial steps, no
  // validation; the epoch limit stays, so that a module that never steps ends a trial.
  TrainerOptions run = options;
  run.max_steps(finder.steps_per_trial())
      .max_epochs(options.max_epochs().value_or(1000))
      .min_epochs(std::nullopt)
      .min_steps(std::nullopt)
      .max_time(std::nullopt)
      .limit_train_batches(1.0)
      .limit_val_batches(0)
      .num_sanity_val_steps(0)
      .enable_model_summary(false)
      .enable_checkpointing(false)
      .enable_progress_bar(false);
  // For the other stages, as Lightning's: steps_per_trial batches of their loader.
  if (stage == Stage::kValidate) run.limit_val_batches(finder.steps_per_trial());
  if (stage == Stage::kTest) run.limit_test_batches(finder.steps_per_trial());
  if (stage == Stage::kPredict) run.limit_predict_batches(finder.steps_per_trial());

  detail::RestorePoint restore_point;
  const auto run_trial = [&](int64_t batch_size) {
    set_batch_size(module, data, name, batch_size);
    BatchSizeTrial trial;
    release_cached_memory();
    auto callback =
        std::make_shared<TrialCallback>(finder.memory_budget(), stage, batch_size, name);
    try {
      Trainer trainer(run,
                      {std::make_shared<detail::SaveModuleAtRunStart>(restore_point), callback});
      switch (stage) {
        case Stage::kValidate:
          trainer.validate(module, data);
          break;
        case Stage::kTest:
          trainer.test(module, data);
          break;
        case Stage::kPredict:
          trainer.predict(module, data, PredictOptions().return_predictions(false));
          break;
        default:
          trainer.fit(module, data);
      }
      trial.fits = true;
    } catch (const std::exception& error) {
      if (!is_out_of_memory(error)) throw;
      trial.error = message_of(error);
      release_cached_memory();
    }
    trial.peak_bytes = callback->peak_bytes;
    trial.num_samples = callback->num_samples;
    return trial;
  };
  BatchSizeResult result;
  try {
    result = search_batch_size(finder, run_trial);
  } catch (...) {
    restore_point.restore();
    set_batch_size(module, data, name, *initial);
    throw;
  }
  restore_point.restore();
  set_batch_size(module, data, name, result.batch_size);
  info("BatchSizeFinder: finished, will continue with batch size " +
       std::to_string(result.batch_size));
  return result;
}

}  // namespace trainbus::tuner
