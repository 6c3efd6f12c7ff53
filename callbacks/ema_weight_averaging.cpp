#include "callbacks/ema_weight_averaging.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "base/errors.h"
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

bool EMAWeightAveraging::should_update(const Trainer& trainer, int64_t step_idx) const {
  const bool meets_step =
      !options_.update_starting_at_step() || step_idx >= *options_.update_starting_at_step();
  const bool meets_epoch = !options_.update_starting_at_epoch() ||
                           trainer.current_epoch() >= *options_.update_starting_at_epoch();
  return meets_step && meets_epoch && step_idx % options_.update_every_n_steps() == 0;
}

void EMAWeightAveraging::setup(Trainer& trainer, Module& module, Stage stage) {
  if (stage != Stage::kFit || trainer.replaying()) return;
  torch::NoGradGuard no_grad;
  average_.clear();
  for (const auto& tensor : averaged_tensors(module)) average_.push_back(tensor.detach().clone());
  num_averaged_ = 0;
  latest_update_step_ = 0;
  swapped_ = false;
}

void EMAWeightAveraging::update(Module& module) {
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> current = averaged_tensors(module);
  TRAINBUS_CHECK(current.size() == average_.size(), "EMAWeightAveraging: the module has ",
                 current.size(), " parameters and buffers, the average ", average_.size(),
                 "; layers added after setup cannot be averaged");
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
      should_update(trainer, trainer.global_step() - 1)) {
    update(module);
    latest_update_step_ = trainer.global_step();
  }
}

void EMAWeightAveraging::swap_in_out(Module& module) {
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> current = averaged_tensors(module);
  for (std::size_t i = 0; i < current.size() && i < average_.size(); ++i) {
    at::Tensor held = current[i].detach().clone();
    current[i].detach().copy_(average_[i]);
    average_[i].copy_(held);
  }
  swapped_ = !swapped_;
}

void EMAWeightAveraging::on_validation_epoch_start(Trainer& trainer, Module& module) {
  if (!trainer.replaying() && !average_.empty() && !swapped_) swap_in_out(module);
}

void EMAWeightAveraging::on_validation_epoch_end(Trainer& trainer, Module& module) {
  if (swapped_) swap_in_out(module);
}

void EMAWeightAveraging::on_exception(Trainer&, Module& module, const std::exception&) {
  // A validation that failed must not leave the average in the module.
  if (swapped_) swap_in_out(module);
}

void EMAWeightAveraging::on_train_end(Trainer& trainer, Module& module) {
  if (trainer.replaying() || average_.empty()) return;
  if (swapped_) swap_in_out(module);
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> current = averaged_tensors(module);
  for (std::size_t i = 0; i < current.size() && i < average_.size(); ++i) {
    current[i].detach().copy_(average_[i]);
  }
}

StateDict EMAWeightAveraging::state_dict() const {
  StateDict state;
  state.insert("latest_update_step", latest_update_step_);
  state.insert("n_averaged", num_averaged_);
  c10::List<at::Tensor> tensors;
  for (const auto& tensor : average_) tensors.push_back(tensor);
  state.insert("average", tensors);
  return state;
}

void EMAWeightAveraging::load_state_dict(const StateDict& state) {
  latest_update_step_ = state.at("latest_update_step").toInt();
  num_averaged_ = state.at("n_averaged").toInt();
  const c10::List<at::Tensor> tensors = state.at("average").toTensorList();
  TRAINBUS_CHECK(average_.empty() || tensors.size() == average_.size(),
                 "EMAWeightAveraging: the checkpoint's average has ", tensors.size(),
                 " tensors, the module ", average_.size(),
                 " parameters and buffers; it was saved for another model");
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> restored;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor saved = tensors.get(i);
    restored.push_back(average_.empty() ? saved.clone()
                                        : saved.to(average_[i].device(), average_[i].dtype()));
  }
  average_ = std::move(restored);
}

}  // namespace trainbus::callbacks
