#pragma once
/// How the Trainer orders and checks the callbacks it is given (Lightning's callback connector).

#include <memory>
#include <vector>

#include "core/callback.h"

namespace trainbus {

/// Tuner callbacks first, then the others in list order, checkpoint callbacks last; stable within
/// each group. Throws MisconfigurationError for a null entry or two callbacks that declare
/// themselves stateful() with the same state_key(). Calls no state_dict().
std::vector<std::shared_ptr<Callback>> order_callbacks(
    std::vector<std::shared_ptr<Callback>> callbacks);

/// Whether `callback` runs its on_train_epoch_end after the module's (Lightning's monitoring
/// callbacks: EarlyStopping, checkpoint callbacks), so that it sees what the module logs there.
bool runs_after_module_at_epoch_end(const Callback& callback);

/// The demangled class name of a callback, for messages.
std::string callback_name(const Callback& callback);

/// The error for two stateful callbacks of classes `first` and `second` sharing `state_key`.
std::string duplicate_state_key_message(const std::string& state_key, const std::string& first,
                                        const std::string& second);

}  // namespace trainbus
