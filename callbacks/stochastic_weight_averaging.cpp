#include "callbacks/stochastic_weight_averaging.h"

#include <cmath>
#include <sstream>
#include <typeinfo>

#include <torch/csrc/autograd/grad_mode.h>
#include <boost/core/demangle.hpp>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "callbacks/detail/batch_norm.h"
#include "callbacks/detail/tensor_lists.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

constexpr double kSwaPi = 3.14159265358979323846;

// Calls visit(layer, batch_norm) for each BatchNorm layer under `module`
// (detail::visit_batch_norm).
template <class Visit>
void for_each_swa_batch_norm(const torch::nn::Module& module, Visit&& visit) {
  for (const auto& layer : module.modules(/*include_self=*/false)) {
    detail::visit_batch_norm(*layer, [&](auto& batch_norm) { visit(layer, batch_norm); });
  }
}

// "StepLR" for torch::optim::StepLR, as Lightning's `scheduler.__class__.__name__`.
std::string swa_scheduler_class_name(const torch::optim::LRScheduler& scheduler) {
  const std::string name = boost::core::demangle(typeid(scheduler).name());
  const std::size_t colons = name.rfind("::");
  return colons == std::string::npos ? name : name.substr(colons + 2);
}

}  // namespace

// ---- SWALR ----

SWALR::SWALR(torch::optim::Optimizer& optimizer, std::vector<double> swa_lrs, int64_t anneal_epochs,
             std::string anneal_strategy)
    : torch::optim::LRScheduler(optimizer),
      swa_lrs_(std::move(swa_lrs)),
      anneal_epochs_(anneal_epochs),
      cosine_(anneal_strategy == "cos") {
  TRAINBUS_CHECK(anneal_strategy == "cos" || anneal_strategy == "linear",
                 "SWALR: anneal_strategy must be one of 'cos' or 'linear', instead got '",
                 anneal_strategy, "'");
  TRAINBUS_CHECK(anneal_epochs >= 0, "SWALR: anneal_epochs must be equal or greater than 0, got ",
                 anneal_epochs);
  const std::size_t groups = optimizer.param_groups().size();
  if (swa_lrs_.size() == 1) swa_lrs_.assign(groups, swa_lrs_[0]);
  TRAINBUS_CHECK(swa_lrs_.size() == groups, "SWALR: swa_lr must have one value, or one per param ",
                 "group of the optimizer (", groups, "), got ", swa_lrs_.size());
  step_count_ = 0;
  step();  // PyTorch's _initial_step
}

void SWALR::set_step_count(int64_t steps) {
  TRAINBUS_CHECK(steps >= 0, "SWALR: a step count must be >= 0, got ", steps);
  step_count_ = static_cast<unsigned>(steps);
}

double SWALR::anneal(double t) const { return cosine_ ? (1 - std::cos(kSwaPi * t)) / 2 : t; }

std::vector<double> SWALR::get_lrs() {
  // PyTorch's SWALR.get_lr, where `step` is `_step_count - 1`: the steps before this one (LibTorch
  // counts a step after get_lrs).
  int64_t step = static_cast<int64_t>(step_count_);
  if (anneal_epochs_ == 0) step = std::max<int64_t>(1, step);
  const double span = static_cast<double>(std::max<int64_t>(1, anneal_epochs_));
  const double prev_t = std::max(0.0, std::min(1.0, static_cast<double>(step - 1) / span));
  const double prev_alpha = anneal(prev_t);
  const double t = std::max(0.0, std::min(1.0, static_cast<double>(step) / span));
  const double alpha = anneal(t);
  const std::vector<double> current = get_current_lrs();
  TRAINBUS_CHECK(current.size() == swa_lrs_.size(), "SWALR: the optimizer has ", current.size(),
                 " param groups but SWALR was made for ", swa_lrs_.size(),
                 " (swa_lrs); a group added after SWA started (a finetuning callback unfreezing "
                 "after swa_epoch_start) has no SWA learning rate: unfreeze before "
                 "swa_epoch_start");
  std::vector<double> lrs(current.size());
  for (std::size_t i = 0; i < current.size(); ++i) {
    // PyTorch's _get_initial_lr: the rate the annealing started from.
    const double initial =
        prev_alpha == 1 ? swa_lrs_[i] : (current[i] - prev_alpha * swa_lrs_[i]) / (1 - prev_alpha);
    lrs[i] = swa_lrs_[i] * alpha + initial * (1 - alpha);
  }
  return lrs;
}

// ---- SwaEpochStart ----

int64_t SwaEpochStart::resolve(int64_t max_epochs) const noexcept {
  return is_fraction_ ? static_cast<int64_t>(static_cast<double>(max_epochs) * fraction_) : epoch_;
}

std::string SwaEpochStart::to_string() const {
  if (!is_fraction_) return std::to_string(epoch_);
  std::ostringstream out;
  out << fraction_;
  if (out.str().find_first_of(".en") == std::string::npos) out << ".0";  // 1.0 reads as a float
  return out.str();
}

// ---- StochasticWeightAveraging ----

StochasticWeightAveraging::StochasticWeightAveraging(StochasticWeightAveragingOptions options)
    : options_(std::move(options)) {
  const SwaEpochStart& start = options_.swa_epoch_start();
  TRAINBUS_CHECK(
      start.is_fraction() ? start.fraction() >= 0 && start.fraction() <= 1 : start.epoch() >= 1,
      "StochasticWeightAveraging: swa_epoch_start should be a >0 integer or a float "
      "between 0 and 1, got ",
      start.to_string());
  TRAINBUS_CHECK(!options_.swa_lrs().empty(),
                 "StochasticWeightAveraging: swa_lrs is required (the SWA learning rate: one for "
                 "every param group, or one per group), e.g. "
                 "StochasticWeightAveragingOptions().swa_lrs({0.05}), or on the command line "
                 "stochastic_weight_averaging:swa_lrs=0.05");
  for (const double lr : options_.swa_lrs()) {
    TRAINBUS_CHECK(lr > 0 && std::isfinite(lr),
                   "StochasticWeightAveraging: swa_lrs should be a positive float, or a list of "
                   "positive floats, got ",
                   lr);
  }
  TRAINBUS_CHECK(options_.annealing_epochs() >= 0,
                 "StochasticWeightAveraging: annealing_epochs must be >= 0, got ",
                 options_.annealing_epochs());
  TRAINBUS_CHECK(
      options_.annealing_strategy() == "cos" || options_.annealing_strategy() == "linear",
      "StochasticWeightAveraging: annealing_strategy must be \"cos\" or \"linear\", got "
      "\"",
      options_.annealing_strategy(), "\"");
}

bool StochasticWeightAveraging::contains_batch_norm(const torch::nn::Module& module) {
  bool found = false;
  for_each_swa_batch_norm(module, [&](const std::shared_ptr<torch::nn::Module>&, auto& layer) {
    found = found || layer.options.track_running_stats();
  });
  return found;
}

void StochasticWeightAveraging::check_matches(const std::vector<at::Tensor>& tensors,
                                              const char* what) const {
  TRAINBUS_CHECK(detail::same_shapes(tensors, average_), "StochasticWeightAveraging: ", what, " (",
                 tensors.size(), " parameters) do not match the average (", average_.size(),
                 "): another model, or layers added after fit started");
}

void StochasticWeightAveraging::on_fit_start(Trainer& trainer, Module& module) {
  if (trainer.replaying()) return;
  // Its BatchNorm epoch skips the trainer's backward and step, and it steps its SWALR itself: in
  // manual optimization the module's own manual_backward and steps would go on training the
  // averaged weights (Lightning accepts it and does that).
  TRAINBUS_CHECK(module.automatic_optimization(),
                 "StochasticWeightAveraging does not support manual optimization (the module "
                 "steps its optimizers itself, so the averaging epoch would train on); use it with "
                 "automatic optimization, or average the weights in the module");
  TRAINBUS_CHECK(trainer.optimizers().size() == 1,
                 "StochasticWeightAveraging: SWA currently works with 1 optimizer, but "
                 "configure_optimizers() returned ",
                 trainer.optimizers().size());
  TRAINBUS_CHECK(trainer.lr_scheduler_configs().size() <= 1,
                 "StochasticWeightAveraging: SWA currently not supported for more than 1 "
                 "lr_scheduler, but configure_optimizers() returned ",
                 trainer.lr_scheduler_configs().size());
  TRAINBUS_CHECK(trainer.max_epochs() >= 1,
                 "StochasticWeightAveraging needs max_epochs >= 1 (swa_epoch_start and the last "
                 "epoch averaged count from it), got max_epochs=",
                 trainer.max_epochs(), "; set TrainerOptions().max_epochs(N)");
  const int64_t max_epochs = trainer.max_epochs();
  const int64_t epoch_start = options_.swa_epoch_start().resolve(max_epochs);
  TRAINBUS_CHECK(epoch_start <= max_epochs, "StochasticWeightAveraging: swa_epoch_start=",
                 options_.swa_epoch_start().to_string(),
                 " is after the last epoch (max_epochs=", max_epochs,
                 "), so SWA would never start; use an epoch from 1 to ", max_epochs,
                 " or a fraction of max_epochs");
  const std::size_t groups = trainer.optimizers()[0]->param_groups().size();
  TRAINBUS_CHECK(options_.swa_lrs().size() == 1 || options_.swa_lrs().size() == groups,
                 "StochasticWeightAveraging: swa_lrs has ", options_.swa_lrs().size(),
                 " values but the optimizer has ", groups,
                 " param groups; give one value for every group, or one per group");
  max_epochs_ = max_epochs;
  epoch_start_ = epoch_start;
  contains_batch_norm_ = contains_batch_norm(module);
  initialized_ = false;
  swa_scheduler_.reset();
  momenta_.clear();
  skipping_ = false;
  added_epoch_ = false;
  if (contains_batch_norm_) {
    // One more epoch, at whose start the module takes the average and the BatchNorm statistics
    // are computed again.
    trainer.set_max_epochs(max_epochs_ + 1);
    added_epoch_ = true;
  }

  average_.clear();
  if (!restored_) {
    n_averaged_ = 0;
    latest_update_epoch_ = -1;
    restored_scheduler_steps_.reset();
  } else if (restored_average_ && !restored_average_->empty()) {
    torch::NoGradGuard no_grad;
    const c10::Device device = options_.device().value_or(module.device());
    for (const auto& tensor : *restored_average_) average_.push_back(tensor.to(device).clone());
    check_matches(module.parameters(), "the module's parameters");
  }
  restored_ = false;
  restored_average_.reset();
}

void StochasticWeightAveraging::on_train_epoch_start(Trainer& trainer, Module& module) {
  if (trainer.replaying() || max_epochs_ == 0) return;
  const int64_t epoch = trainer.current_epoch();
  const bool averaging = swa_start() <= epoch && epoch <= swa_end();
  if (!initialized_ && averaging) {
    initialized_ = true;
    swa_scheduler_ =
        std::make_shared<SWALR>(*trainer.optimizers()[0], options_.swa_lrs(),
                                options_.annealing_epochs(), options_.annealing_strategy());
    if (restored_scheduler_steps_) {
      swa_scheduler_->set_step_count(*restored_scheduler_steps_);
      restored_scheduler_steps_.reset();
    } else if (epoch != swa_start()) {
      warn(
          "SWA is initializing after swa_start without any checkpoint data. This may be caused by "
          "resuming from a checkpoint saved without StochasticWeightAveraging.");
    }
    if (!trainer.lr_scheduler_configs().empty()) {
      const SchedulerConfig& replaced = trainer.lr_scheduler_configs()[0];
      if (replaced.interval != SchedulerInterval::kEpoch || replaced.frequency != 1) {
        warn(::trainbus::detail::concat(
            "SWA is currently only supported every epoch. Found interval=",
            replaced.interval == SchedulerInterval::kEpoch ? "epoch" : "step",
            ", frequency=", replaced.frequency));
      }
      info("Swapping scheduler `" + swa_scheduler_class_name(*replaced.scheduler) +
           "` for `SWALR`");
    }
    SchedulerConfig config;  // every epoch
    config.scheduler = swa_scheduler_;
    trainer.set_lr_scheduler_configs({config});
  }

  if (averaging && epoch > latest_update_epoch_) {
    update_parameters(module);
    latest_update_epoch_ = epoch;
  }

  // NOTE: `==`, not `>`: a run resumed after this epoch must not transfer again.
  if (epoch == swa_end() + 1) {
    transfer_weights(module);
    reset_batch_norm_and_save_state(module);
    // The BatchNorm epoch: forward passes only.
    trainer.set_skip_backward(true);
    skipping_ = true;
  }
}

void StochasticWeightAveraging::on_train_epoch_end(Trainer& trainer, Module&) {
  if (skipping_) {
    trainer.set_skip_backward(false);
    skipping_ = false;
  }
}

void StochasticWeightAveraging::on_train_end(Trainer& trainer, Module& module) {
  if (trainer.replaying() || max_epochs_ == 0) return;
  // current_epoch already counts the last epoch.
  const int64_t last_epoch = trainer.current_epoch() - 1;
  // After a BatchNorm epoch the module has the average already (Lightning's first branch).
  if (last_epoch == swa_end()) transfer_weights(module);
  restore_trainer(trainer);
}

void StochasticWeightAveraging::on_fit_end(Trainer& trainer, Module&) {
  restore_trainer(trainer);  // a fit that had nothing to train has no on_train_end
}

void StochasticWeightAveraging::on_exception(Trainer& trainer, Module&, const std::exception&) {
  restore_trainer(trainer);
  // A resume that failed before on_fit_start took its state: the next fit starts fresh.
  restored_ = false;
  restored_average_.reset();
  restored_scheduler_steps_.reset();
}

void StochasticWeightAveraging::restore_trainer(Trainer& trainer) {
  if (skipping_) {
    trainer.set_skip_backward(false);
    skipping_ = false;
  }
  if (added_epoch_) {
    trainer.set_max_epochs(max_epochs_);
    added_epoch_ = false;
  }
  reset_momenta();
}

void StochasticWeightAveraging::update_parameters(Module& module) {
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> parameters = module.parameters();
  if (n_averaged_ == 0 || average_.empty()) {
    // The first update takes the weights.
    average_.clear();
    const c10::Device device = options_.device().value_or(module.device());
    for (const auto& parameter : parameters)
      average_.push_back(parameter.detach().to(device).clone());
  } else {
    check_matches(parameters, "the module's parameters");
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      at::Tensor& averaged = average_[i];
      const at::Tensor current = parameters[i].detach().to(averaged.device());
      averaged.copy_(options_.avg_fn()
                         ? options_.avg_fn()(averaged, current, n_averaged_)
                         : averaged + (current - averaged) / static_cast<double>(n_averaged_ + 1));
    }
  }
  ++n_averaged_;
}

void StochasticWeightAveraging::transfer_weights(Module& module) {
  if (average_.empty()) return;  // nothing averaged: the module keeps what it trained
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> parameters = module.parameters();
  check_matches(parameters, "the module's parameters");
  for (std::size_t i = 0; i < parameters.size(); ++i) parameters[i].detach().copy_(average_[i]);
}

void StochasticWeightAveraging::reset_batch_norm_and_save_state(Module& module) {
  reset_momenta();
  torch::NoGradGuard no_grad;
  for_each_swa_batch_norm(module,
                          [&](const std::shared_ptr<torch::nn::Module>& layer, auto& batch_norm) {
                            if (!batch_norm.options.track_running_stats()) return;
                            batch_norm.reset_running_stats();
                            c10::optional<double>& momentum = batch_norm.options.momentum();
                            momenta_.push_back({layer, &momentum, momentum});
                            momentum = c10::nullopt;  // a cumulative mean over the epoch
                          });
}

void StochasticWeightAveraging::reset_momenta() {
  for (Momentum& saved : momenta_) *saved.momentum = saved.saved;
  momenta_.clear();
}

StateDict StochasticWeightAveraging::state_dict() const {
  StateDict state;
  state.insert("n_averaged", n_averaged_);
  state.insert("latest_update_epoch", latest_update_epoch_);
  // Before a resumed run makes its SWALR again, the one restored.
  const std::optional<int64_t> scheduler_steps =
      swa_scheduler_ ? std::optional<int64_t>(swa_scheduler_->step_count())
                     : restored_scheduler_steps_;
  if (scheduler_steps) {
    StateDict scheduler;
    scheduler.insert("step_count", *scheduler_steps);
    state.insert("scheduler_state", scheduler);
  }
  c10::List<at::Tensor> tensors;
  for (const auto& tensor : average_) tensors.push_back(tensor);
  state.insert("average_model_state", tensors);
  return state;
}

void StochasticWeightAveraging::load_state_dict(const StateDict& state) {
  for (const char* key : {"n_averaged", "latest_update_epoch", "average_model_state"}) {
    TRAINBUS_CHECK(state.contains(key),
                   "StochasticWeightAveraging: the checkpoint's state has no `", key,
                   "`; it was not saved by StochasticWeightAveraging");
  }
  // Applied at on_fit_start, once the module is restored and on its device, and when the SWALR is
  // made.
  std::vector<at::Tensor> saved;
  for (const at::Tensor& tensor : state.at("average_model_state").toTensorList())
    saved.push_back(tensor);
  restored_average_ = std::move(saved);
  n_averaged_ = state.at("n_averaged").toInt();
  latest_update_epoch_ = state.at("latest_update_epoch").toInt();
  restored_scheduler_steps_.reset();
  if (state.contains("scheduler_state")) {
    restored_scheduler_steps_ = state.dict_at("scheduler_state").at("step_count").toInt();
  }
  restored_ = true;
}

}  // namespace trainbus::callbacks
