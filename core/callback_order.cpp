#include "core/callback_order.h"

#include <algorithm>
#include <map>
#include <string>

#include <boost/core/demangle.hpp>

#include "base/errors.h"

namespace trainbus {

std::string callback_name(const Callback& callback) {
  return boost::core::demangle(typeid(callback).name());
}

std::string duplicate_state_key_message(const std::string& state_key, const std::string& first,
                                        const std::string& second) {
  return "Trainer: found more than one stateful callback with state_key `" + state_key + "` (" +
         first + " and " + second +
         "); their states would overwrite each other in checkpoints. Give each a unique "
         "state_key(), e.g. "
         "built from its constructor arguments";
}

std::vector<std::shared_ptr<Callback>> order_callbacks(
    std::vector<std::shared_ptr<Callback>> callbacks) {
  for (size_t i = 0; i < callbacks.size(); ++i) {
    TRAINBUS_CHECK(callbacks[i] != nullptr, "Trainer: callbacks[", i,
                   "] is null; pass a constructed callback");
  }
  std::map<std::string, std::string> stateful_keys;  // state_key -> class name
  for (const auto& callback : callbacks) {
    if (!callback->stateful()) continue;
    const std::string key = callback->state_key();
    auto [it, inserted] = stateful_keys.emplace(key, callback_name(*callback));
    TRAINBUS_CHECK(inserted,
                   duplicate_state_key_message(key, it->second, callback_name(*callback)));
  }
  auto rank = [](const std::shared_ptr<Callback>& callback) {
    switch (callback->kind()) {
      case CallbackKind::kTuner:
        return 0;
      case CallbackKind::kCheckpoint:
        return 2;
      default:
        return 1;
    }
  };
  std::stable_sort(callbacks.begin(), callbacks.end(),
                   [&](const auto& a, const auto& b) { return rank(a) < rank(b); });
  return callbacks;
}

bool runs_after_module_at_epoch_end(const Callback& callback) {
  return callback.kind() == CallbackKind::kMonitoring ||
         callback.kind() == CallbackKind::kCheckpoint;
}

}  // namespace trainbus
