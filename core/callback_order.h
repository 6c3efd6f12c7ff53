#pragma once
/// How the Trainer orders and checks the callbacks it is given (Lightning's callback connector).

#include <memory>
#include <vector>

#include "core/callback.h"

namespace trainbus {

/// Tuner callbacks first, then the others in list order, checkpoint callbacks last; stable within
/// each group. Throws MisconfigurationError for a null entry or two stateful callbacks (non-empty
/// state_dict()) with the same state_key().
std::vector<std::shared_ptr<Callback>> order_callbacks(std::vector<std::shared_ptr<Callback>> callbacks);

/// The demangled class name of a callback, for messages.
std::string callback_name(const Callback& callback);

}  // namespace trainbus
