#pragma once
/// BaseFinetuning: freeze parts of a module before training and unfreeze them later into a new
/// optimizer param group with its own learning rate (Lightning's BaseFinetuning), to subclass.

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "core/callback.h"

namespace torch::optim {
class Optimizer;
}

namespace trainbus::callbacks {

/// One module or several, as BaseFinetuning's helpers take them (Lightning's `modules` argument):
/// a module, a `torch::nn::Linear`-style holder, a shared_ptr, or a braced list of those. Holds
/// plain pointers: the modules must outlive the call.
class Modules {
 public:
  Modules(torch::nn::Module& module) : list_{&module} {}  // NOLINT(google-explicit-constructor)
  template <class M>
  Modules(const std::shared_ptr<M>& module) : list_{module.get()} {}  // NOLINT
  template <class Impl>
  Modules(const torch::nn::ModuleHolder<Impl>& holder) : list_{holder.ptr().get()} {}  // NOLINT
  Modules(std::initializer_list<Modules> modules) {
    for (const Modules& each : modules) list_.insert(list_.end(), each.begin(), each.end());
  }

  std::vector<torch::nn::Module*>::const_iterator begin() const { return list_.begin(); }
  std::vector<torch::nn::Module*>::const_iterator end() const { return list_.end(); }

 private:
  std::vector<torch::nn::Module*> list_;
};

/// Override freeze_before_training (called at every setup, before configure_model and
/// configure_optimizers: freeze what must not train yet) and finetune_function (called at every
/// train epoch start, once per optimizer: unfreeze with unfreeze_and_add_param_group). Have
/// configure_optimizers give the optimizer only the parameters that require grad, as Lightning
/// asks, so that the unfrozen ones can join it as a new param group.
///
/// Surviving resume: the callback's state holds every optimizer's param groups by parameter name,
/// updated at each epoch start; resumed, it rebuilds them at on_fit_start, before the
/// Trainer loads the optimizers' states into them, and makes the parameters of the groups
/// finetune_function added trainable again (Lightning leaves them frozen, so that a resumed run
/// stops training them). A run resumed mid-epoch does not run that epoch's finetune_function again.
///
/// BatchNorm: LibTorch's BatchNorm updates its running statistics in training whatever its
/// track_running_stats says, so freezing one (train_bn false) sets its momentum to 0 (the
/// statistics stay as they are, and eval uses them, as PyTorch's frozen BatchNorm); unfreezing
/// restores the momentum. Its num_batches_tracked still counts the frozen batches.
class BaseFinetuning : public Callback {
 public:
  /// Freezes what must not train at first. Called at setup of every stage.
  virtual void freeze_before_training(Module& module) = 0;
  /// Unfreezes on the epoch's schedule: called at each train epoch start, for every optimizer.
  virtual void finetune_function(Module& module, int64_t epoch,
                                 torch::optim::Optimizer& optimizer) = 0;

  // ---- helpers, as Lightning's static methods ----

  /// The leaf modules of `modules`, and the ones with parameters of their own.
  static std::vector<torch::nn::Module*> flatten_modules(const Modules& modules);
  /// Their parameters whose requires_grad is `requires_grad`; BatchNorm ones left out unless
  /// train_bn.
  static std::vector<at::Tensor> filter_params(const Modules& modules, bool train_bn = true,
                                               bool requires_grad = true);
  /// requires_grad on all their parameters; a frozen BatchNorm's momentum restored.
  static void make_trainable(const Modules& modules);
  /// requires_grad off on the module's own parameters; a BatchNorm's statistics frozen.
  static void freeze_module(torch::nn::Module& module);
  /// Freezes all of them; BatchNorm layers are made trainable instead when train_bn.
  static void freeze(const Modules& modules, bool train_bn = true);
  /// `params` without those the optimizer already has (warns when it drops some).
  static std::vector<at::Tensor> filter_on_optimizer(const torch::optim::Optimizer& optimizer,
                                                     const std::vector<at::Tensor>& params);
  /// Makes `modules` trainable and adds their parameters the optimizer lacks as a new param group,
  /// with `lr`, or the first group's lr / initial_denom_lr without one.
  static void unfreeze_and_add_param_group(const Modules& modules,
                                           torch::optim::Optimizer& optimizer,
                                           std::optional<double> lr = std::nullopt,
                                           double initial_denom_lr = 10.0, bool train_bn = true);

  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void on_fit_start(Trainer& trainer, Module& module) override;
  void on_train_epoch_start(Trainer& trainer, Module& module) override;

 protected:
  /// Per optimizer (by index), its param groups by parameter name (their options, lr included,
  /// are in the optimizer's own state, which the Trainer restores).
  struct GroupRecord {
    std::vector<std::string> params;
    bool added = false;  ///< added by finetune_function (its parameters train again on resume)
  };
  std::map<int64_t, std::vector<GroupRecord>> internal_optimizer_metadata_;
  /// The last epoch whose start ran finetune_function: a run resumed within that epoch does not
  /// run it again (Lightning does, and so applies an epoch's lr change twice).
  int64_t last_finetuned_epoch_ = -1;

 private:
  void store(Module& module, int64_t optimizer_idx, std::size_t groups_before,
             const torch::optim::Optimizer& optimizer);
  void restore_param_groups(Trainer& trainer, Module& module);

  bool restarting_ = false;
};

}  // namespace trainbus::callbacks
