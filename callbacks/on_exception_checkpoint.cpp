#include "callbacks/on_exception_checkpoint.h"

#include <filesystem>
#include <system_error>

#include "base/errors.h"
#include "checkpoint/files.h"
#include "core/trainer.h"

namespace trainbus::callbacks {

namespace fs = std::filesystem;

/// The directory name of a checkpoint, as ModelCheckpoint names them.
constexpr const char* kCheckpointExtension = ".ckpt";

OnExceptionCheckpoint::OnExceptionCheckpoint(std::string dirpath, std::string filename)
    : path_((fs::path(dirpath) / (filename + kCheckpointExtension)).string()) {
  TRAINBUS_CHECK(
      !dirpath.empty(),
      "OnExceptionCheckpoint: dirpath is required (an exception can happen at any moment)");
}

void OnExceptionCheckpoint::on_exception(Trainer& trainer, Module& module,
                                         const std::exception& error) {
  if (trainer.fn() == Stage::kFit) trainer.save_checkpoint(path_);
}

void OnExceptionCheckpoint::teardown(Trainer& trainer, Module& module, Stage stage) {
  trainer.checkpoints().remove(path_);
}

std::string OnExceptionCheckpoint::find_last_checkpoint() const {
  std::error_code error;
  return fs::is_directory(path_, error) ? path_ : std::string();
}

}  // namespace trainbus::callbacks
