#pragma once
/// The callbacks a Trainer adds to those it is given, from its options (Lightning's callback
/// connector): a Timer for `max_time`, a ModelSummary unless `enable_model_summary` is false.

#include <memory>
#include <vector>

#include "core/callback.h"
#include "core/trainer_options.h"

namespace trainbus {

/// Builds the callbacks a Trainer with `options` adds to `given`. core knows no particular
/// callback: trainbus::callbacks installs its builder when it is linked in
/// (callbacks/default_callbacks.cpp; the library's link options keep that file in every program
/// that links it).
using DefaultCallbacksBuilder = std::vector<std::shared_ptr<Callback>> (*)(
    const TrainerOptions& options, const std::vector<std::shared_ptr<Callback>>& given);

/// Installs `builder` for every Trainer built afterwards (replacing an earlier one; nullptr: none).
void install_default_callbacks(DefaultCallbacksBuilder builder) noexcept;
/// The builder installed now, or nullptr.
DefaultCallbacksBuilder installed_default_callbacks() noexcept;

/// `given` and what the installed builder adds for `options`, after them (in the Trainer's order,
/// checkpoint callbacks still run last). Without a builder, throws MisconfigurationError for an
/// option that needs one (max_time), naming the library to link; the defaults that need none
/// (the model summary) are then left out.
std::vector<std::shared_ptr<Callback>> with_default_callbacks(
    const TrainerOptions& options, std::vector<std::shared_ptr<Callback>> given);

}  // namespace trainbus
