#include "callbacks/ema_weight_averaging.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "base/errors.h"
#include "callbacks/detail/tensor_lists.h"
#include "checkpoint/module_state.h"
#include "core/trainer.h"

namespace trainbus::callbacks {

EMAWeightAveraging::EMAWeightAveraging(EMAWeightAveragingOptions options)
    : options_(std::move(options)) {
  TRAINBUS_CHECK(options_.decay() >= 0 && options_.decay() <= 1,
                 "EMAWeightAveraging: decay must be in [0, 1], got ", options_.decay());
  TRAINBUS_CHECK(options_.update_every_n_steps() >= 1,
                 "EMAWeightAveraging: update_every_n_steps must be >= 1, got ",
                 options_.update_every_n_steps());
}

std::vector<at::Tensor> EMAWeightAveraging::averaged_tensors(Module& module) const {
  std::vector<at::Tensor> tensors = module.parameters(/*recurse=*/true);
  if (options_.use_buffers()) {
    for (const auto& buffer : module.buffers(/*recurse=*/true)) {
      // Integer buffers (BatchNorm's num_batches_tracked) are copied, not averaged.
      tensors.push_back(buffer);
    }
  }
  return tensors;
}

std::vector<std::string> EMAWeightAveraging::averaged_names(Module& module) const {
  std::vector<std::string> names;
  for (const auto& parameter : module.named_parameters(/*recurse=*/true))
    names.push_back(parameter.key());
  if (options_.use_buffers()) {
    for (const auto& buffer : module.named_buffers(/*recurse=*/true)) names.push_back(buffer.key());
  }
  return names;
}

bool EMAWeightAveraging::should_update(const Trainer&, std::optional<int64_t> step_idx,
                                       std::optional<int64_t> epoch_idx) const {
  if (step_idx) {
    const bool meets_step =
        !options_.update_starting_at_step() || *step_idx >= *options_.update_starting_at_step();
    if (meets_step && *step_idx % options_.update_every_n_steps() == 0) return true;
  }
  return epoch_idx && options_.update_starting_at_epoch() &&
         *epoch_idx >= *options_.update_starting_at_epoch();
}

void EMAWeightAveraging::check_matches(const std::vector<at::Tensor>& tensors,
                                       const char* what) const {
  TRAINBUS_CHECK(detail::same_shapes(tensors, average_), "EMAWeightAveraging: ", what, " (",
                 tensors.size(), " parameters and buffers) do not match the average (",
                 average_.size(),
                 "): another model, layers added after fit started, or use_buffers changed");
}

void EMAWeightAveraging::on_fit_start(Trainer& trainer, Module& module) {
  if (trainer.replaying()) return;
  torch::NoGradGuard no_grad;
  average_.clear();
  for (const auto& tensor : averaged_tensors(module)) average_.push_back(tensor.detach().clone());
  swapped_ = false;
  trained_after_end_.reset();
  // What a checkpoint restored counts for this fit only when it resumed from one (a resume that
  // failed after on_load_checkpoint must not leave its average to the next fit).
  std::optional<std::vector<at::Tensor>> saved = std::move(restored_);
  restored_.reset();
  const bool resumed = !trainer.checkpoints().resumed_from().empty();
  if (saved && resumed) {
    check_matches(*saved, "the checkpoint's average");
    for (std::size_t i = 0; i < saved->size(); ++i) average_[i].copy_((*saved)[i]);
  } else if (resumed) {
    num_averaged_ = 0;  // a checkpoint without an average: start from its weights
    latest_update_step_ = trainer.global_step();
  } else {
    num_averaged_ = 0;
    latest_update_step_ = 0;
  }
}

void EMAWeightAveraging::update(Module& module) {
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> current = averaged_tensors(module);
  check_matches(current, "the module's tensors");
  for (std::size_t i = 0; i < current.size(); ++i) {
    const at::Tensor now = current[i].detach().to(average_[i].device());
    if (num_averaged_ == 0 || !average_[i].is_floating_point()) {
      average_[i].copy_(now);  // the first update takes the weights, as AveragedModel
    } else {
      average_[i].mul_(options_.decay()).add_(now, 1.0 - options_.decay());
    }
  }
  ++num_averaged_;
}

void EMAWeightAveraging::on_train_batch_end(Trainer& trainer, Module& module, const StepOutput&,
                                            const Batch&, int64_t) {
  if (trainer.replaying() || average_.empty()) return;
  // Once per optimizer step (Lightning: global_step > latest_update_step), not per accumulated
  // batch.
  if (trainer.global_step() > latest_update_step_ &&
      should_update(trainer, trainer.global_step() - 1, std::nullopt)) {
    update(module);
    latest_update_step_ = trainer.global_step();
  }
}

void EMAWeightAveraging::on_train_epoch_end(Trainer& trainer, Module& module) {
  if (trainer.replaying() || average_.empty()) return;
  if (should_update(trainer, std::nullopt, trainer.current_epoch())) update(module);
}

void EMAWeightAveraging::swap_in_out(Module& module) {
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> current = averaged_tensors(module);
  check_matches(current, "the module's tensors");
  // Every copy made before anything changes: a failed allocation leaves both sides as they were.
  std::vector<at::Tensor> held;
  held.reserve(current.size());
  for (const auto& tensor : current) held.push_back(tensor.detach().clone());
  for (std::size_t i = 0; i < current.size(); ++i) {
    current[i].detach().copy_(average_[i]);
    average_[i].copy_(held[i]);
  }
  swapped_ = !swapped_;
}

void EMAWeightAveraging::on_validation_epoch_start(Trainer& trainer, Module& module) {
  // Within fit only (a later validate() scores the module as it is), and once the average has an
  // update (before, it is the weights fit started with).
  if (trainer.replaying() || trainer.fn() != Stage::kFit || average_.empty() ||
      num_averaged_ == 0 || swapped_) {
    return;
  }
  swap_in_out(module);
}

void EMAWeightAveraging::on_validation_epoch_end(Trainer& trainer, Module& module) {
  if (swapped_) swap_in_out(module);
}

void EMAWeightAveraging::on_exception(Trainer&, Module& module, const std::exception&) {
  // A validation that failed must not leave the average in the module.
  if (swapped_) swap_in_out(module);
  restored_.reset();
}

void EMAWeightAveraging::on_train_end(Trainer& trainer, Module& module) {
  if (swapped_) swap_in_out(module);
  // No update, no average: the module keeps what it trained.
  if (trainer.replaying() || average_.empty() || num_averaged_ == 0) return;
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> current = averaged_tensors(module);
  check_matches(current, "the module's tensors");
  // A checkpoint saved after this (ModelCheckpoint's last at on_train_end, which runs after every
  // other callback) must still hold the trained weights as current_model_state.
  std::vector<at::Tensor> trained;
  trained.reserve(current.size());
  for (const auto& tensor : current) trained.push_back(tensor.detach().clone());
  for (std::size_t i = 0; i < current.size(); ++i) current[i].detach().copy_(average_[i]);
  trained_after_end_ = std::move(trained);
}

StateDict EMAWeightAveraging::state_dict() const {
  // The average itself goes into the checkpoint's state_dict (on_save_checkpoint).
  StateDict state;
  state.insert("latest_update_step", latest_update_step_);
  state.insert("n_averaged", num_averaged_);
  return state;
}

void EMAWeightAveraging::load_state_dict(const StateDict& state) {
  for (const char* key : {"latest_update_step", "n_averaged"}) {
    TRAINBUS_CHECK(state.contains(key), "EMAWeightAveraging: the checkpoint's state has no `", key,
                   "`; it was not saved by EMAWeightAveraging");
  }
  // Checkpoints written before the average moved into state_dict kept it here. Applied at
  // on_fit_start, once the module is restored and on its device.
  if (state.contains("average")) {
    std::vector<at::Tensor> saved;
    for (const at::Tensor& tensor : state.at("average").toTensorList()) saved.push_back(tensor);
    restored_ = std::move(saved);
  }
  latest_update_step_ = state.at("latest_update_step").toInt();
  num_averaged_ = state.at("n_averaged").toInt();
}

void EMAWeightAveraging::on_save_checkpoint(Trainer& trainer, Module& module,
                                            CheckpointData& checkpoint) {
  // Outside fit the checkpoint keeps the module's weights (the average kept from the last fit
  // is not this module's), as Lightning's.
  if (trainer.replaying() || trainer.fn() != Stage::kFit || average_.empty()) return;
  const std::vector<std::string> names = averaged_names(module);
  const StateDict serialized = checkpoint::module_state_dict(module);
  // During a validation the module holds the average and average_ the trained weights; after
  // on_train_end it holds the average too, and trained_after_end_ the trained weights.
  const std::vector<at::Tensor> module_tensors = averaged_tensors(module);
  check_matches(module_tensors, "the module's tensors");
  StateDict current = checkpoint.state_dict;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!serialized.contains(names[i])) continue;  // a child that is not saved
    TRAINBUS_CHECK(checkpoint.state_dict.contains(names[i]),
                   "EMAWeightAveraging: checkpoint.state_dict has no `", names[i],
                   "` (an on_save_checkpoint before this one renamed or dropped it), so the "
                   "average cannot be put in its place; list EMAWeightAveraging before that "
                   "callback");
    const at::Tensor trained = trained_after_end_ ? (*trained_after_end_)[i]
                               : swapped_         ? average_[i]
                                                  : module_tensors[i].detach();
    // Until its first update the average is the weights fit started with: the checkpoint then
    // holds the weights being trained in both places.
    const at::Tensor averaged = num_averaged_ == 0 ? trained
                                : swapped_         ? module_tensors[i].detach()
                                                   : average_[i];
    current.insert(names[i], trained);
    checkpoint.state_dict.insert(names[i], averaged);
  }
  checkpoint.extra.insert(kCurrentModelState, current);
}

void EMAWeightAveraging::on_load_checkpoint(Trainer& trainer, Module& module,
                                            CheckpointData& checkpoint) {
  if (trainer.replaying() || !checkpoint.extra.contains(kCurrentModelState)) return;
  // The module has loaded state_dict, the average: it trains on from the weights it had.
  const std::vector<std::string> names = averaged_names(module);
  const std::vector<at::Tensor> module_tensors = averaged_tensors(module);
  const StateDict serialized = checkpoint::module_state_dict(module);
  std::vector<at::Tensor> average;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!serialized.contains(names[i])) {  // not saved: its average starts from the module's
      average.push_back(module_tensors[i].detach().clone());
      continue;
    }
    TRAINBUS_CHECK(checkpoint.state_dict.contains(names[i]),
                   "EMAWeightAveraging: the checkpoint's state_dict has no `", names[i],
                   "`, which the module has; it was saved from another model");
    average.push_back(checkpoint.state_dict.at(names[i]).toTensor());
  }
  checkpoint::load_module_state(module, checkpoint.extra.dict_at(kCurrentModelState),
                                "the checkpoint's " + std::string(kCurrentModelState));
  restored_ = std::move(average);
}

}  // namespace trainbus::callbacks
