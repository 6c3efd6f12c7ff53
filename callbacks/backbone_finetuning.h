#pragma once
/// BackboneFinetuning: the module's `backbone` frozen until an epoch, then trained in its own
/// param group whose learning rate grows towards the rest's (Lightning's BackboneFinetuning).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "base/arg.h"
#include "callbacks/base_finetuning.h"

namespace trainbus::callbacks {

/// Lightning's BackboneFinetuning arguments and defaults.
struct BackboneFinetuningOptions {
  /// The epoch (0-based) at whose start the backbone is unfrozen.
  TRAINBUS_ARG(int64_t, unfreeze_backbone_at_epoch) = 10;
  /// The backbone's lr after that epoch is lambda_func(epoch + 1) x its previous one (Lightning's
  /// `multiplicative`: 2.0 whatever the epoch).
  TRAINBUS_ARG(std::function<double(int64_t)>, lambda_func) = [](int64_t) { return 2.0; };
  /// The backbone starts at the first param group's lr x this...
  TRAINBUS_ARG(double, backbone_initial_ratio_lr) = 0.1;
  /// ... or at this lr, when given.
  TRAINBUS_ARG(std::optional<double>, backbone_initial_lr);
  /// Once the backbone's lr would pass the first group's, it follows that one instead.
  TRAINBUS_ARG(bool, should_align) = true;
  /// Used by unfreeze_and_add_param_group when no lr is given (never here: kept as Lightning's).
  TRAINBUS_ARG(double, initial_denom_lr) = 10.0;
  /// Add the backbone's BatchNorm parameters to its param group at the unfreeze. As Lightning's,
  /// its BatchNorm layers are never frozen before it (they train in the optimizer's groups when
  /// configure_optimizers gives them, whatever this says).
  TRAINBUS_ARG(bool, train_bn) = true;
  /// Print the two learning rates at each change.
  TRAINBUS_ARG(bool, verbose) = false;
  /// Decimal places of the printed learning rates.
  TRAINBUS_ARG(int, rounding) = 12;
  /// The name the module registered its backbone under (`register_module("backbone", ...)`); a
  /// dotted path ("net.0") reaches into a submodule. Lightning reads `pl_module.backbone`.
  TRAINBUS_ARG(std::string, backbone) = "backbone";
};

/// Freezes the backbone before training (at setup); at the start of epoch
/// unfreeze_backbone_at_epoch adds its parameters to every optimizer as a new param group with lr
/// backbone_initial_lr (or the first group's lr x backbone_initial_ratio_lr); at each later epoch
/// start sets that group's lr to lambda_func(epoch + 1) x the previous one, capped at the first
/// group's lr when should_align. The previous backbone lr is part of the state, so a resumed run
/// goes on from it. Throws MisconfigurationError at fit start when the module has no submodule
/// named `backbone`, naming the ones it has, and past the unfreeze epoch when the backbone was
/// never unfrozen (resumed from a checkpoint without this callback's state).
class BackboneFinetuning : public BaseFinetuning {
 public:
  explicit BackboneFinetuning(BackboneFinetuningOptions options = {});

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void freeze_before_training(Module& module) override;
  void finetune_function(Module& module, int64_t epoch,
                         torch::optim::Optimizer& optimizer) override;

  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;
  void on_fit_start(Trainer& trainer, Module& module) override;

  /// The backbone's lr set at the last epoch start; unset before it was unfrozen.
  std::optional<double> previous_backbone_lr() const noexcept { return previous_backbone_lr_; }
  const BackboneFinetuningOptions& options() const noexcept { return options_; }

  /// The backbone submodule `path` names in `module`; throws MisconfigurationError naming what the
  /// module has where it is missing.
  static torch::nn::Module& find_backbone(Module& module, const std::string& path);

 private:
  void print_lrs(double current_lr, double backbone_lr) const;

  BackboneFinetuningOptions options_;
  std::optional<double> previous_backbone_lr_;
};

}  // namespace trainbus::callbacks
