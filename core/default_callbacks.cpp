#include "core/default_callbacks.h"

#include <atomic>

#include "base/errors.h"
#include "core/callback_order.h"

namespace trainbus {
namespace {

std::atomic<DefaultCallbacksBuilder> installed_builder{nullptr};
std::atomic<DefaultProgressBarFactory> installed_progress_bar{nullptr};

}  // namespace

void install_default_callbacks(DefaultCallbacksBuilder builder) noexcept {
  installed_builder.store(builder);
}

DefaultCallbacksBuilder installed_default_callbacks() noexcept { return installed_builder.load(); }

void install_default_progress_bar(DefaultProgressBarFactory factory) noexcept {
  installed_progress_bar.store(factory);
}

DefaultProgressBarFactory installed_default_progress_bar() noexcept {
  return installed_progress_bar.load();
}

std::vector<std::shared_ptr<Callback>> with_default_callbacks(
    const TrainerOptions& options, std::vector<std::shared_ptr<Callback>> given) {
  if (!options.enable_checkpointing()) {
    // As Lightning's _CallbackConnector._configure_checkpoint_callbacks.
    for (const auto& callback : given) {
      // A null callback is refused, with its position, when the Trainer orders them.
      TRAINBUS_CHECK(callback == nullptr || callback->kind() != CallbackKind::kCheckpoint,
                     "Trainer was configured with `enable_checkpointing=False` but found `",
                     callback_name(*callback),
                     "` in callbacks list; remove it, or leave enable_checkpointing true");
    }
  }
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
