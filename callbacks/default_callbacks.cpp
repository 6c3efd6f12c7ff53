// Installs the builder of the callbacks a Trainer adds from its options (core/default_callbacks.h)
// when trainbus::callbacks is linked. The library's INTERFACE link options name
// trainbus_callbacks_defaults_anchor as undefined, so that the linker keeps this file (and its
// installer) in every program that links the library, even one that names no callback.

#include <algorithm>

#include "base/diagnostics.h"
#include "callbacks/model_summary.h"
#include "callbacks/timer.h"
#include "core/default_callbacks.h"

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
  if (options.enable_model_summary() && !contains_a<ModelSummary>(given)) {
    added.push_back(std::make_shared<ModelSummary>());
  }
  if (options.max_time()) {
    if (contains_a<Timer>(given)) {
      warn("Ignoring `max_time`: the callbacks already contain a Timer, whose duration applies");
    } else {
      added.push_back(
          std::make_shared<Timer>(TimerOptions().duration(*options.max_time()).interval("step")));
    }
  }
  return added;
}

const bool default_callbacks_installed = [] {
  install_default_callbacks(&build_default_callbacks);
  return true;
}();

}  // namespace
}  // namespace trainbus::callbacks
