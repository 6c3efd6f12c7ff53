#pragma once
// TrainerOptions for tests: Lightning's default ModelCheckpoint and progress bar off.

#include "core/trainer_options.h"

namespace trainbus::testing {

/// TrainerOptions with enable_checkpointing and enable_progress_bar false, so that a test's fit
/// writes no checkpoint it did not ask for (the default ModelCheckpoint writes into
/// default_root_dir, the current directory by default) and draws no bar. A test that gives a
/// checkpoint callback sets enable_checkpointing(true) (false with one is refused, as in
/// Lightning); the tests of the default set use TrainerOptions() itself.
inline TrainerOptions trainer_options() {
  TrainerOptions options;
  options.enable_checkpointing(false).enable_progress_bar(false);
  return options;
}

}  // namespace trainbus::testing
