// Trainer::save_checkpoint and the restore half of fit(ckpt_path).
#include <mutex>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "core/callback_order.h"
#include "core/checkpoint_io.h"
#include "events/diagnostics.h"
#include "core/trainer.h"
#include "core/trainer_hooks.h"
#include "events/check.h"

namespace trainbus {
namespace {

// LibTorch 1.13's LRScheduler keeps its step count protected and has no state_dict; this reaches
// it through a derived-class member pointer, the one standard way to read a protected member.
struct SchedulerStepCount : torch::optim::LRScheduler {
  static unsigned& of(torch::optim::LRScheduler& scheduler) {
    return scheduler.*(&SchedulerStepCount::step_count_);
  }
};


std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

}  // namespace

void Trainer::save_checkpoint(const std::string& path, bool weights_only) {
  TRAINBUS_CHECK(module_ != nullptr && fn_ == Stage::kFit, "Trainer::save_checkpoint(\"", path,
                 "\") needs a running fit: call it from a callback or a module hook during Trainer::fit");
  CheckpointData data;
  data.epoch = current_epoch_;
  data.global_step = global_step_;
  data.hyper_parameters = module_->hparams();
  data.callback_metrics = metrics_.callback_metrics();
  data.loops.insert("current_epoch", current_epoch_);
  data.loops.insert("epochs_processed", epochs_processed_);
  data.loops.insert("global_step", global_step_);
  data.loops.insert("batches_done_in_epoch", batches_done_in_epoch_);
  data.loops.insert("epoch_batches_finished", epoch_batches_finished_);
  data.loops.insert("total_batch_idx", total_batch_idx_);
  data.loops.insert("accumulate_grad_batches", accumulate_grad_batches_);
  if (train_loader_) data.loops.insert("train_loader", train_loader_->state_dict());
  if (!weights_only) {
    for (const auto& callback : callbacks_) {
      StateDict state = callback->state_dict();
      if (!state.empty()) data.callbacks.emplace(callback->state_key(), std::move(state));
    }
    data.datamodule = data_->state_dict();
    for (const auto& callback : callbacks_) callback->on_save_checkpoint(*this, *module_, data);
  }
  module_->on_save_checkpoint(data);
  bus_.publish_lazy<events::SaveCheckpoint>([&] { return events::SaveCheckpoint{progress(), path}; });

  torch::serialize::OutputArchive archive;
  write_checkpoint_data(archive, data, weights_only);
  torch::serialize::OutputArchive model;
  module_->save(model);
  archive.write("model", model);
  if (!weights_only) {
    torch::serialize::OutputArchive optimizers;
    for (size_t i = 0; i < optimizers_.size(); ++i) {
      torch::serialize::OutputArchive optimizer;
      optimizers_[i]->save(optimizer);
      optimizers.write(std::to_string(i), optimizer);
    }
    archive.write("optimizers", optimizers);
    c10::List<int64_t> scheduler_steps;
    for (const auto& config : schedulers_) scheduler_steps.push_back(SchedulerStepCount::of(*config.scheduler));
    archive.write("schedulers", scheduler_steps);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    archive.write("rng.torch_cpu", generator.get_state());
  }
  write_archive_atomically(archive, path);
}

void Trainer::restore_modules_and_callbacks(const LoadedCheckpoint& checkpoint) {
  auto& archive = const_cast<torch::serialize::InputArchive&>(checkpoint.archive);
  try {
    torch::serialize::InputArchive model;
    archive.read("model", model);
    module_->load(model);
  } catch (const c10::Error& error) {
    throw CheckpointError(detail::concat("checkpoint ", checkpoint.path, ": part `model` does not fit ",
                                         module_->name(), ": ", first_line(error.what_without_backtrace())));
  }
  data_->load_state_dict(checkpoint.data.datamodule);
  module_->on_load_checkpoint(checkpoint.data);
  for (const auto& callback : callbacks_) callback->on_load_checkpoint(*this, *module_, checkpoint.data);
  std::set<std::string> restored;
  for (const auto& callback : callbacks_) {
    auto it = checkpoint.data.callbacks.find(callback->state_key());
    if (it == checkpoint.data.callbacks.end()) continue;
    callback->load_state_dict(it->second);
    restored.insert(it->first);
  }
  for (const auto& [key, state] : checkpoint.data.callbacks) {
    if (restored.count(key) == 0) {
      warn("checkpoint " + checkpoint.path + " holds the state of callback `" + key +
           "`, which matches no callback of this Trainer; it is ignored. Pass the callbacks the checkpoint was "
           "made with to restore it.");
    }
  }
  bus_.publish_lazy<events::LoadCheckpoint>([&] { return events::LoadCheckpoint{progress(), checkpoint.path}; });
}

void Trainer::restore_training_state(const LoadedCheckpoint& checkpoint) {
  const std::string& path = checkpoint.path;
  TRAINBUS_CHECK_AS(CheckpointError, !checkpoint.weights_only, "checkpoint ", path,
                    " holds only the model weights (save_weights_only), so training cannot resume from it; "
                    "load the weights into the module instead, or resume from a full checkpoint");
  auto& archive = const_cast<torch::serialize::InputArchive&>(checkpoint.archive);
  try {
    torch::serialize::InputArchive optimizers;
    archive.read("optimizers", optimizers);
    for (size_t i = 0; i < optimizers_.size(); ++i) {
      torch::serialize::InputArchive optimizer;
      TRAINBUS_CHECK_AS(CheckpointError, optimizers.try_read(std::to_string(i), optimizer), "checkpoint ", path,
                        " holds no state for optimizer ", i, " but configure_optimizers() returned ",
                        optimizers_.size(), " optimizers");
      optimizers_[i]->load(optimizer);
    }
    c10::IValue scheduler_steps;
    archive.read("schedulers", scheduler_steps);
    const auto steps = scheduler_steps.toIntList();
    TRAINBUS_CHECK_AS(CheckpointError, steps.size() == schedulers_.size(), "checkpoint ", path, " holds ",
                      steps.size(), " LR schedulers but configure_optimizers() returned ", schedulers_.size());
    for (size_t i = 0; i < schedulers_.size(); ++i) {
      SchedulerStepCount::of(*schedulers_[i].scheduler) = static_cast<unsigned>(steps.get(i));
    }
    at::Tensor rng_state;
    archive.read("rng.torch_cpu", rng_state);
    // The default generator is shared; LibTorch hands out a const handle to the same impl.
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng_state);
  } catch (const c10::Error& error) {
    throw CheckpointError(detail::concat("checkpoint ", path, ": cannot restore the optimizer state: ",
                                         first_line(error.what_without_backtrace())));
  }

  const StateDict& loops = checkpoint.data.loops;
  global_step_ = loops.at("global_step").toInt();
  epochs_processed_ = loops.at("epochs_processed").toInt();
  total_batch_idx_ = loops.at("total_batch_idx").toInt();
  accumulate_grad_batches_ = loops.at("accumulate_grad_batches").toInt();
  if (loops.at("epoch_batches_finished").toBool()) {
    current_epoch_ = epochs_processed_;  // the saved epoch had ended: continue with the next one
    resume_batch_idx_ = 0;
  } else {
    current_epoch_ = loops.at("current_epoch").toInt();
    resume_batch_idx_ = loops.at("batches_done_in_epoch").toInt();
  }
  if (loops.contains("train_loader") && train_loader_) {
    train_loader_->load_state_dict(loops.dict_at("train_loader"));
  }
  metrics_.restore_callback_metrics(checkpoint.data.callback_metrics);
  restarting_ = true;
}

}  // namespace trainbus
