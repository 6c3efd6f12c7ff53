#pragma once
/// load_from_checkpoint: Lightning's LightningModule.load_from_checkpoint, a module built from the
/// hyper-parameters a checkpoint saved and given its weights, to evaluate or predict without the
/// code that built it for training.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include <c10/core/Device.h>

#include "base/arg.h"
#include "checkpoint/state_dict.h"
#include "core/module.h"

namespace trainbus {

/// Builds a module from a checkpoint's hyper-parameters.
using ModuleFactory = std::function<std::shared_ptr<Module>(const StateDict& hparams)>;

/// Lightning's load_from_checkpoint arguments beyond the path.
struct LoadFromCheckpointOptions {
  /// Every weight the module has must be in the checkpoint, and no other (Lightning's strict).
  /// false: the weights whose names match are loaded, the others left as built (a new head for
  /// fine-tuning), with a warning naming them; a matching name of another shape is still an error.
  TRAINBUS_ARG(bool, strict) = true;
  /// The device the module is moved to before its weights are loaded (Lightning's map_location);
  /// unset: the CPU.
  TRAINBUS_ARG(std::optional<c10::Device>, map_location);
  /// Hyper-parameters that replace (or add to) the saved ones before the module is built
  /// (Lightning's **kwargs: `load_from_checkpoint(path, lr=1e-4)`); the module keeps the merged
  /// set.
  TRAINBUS_ARG(StateDict, hparams);
};

/// Reads the checkpoint at `path` (a checkpoint directory), builds the module with `make` from its
/// saved hyper-parameters (with options.hparams over them), calls its configure_model(), moves it
/// to map_location, calls its on_load_checkpoint (which may change the checkpoint first, as in
/// Lightning), then loads the checkpoint's weights. The module is in eval mode. Throws
/// CheckpointError naming the path for a missing, damaged or newer checkpoint, and for weights
/// that do not fit the module built.
std::shared_ptr<Module> load_module_from_checkpoint(const std::string& path,
                                                    const ModuleFactory& make,
                                                    const LoadFromCheckpointOptions& options = {});

/// `auto model = trainbus::load_from_checkpoint<MyModule>("checkpoints/epoch=9.ckpt");` M is built
/// as M(hparams) when it has a constructor taking the hyper-parameters (a `const StateDict&`), as
/// Lightning calls `cls(**hparams)`; otherwise as M(), and then given them with
/// save_hyperparameters.
template <class M>
std::shared_ptr<M> load_from_checkpoint(const std::string& path,
                                        const LoadFromCheckpointOptions& options = {}) {
  static_assert(std::is_base_of_v<Module, M>, "load_from_checkpoint<M>: M must be a Module");
  return std::static_pointer_cast<M>(load_module_from_checkpoint(
      path,
      [](const StateDict& hparams) -> std::shared_ptr<Module> {
        if constexpr (std::is_constructible_v<M, const StateDict&>) {
          return std::make_shared<M>(hparams);
        } else {
          auto module = std::make_shared<M>();
          module->save_hyperparameters(hparams);
          return module;
        }
      },
      options));
}

}  // namespace trainbus
