#include "core/default_callbacks.h"

#include <atomic>

#include "base/errors.h"

namespace trainbus {
namespace {

std::atomic<DefaultCallbacksBuilder> installed_builder{nullptr};

}  // namespace

void install_default_callbacks(DefaultCallbacksBuilder builder) noexcept {
  installed_builder.store(builder);
}

DefaultCallbacksBuilder installed_default_callbacks() noexcept { return installed_builder.load(); }

std::vector<std::shared_ptr<Callback>> with_default_callbacks(
    const TrainerOptions& options, std::vector<std::shared_ptr<Callback>> given) {
  const DefaultCallbacksBuilder builder = installed_builder.load();
  if (builder == nullptr) {
    TRAINBUS_CHECK(!options.max_time(),
                   "`max_time` is kept by the Timer of trainbus::callbacks, whose installer is not "
                   "in this program: link trainbus::callbacks through CMake (or, linking by hand, "
                   "add -Wl,--undefined=trainbus_callbacks_defaults_anchor before the library), "
                   "or unset `max_time` and add a callbacks::Timer yourself");
    return given;
  }
  std::vector<std::shared_ptr<Callback>> added = builder(options, given);
  given.insert(given.end(), added.begin(), added.end());
  return given;
}

}  // namespace trainbus
