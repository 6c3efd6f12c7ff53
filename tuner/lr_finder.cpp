#include "tuner/lr_finder.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <memory>
#include <sstream>
#include <utility>

#include <ATen/ops/gradient.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "base/errors.h"
#include "core/trainer.h"
#include "tuner/detail/restore_point.h"

namespace trainbus::tuner {

LRFinderMode parse_lr_finder_mode(const std::string& text) {
  if (text == "exponential") return LRFinderMode::kExponential;
  if (text == "linear") return LRFinderMode::kLinear;
  throw MisconfigurationError("the learning rate finder's mode is \"" + text +
                              "\": expected exponential or linear");
}

void check_lr_finder_options(const LRFinderOptions& finder) {
  TRAINBUS_CHECK(finder.min_lr() > 0, "lr_find: min_lr must be > 0, got ", finder.min_lr());
  TRAINBUS_CHECK(finder.max_lr() > finder.min_lr(), "lr_find: max_lr (", finder.max_lr(),
                 ") must be greater than min_lr (", finder.min_lr(), ")");
  TRAINBUS_CHECK(finder.num_training() >= 1, "lr_find: num_training must be >= 1, got ",
                 finder.num_training());
  TRAINBUS_CHECK(!finder.early_stop_threshold() || *finder.early_stop_threshold() > 0,
                 "lr_find: early_stop_threshold must be > 0 (or unset: never stop), got ",
                 finder.early_stop_threshold().value_or(0));
}

LRFinder::LRFinder(LRFinderMode mode, double min_lr, double max_lr, int64_t num_training)
    : mode_(mode), min_lr_(min_lr), max_lr_(max_lr), num_training_(num_training) {}

LRFinder LRFinder::from_results(LRFinderMode mode, double min_lr, double max_lr,
                                int64_t num_training, std::vector<double> lrs,
                                std::vector<double> losses) {
  TRAINBUS_CHECK(lrs.size() == losses.size(), "LRFinder::from_results: ", lrs.size(),
                 " learning rates but ", losses.size(), " losses; give one loss per rate");
  TRAINBUS_CHECK(min_lr > 0 && max_lr > min_lr,
                 "LRFinder::from_results: needs 0 < min_lr < max_lr, got ", min_lr, " and ",
                 max_lr);
  for (double lr : lrs) {
    TRAINBUS_CHECK(lr > 0 && std::isfinite(lr), "LRFinder::from_results: learning rate ", lr,
                   " is not a positive number");
  }
  LRFinder finder(mode, min_lr, max_lr, num_training);
  finder.lrs_ = std::move(lrs);
  finder.losses_ = std::move(losses);
  return finder;
}

double LRFinder::lr_at(int64_t step) const {
  if (step <= 0) return min_lr_;
  // Lightning's schedulers step once at construction (last_epoch 0: the base lr), then compute
  // the lr of step k from r = (k + 1) / num_training.
  const double r = static_cast<double>(step + 1) / static_cast<double>(num_training_);
  if (mode_ == LRFinderMode::kLinear) return min_lr_ + r * (max_lr_ - min_lr_);
  return min_lr_ * std::pow(max_lr_ / min_lr_, r);
}

LRFinder::Added LRFinder::add(double lr, double loss, int64_t global_step,
                              std::optional<double> early_stop_threshold) {
  constexpr double kBeta = 0.98;  // Lightning's _LRCallback
  avg_loss_ = kBeta * avg_loss_ + (1 - kBeta) * loss;
  // NOTE: global_step counts the step just taken, so Lightning's correction uses one power more
  // than the textbook bias correction; kept, so that the numbers match Lightning's.
  const double smoothed = avg_loss_ / (1 - std::pow(kBeta, static_cast<double>(global_step + 1)));
  const bool diverged =
      early_stop_threshold && global_step > 1 && smoothed > *early_stop_threshold * best_loss_;
  if (smoothed < best_loss_ || global_step == 1) best_loss_ = smoothed;
  lrs_.push_back(lr);
  losses_.push_back(smoothed);
  return {smoothed, diverged};
}

void LRFinder::add_missing(double lr) {
  lrs_.push_back(lr);
  losses_.push_back(std::numeric_limits<double>::quiet_NaN());
}

std::optional<double> LRFinder::suggestion(int64_t skip_begin, int64_t skip_end) const {
  optimal_index_.reset();
  const auto n = static_cast<int64_t>(losses_.size());
  // Python's [skip_begin:-skip_end]: empty when they overlap (and when skip_end is 0, as there).
  const int64_t begin = std::max<int64_t>(0, skip_begin);
  const int64_t end = skip_end > 0 ? n - skip_end : begin;
  std::vector<double> losses, lrs;
  std::vector<std::size_t> indices;
  for (int64_t i = begin; i < end; ++i) {
    const auto index = static_cast<std::size_t>(i);
    if (!std::isfinite(losses_[index])) continue;
    losses.push_back(losses_[index]);
    lrs.push_back(lrs_[index]);
    indices.push_back(index);
  }
  if (losses.size() < 2) return std::nullopt;
  const auto as_tensor = [](std::vector<double>& values) {
    return torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kDouble);
  };
  const at::Tensor coordinates = as_tensor(lrs);
  const at::Tensor gradients =
      at::gradient(as_tensor(losses), at::TensorList(coordinates), c10::optional<int64_t>(0)).at(0);
  const auto min_grad = gradients.argmin().item<int64_t>();
  optimal_index_ = indices[static_cast<std::size_t>(min_grad)];
  return lrs_[*optimal_index_];
}

std::string LRFinder::table() const {
  const std::optional<double> suggested = suggestion();
  std::ostringstream out;
  out << "  step  learning rate   smoothed loss\n";
  for (std::size_t i = 0; i < lrs_.size(); ++i) {
    out << std::setw(6) << i << "  " << std::setw(13) << std::setprecision(4) << std::scientific
        << lrs_[i] << "  " << std::setw(14) << std::defaultfloat << std::setprecision(6)
        << losses_[i] << (optimal_index_ == i ? "  <- suggested" : "") << "\n";
  }
  if (!suggested) {
    out << "no suggestion: fewer than two finite losses after skipping the first 10 and the last "
           "step; test more learning rates (num_training) or give it more batches\n";
  }
  return out.str();
}

namespace {

/// Lightning's _LRCallback: sets each step's learning rate and records the loss after it.
class RangeTestCallback : public Callback {
 public:
  RangeTestCallback(LRFinder& finder, std::optional<double> early_stop_threshold)
      : finder_(finder), early_stop_threshold_(early_stop_threshold) {}

  void on_fit_start(Trainer& trainer, Module&) override {
    TRAINBUS_CHECK(trainer.optimizers().size() == 1, "lr_find: configure_optimizers() returned ",
                   trainer.optimizers().size(),
                   " optimizers, but the learning rate finder only works with a single optimizer");
  }
  void on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t batch_idx) override {
    lr_ = finder_.lr_at(trainer.global_step());
    for (auto& group : trainer.optimizers().front()->param_groups()) group.options().set_lr(lr_);
    stepping_ = (batch_idx + 1) % trainer.accumulate_grad_batches() == 0;
  }
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput& outputs, const Batch&,
                          int64_t) override {
    if (!stepping_) return;
    if (!outputs.has_loss()) {
      finder_.add_missing(lr_);
      return;
    }
    const double loss = outputs.loss().detach().item<double>();
    if (finder_.add(lr_, loss, trainer.global_step(), early_stop_threshold_).diverged) {
      trainer.request_stop("LRFinder: the loss diverged (more than " +
                           std::to_string(*early_stop_threshold_) + " x the best)");
    }
  }

 private:
  LRFinder& finder_;
  std::optional<double> early_stop_threshold_;
  double lr_ = 0;
  bool stepping_ = false;
};

std::string lr_attribute(const Module& module, const std::string& attr_name) {
  if (!attr_name.empty()) {
    TRAINBUS_CHECK(module.hparams().contains(attr_name), "lr_find: attr_name is \"", attr_name,
                   "\", but the module has no such hyper-parameter (save_hyperparameters)");
    return attr_name;
  }
  for (const char* name : {"lr", "learning_rate"}) {
    if (module.hparams().contains(name)) return name;
  }
  throw MisconfigurationError(
      "lr_find with update_attr: the module's hyper-parameters (save_hyperparameters) have "
      "neither \"lr\" nor \"learning_rate\"; save one and read it in configure_optimizers, or "
      "name yours with attr_name");
}

}  // namespace

LRFinder lr_find(const TrainerOptions& options, Module& module, data::DataModule& data,
                 const LRFinderOptions& finder_options) {
  check_lr_finder_options(finder_options);
  // Each rank would test on its own shard and could pick its own rate; its nested fits would
  // also take over the DDP strategy of the fit it runs in.
  TRAINBUS_CHECK(!options.strategy() || options.strategy()->world_size() == 1,
                 "the learning rate finder runs on one process only, not under data-parallel "
                 "training (",
                 options.strategy() ? options.strategy()->world_size() : 1,
                 " ranks): run `trainbus tune lr` (or lr_find) without --nproc-per-node, then "
                 "train with the rate it suggests");
  const std::string attr =
      finder_options.update_attr() ? lr_attribute(module, finder_options.attr_name()) : "";

  LRFinder finder(finder_options.mode(), finder_options.min_lr(), finder_options.max_lr(),
                  finder_options.num_training());
  // The options' epoch limit stays (Lightning's default 1000 when unset): a module that never
  // steps ends the test there instead of running for ever.
  TrainerOptions run = options;
  run.max_steps(finder_options.num_training())
      .max_epochs(options.max_epochs().value_or(1000))
      .min_epochs(std::nullopt)
      .min_steps(std::nullopt)
      .max_time(std::nullopt)
      .limit_val_batches(0)
      .num_sanity_val_steps(0)
      .enable_model_summary(false)
      .enable_checkpointing(false)
      .enable_progress_bar(false);
  // Lightning saves a checkpoint and restores it: the weights and buffers (saved once
  // configure_model ran) are what the test changes, and the random generator it draws from.
  detail::RestorePoint restore_point;
  auto callback =
      std::make_shared<RangeTestCallback>(finder, finder_options.early_stop_threshold());
  try {
    Trainer trainer(run, {std::make_shared<detail::SaveModuleAtRunStart>(restore_point), callback});
    trainer.fit(module, data);
  } catch (...) {
    restore_point.restore();
    throw;
  }
  restore_point.restore();
  if (finder_options.update_attr()) {
    if (const std::optional<double> lr = finder.suggestion()) {
      StateDict hparams = module.hparams();
      hparams.insert(attr, *lr);
      module.save_hyperparameters(std::move(hparams));
    }
  }
  return finder;
}

}  // namespace trainbus::tuner
