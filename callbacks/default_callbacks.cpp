// Installs the builder of the callbacks a Trainer adds from its options (core/default_callbacks.h)
// when trainbus::callbacks is linked. The library's INTERFACE link options name
// trainbus_callbacks_defaults_anchor as undefined, so that the linker keeps this file (and its
// installer) in every program that links the library, even one that names no callback.

#include <algorithm>

#include "base/diagnostics.h"
#include "callbacks/model_checkpoint.h"
#include "callbacks/model_summary.h"
#include "callbacks/timer.h"
#include "core/default_callbacks.h"
#include "observers/progress_bar.h"

extern "C" {
// NOLINTNEXTLINE: a symbol for the linker, never read.
int trainbus_callbacks_defaults_anchor = 0;
}

namespace trainbus::callbacks {
namespace {

// Whether one of `given` is a C (or derives from it).
template <class C>
bool contains_a(const std::vector<std::shared_ptr<Callback>>& given) {
  return std::any_of(given.begin(), given.end(), [](const auto& callback) {
    return dynamic_cast<const C*>(callback.get()) != nullptr;
  });
}

std::vector<std::shared_ptr<Callback>> build_default_callbacks(
    const TrainerOptions& options, const std::vector<std::shared_ptr<Callback>>& given) {
  std::vector<std::shared_ptr<Callback>> added;
  // In Lightning's order: checkpoint, timer, (progress bar: an observer here), model summary; the
  // Trainer moves checkpoint callbacks last.
  const bool has_checkpoint_callback =
      std::any_of(given.begin(), given.end(), [](const auto& callback) {
        return callback != nullptr && callback->kind() == CallbackKind::kCheckpoint;
      });
  if (options.enable_checkpointing() && !has_checkpoint_callback) {
    added.push_back(std::make_shared<ModelCheckpoint>());
  }
  if (options.max_time()) {
    if (contains_a<Timer>(given)) {
      warn("Ignoring `max_time`: the callbacks already contain a Timer, whose duration applies");
    } else {
      added.push_back(
          std::make_shared<Timer>(TimerOptions().duration(*options.max_time()).interval("step")));
    }
  }
  if (options.enable_model_summary() && !contains_a<ModelSummary>(given)) {
    added.push_back(std::make_shared<ModelSummary>());
  }
  return added;
}

std::shared_ptr<events::Observer> make_default_progress_bar() {
  return std::make_shared<observers::ProgressBar>();
}

const bool default_callbacks_installed = [] {
  install_default_callbacks(&build_default_callbacks);
  install_default_progress_bar(&make_default_progress_bar);
  return true;
}();

}  // namespace
}  // namespace trainbus::callbacks
