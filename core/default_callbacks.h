#pragma once
/// What a Trainer adds by itself from its options (Lightning's callback connector): a
/// ModelCheckpoint unless `enable_checkpointing` is false, a Timer for `max_time`, a ModelSummary
/// unless `enable_model_summary` is false, and a progress bar observer unless `enable_progress_bar`
/// is false.

#include <memory>
#include <vector>

#include "core/callback.h"
#include "core/trainer_options.h"
#include "events/observer.h"

namespace trainbus {

/// Builds the callbacks a Trainer with `options` adds to `given`. core knows no particular
/// callback: trainbus::callbacks installs its builder when it is linked in
/// (callbacks/default_callbacks.cpp; the library's link options keep that file in every program
/// that links it).
using DefaultCallbacksBuilder = std::vector<std::shared_ptr<Callback>> (*)(
    const TrainerOptions& options, const std::vector<std::shared_ptr<Callback>>& given);

/// Makes the progress bar a Trainer with `enable_progress_bar` attaches at the start of a run
/// when no attached observer is one (installed by trainbus::callbacks too: observers::ProgressBar
/// on std::cout).
using DefaultProgressBarFactory = std::shared_ptr<events::Observer> (*)();

/// Installs `builder` for every Trainer built afterwards (replacing an earlier one; nullptr: none).
void install_default_callbacks(DefaultCallbacksBuilder builder) noexcept;
/// The builder installed now, or nullptr.
DefaultCallbacksBuilder installed_default_callbacks() noexcept;

/// Installs `factory` for every run started afterwards (nullptr: no default progress bar).
void install_default_progress_bar(DefaultProgressBarFactory factory) noexcept;
/// The factory installed now, or nullptr.
DefaultProgressBarFactory installed_default_progress_bar() noexcept;

/// `given` and what the installed builder adds for `options`, after them (in the Trainer's order,
/// checkpoint callbacks still run last). Throws MisconfigurationError when `enable_checkpointing`
/// is false and a checkpoint callback is given (as Lightning). Without a builder, throws
/// MisconfigurationError for an option that needs one (max_time), naming the library to link;
/// the defaults that need none (the model summary, the checkpoint callback) are then left out.
std::vector<std::shared_ptr<Callback>> with_default_callbacks(
    const TrainerOptions& options, std::vector<std::shared_ptr<Callback>> given);

}  // namespace trainbus
