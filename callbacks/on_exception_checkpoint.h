#pragma once
/// OnExceptionCheckpoint: Lightning's checkpoint of the moment fit failed.

#include <string>

#include "core/checkpoint_callback.h"

namespace trainbus::callbacks {

/// Lightning's OnExceptionCheckpoint: saves `dirpath`/`filename`.ckpt when fit fails, and removes
/// it after a run that succeeds (teardown does not run on failure).
class OnExceptionCheckpoint : public CheckpointCallback {
 public:
  explicit OnExceptionCheckpoint(std::string dirpath, std::string filename = "on_exception");
  void on_exception(Trainer& trainer, Module& module, const std::exception& error) override;
  void teardown(Trainer& trainer, Module& module, Stage stage) override;
  std::string find_last_checkpoint() const override;
  const std::string& checkpoint_path() const noexcept { return path_; }

 private:
  std::string path_;
};

}  // namespace trainbus::callbacks
