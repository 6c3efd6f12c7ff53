#pragma once
/// Which Observer hook receives which event type: the one table ObserverPool dispatches through.
/// An event added to events::AllEvents without an entry here fails to compile (see the check below).

#include <type_traits>

#include "events/observer.h"

namespace trainbus::detail {

template <class E>
struct ObserverHook;

template <>
struct ObserverHook<events::Setup> {
  static constexpr auto method = &Observer::setup;
};

template <>
struct ObserverHook<events::FitStart> {
  static constexpr auto method = &Observer::on_fit_start;
};

template <>
struct ObserverHook<events::SanityCheckStart> {
  static constexpr auto method = &Observer::on_sanity_check_start;
};

template <>
struct ObserverHook<events::SanityCheckEnd> {
  static constexpr auto method = &Observer::on_sanity_check_end;
};

template <>
struct ObserverHook<events::TrainStart> {
  static constexpr auto method = &Observer::on_train_start;
};

template <>
struct ObserverHook<events::TrainEpochStart> {
  static constexpr auto method = &Observer::on_train_epoch_start;
};

template <>
struct ObserverHook<events::TrainBatchStart> {
  static constexpr auto method = &Observer::on_train_batch_start;
};

template <>
struct ObserverHook<events::BeforeZeroGrad> {
  static constexpr auto method = &Observer::on_before_zero_grad;
};

template <>
struct ObserverHook<events::BeforeBackward> {
  static constexpr auto method = &Observer::on_before_backward;
};

template <>
struct ObserverHook<events::AfterBackward> {
  static constexpr auto method = &Observer::on_after_backward;
};

template <>
struct ObserverHook<events::BeforeOptimizerStep> {
  static constexpr auto method = &Observer::on_before_optimizer_step;
};

template <>
struct ObserverHook<events::AfterOptimizerStep> {
  static constexpr auto method = &Observer::on_after_optimizer_step;
};

template <>
struct ObserverHook<events::TrainBatchEnd> {
  static constexpr auto method = &Observer::on_train_batch_end;
};

template <>
struct ObserverHook<events::TrainEpochEnd> {
  static constexpr auto method = &Observer::on_train_epoch_end;
};

template <>
struct ObserverHook<events::TrainEnd> {
  static constexpr auto method = &Observer::on_train_end;
};

template <>
struct ObserverHook<events::ValidationStart> {
  static constexpr auto method = &Observer::on_validation_start;
};

template <>
struct ObserverHook<events::ValidationEpochStart> {
  static constexpr auto method = &Observer::on_validation_epoch_start;
};

template <>
struct ObserverHook<events::ValidationBatchStart> {
  static constexpr auto method = &Observer::on_validation_batch_start;
};

template <>
struct ObserverHook<events::ValidationBatchEnd> {
  static constexpr auto method = &Observer::on_validation_batch_end;
};

template <>
struct ObserverHook<events::ValidationEpochEnd> {
  static constexpr auto method = &Observer::on_validation_epoch_end;
};

template <>
struct ObserverHook<events::ValidationEnd> {
  static constexpr auto method = &Observer::on_validation_end;
};

template <>
struct ObserverHook<events::TestStart> {
  static constexpr auto method = &Observer::on_test_start;
};

template <>
struct ObserverHook<events::TestEpochStart> {
  static constexpr auto method = &Observer::on_test_epoch_start;
};

template <>
struct ObserverHook<events::TestBatchStart> {
  static constexpr auto method = &Observer::on_test_batch_start;
};

template <>
struct ObserverHook<events::TestBatchEnd> {
  static constexpr auto method = &Observer::on_test_batch_end;
};

template <>
struct ObserverHook<events::TestEpochEnd> {
  static constexpr auto method = &Observer::on_test_epoch_end;
};

template <>
struct ObserverHook<events::TestEnd> {
  static constexpr auto method = &Observer::on_test_end;
};

template <>
struct ObserverHook<events::PredictStart> {
  static constexpr auto method = &Observer::on_predict_start;
};

template <>
struct ObserverHook<events::PredictEpochStart> {
  static constexpr auto method = &Observer::on_predict_epoch_start;
};

template <>
struct ObserverHook<events::PredictBatchStart> {
  static constexpr auto method = &Observer::on_predict_batch_start;
};

template <>
struct ObserverHook<events::PredictBatchEnd> {
  static constexpr auto method = &Observer::on_predict_batch_end;
};

template <>
struct ObserverHook<events::PredictEpochEnd> {
  static constexpr auto method = &Observer::on_predict_epoch_end;
};

template <>
struct ObserverHook<events::PredictEnd> {
  static constexpr auto method = &Observer::on_predict_end;
};

template <>
struct ObserverHook<events::SaveCheckpoint> {
  static constexpr auto method = &Observer::on_save_checkpoint;
};

template <>
struct ObserverHook<events::LoadCheckpoint> {
  static constexpr auto method = &Observer::on_load_checkpoint;
};

template <>
struct ObserverHook<events::Exception> {
  static constexpr auto method = &Observer::on_exception;
};

template <>
struct ObserverHook<events::FitEnd> {
  static constexpr auto method = &Observer::on_fit_end;
};

template <>
struct ObserverHook<events::Teardown> {
  static constexpr auto method = &Observer::teardown;
};

template <class... Es>
constexpr bool every_event_has_an_observer_hook(events::TypeList<Es...> /*unused*/) {
  return (std::is_member_function_pointer_v<decltype(ObserverHook<Es>::method)> && ...);
}
static_assert(every_event_has_an_observer_hook(events::AllEvents{}),
              "every event type needs an Observer hook: add it to events/observer.h and observer_hooks.h");

/// Calls the hook of `observer` that receives events of type E.
template <class E>
void deliver(Observer& observer, const E& event) {
  (observer.*ObserverHook<E>::method)(event);
}

}  // namespace trainbus::detail
