#pragma once
/// BatchSizeFinder: finds the largest batch size that fits in memory at the start of fit and
/// trains with it (Lightning's callbacks/batch_size_finder.py).

#include <cstdint>
#include <optional>

#include "core/callback.h"
#include "tuner/batch_size_scaling.h"

namespace trainbus::callbacks {

/// At on_fit_start (after a resumed fit's weights are loaded, before training), runs
/// tuner::scale_batch_size on the fit's module and data module with the fit's TrainerOptions,
/// then has the fit take its loaders again (Trainer::reload_dataloaders) so that it trains with
/// the batch size found. In validate, test and predict (as Lightning's, which searches in those
/// too) it searches at setup, with trials of that stage's loop, before the Trainer takes the
/// stage's loaders (and before a ckpt_path's weights are loaded: the trials measure memory, not
/// scores); one val or test loader only, as Lightning's. Runs before every other callback (a tuner
/// callback, as Lightning's). The module's weights, buffers and the random generator are as they
/// were before the trials; the fit's optimizers never see them (each trial is a Trainer of its
/// own).
///
/// On the training thread. Throws MisconfigurationError for a bad option (constructor), or at
/// setup when the data module holds no batch size named batch_arg_name; an error that is not
/// out of memory in a trial leaves fit as it came.
class BatchSizeFinder : public Callback {
 public:
  explicit BatchSizeFinder(tuner::BatchSizeFinderOptions options = {});

  CallbackKind kind() const override { return CallbackKind::kTuner; }
  /// Checks that the data module has the batch size (Lightning's setup check), before any trial;
  /// in validate, test and predict, runs the search.
  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void on_fit_start(Trainer& trainer, Module& module) override;

  /// Runs the search now and applies it; what on_fit_start calls. A subclass may call it from
  /// another hook outside the epochs (Lightning's FineTuneBatchSizeFinder example uses
  /// on_train_epoch_start; here reload_dataloaders refuses that: see Trainer::reload_dataloaders).
  void scale_batch_size(Trainer& trainer, Module& module);

  /// Lightning's optimal_batch_size: init_val until the search ran, then the size found.
  int64_t optimal_batch_size() const noexcept { return optimal_batch_size_; }
  /// The last search's trials; unset until one ran.
  const std::optional<tuner::BatchSizeResult>& result() const noexcept { return result_; }
  const tuner::BatchSizeFinderOptions& options() const noexcept { return options_; }

 private:
  tuner::BatchSizeFinderOptions options_;
  int64_t optimal_batch_size_;
  std::optional<tuner::BatchSizeResult> result_;
};

}  // namespace trainbus::callbacks
