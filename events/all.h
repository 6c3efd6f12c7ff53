#pragma once
/// The one list of every event type (TRAINBUS_FOR_EACH_EVENT) and what is generated from it:
/// AllEvents, kEventIndex, for_each_event_type. Adding an event is one line in the list plus its
/// struct; the bus, the Observer hooks and their dispatch follow, and the compiler points at
/// whatever else must handle it.

#include <cstddef>
#include <type_traits>
#include <utility>

#include "events/checkpoint.h"
#include "events/evaluation.h"
#include "events/lifecycle.h"
#include "events/optimization.h"
#include "events/train.h"

/// X(EventType, hook) for every lifecycle point: the event struct (in trainbus::events) and the
/// name of its hook in Observer and Callback, in the order a fit with validation first meets them.
#define TRAINBUS_FOR_EACH_EVENT(X)                   \
  /* run envelope */                                 \
  X(Setup, setup)                                    \
  X(FitStart, on_fit_start)                          \
  X(SanityCheckStart, on_sanity_check_start)         \
  X(SanityCheckEnd, on_sanity_check_end)             \
  /* training */                                     \
  X(TrainStart, on_train_start)                      \
  X(TrainEpochStart, on_train_epoch_start)           \
  X(TrainBatchStart, on_train_batch_start)           \
  X(BeforeZeroGrad, on_before_zero_grad)             \
  X(BeforeBackward, on_before_backward)              \
  X(AfterBackward, on_after_backward)                \
  X(BeforeOptimizerStep, on_before_optimizer_step)   \
  X(AfterOptimizerStep, on_after_optimizer_step)     \
  X(TrainBatchEnd, on_train_batch_end)               \
  X(TrainEpochEnd, on_train_epoch_end)               \
  X(TrainEnd, on_train_end)                          \
  /* validation */                                   \
  X(ValidationStart, on_validation_start)            \
  X(ValidationEpochStart, on_validation_epoch_start) \
  X(ValidationBatchStart, on_validation_batch_start) \
  X(ValidationBatchEnd, on_validation_batch_end)     \
  X(ValidationEpochEnd, on_validation_epoch_end)     \
  X(ValidationEnd, on_validation_end)                \
  /* test */                                         \
  X(TestStart, on_test_start)                        \
  X(TestEpochStart, on_test_epoch_start)             \
  X(TestBatchStart, on_test_batch_start)             \
  X(TestBatchEnd, on_test_batch_end)                 \
  X(TestEpochEnd, on_test_epoch_end)                 \
  X(TestEnd, on_test_end)                            \
  /* predict */                                      \
  X(PredictStart, on_predict_start)                  \
  X(PredictEpochStart, on_predict_epoch_start)       \
  X(PredictBatchStart, on_predict_batch_start)       \
  X(PredictBatchEnd, on_predict_batch_end)           \
  X(PredictEpochEnd, on_predict_epoch_end)           \
  X(PredictEnd, on_predict_end)                      \
  /* checkpoints, errors, end of run */              \
  X(SaveCheckpoint, on_save_checkpoint)              \
  X(CheckpointCommitted, on_checkpoint_committed)    \
  X(CheckpointRemoved, on_checkpoint_removed)        \
  X(LoadCheckpoint, on_load_checkpoint)              \
  X(StopRequested, on_stop_requested)                \
  X(MetricsLogged, on_metrics_logged)                \
  X(HyperparamsLogged, on_hyperparams_logged)        \
  X(Exception, on_exception)                         \
  X(FitEnd, on_fit_end)                              \
  X(Teardown, teardown)

namespace trainbus::events {

template <class... Es>
struct TypeList {
  static constexpr std::size_t size = sizeof...(Es);
};

namespace detail {

struct ListStart;  // opens the generated list, whose entries each start with a comma

template <class List>
struct WithoutStart;
template <class... Es>
struct WithoutStart<TypeList<ListStart, Es...>> {
  using type = TypeList<Es...>;
};

}  // namespace detail

#define TRAINBUS_DETAIL_COMMA_TYPE(Type, hook) , Type
/// Every event type, in TRAINBUS_FOR_EACH_EVENT order.
using AllEvents = typename detail::WithoutStart<
    TypeList<detail::ListStart TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_COMMA_TYPE)>>::type;
#undef TRAINBUS_DETAIL_COMMA_TYPE

namespace detail {

template <class E, class List>
struct IndexOf;

template <class E, class... Rest>
struct IndexOf<E, TypeList<E, Rest...>> : std::integral_constant<std::size_t, 0> {};

template <class E, class First, class... Rest>
struct IndexOf<E, TypeList<First, Rest...>>
    : std::integral_constant<std::size_t, 1 + IndexOf<E, TypeList<Rest...>>::value> {};

template <class E>
struct IndexOf<E, TypeList<>> {
  static_assert(sizeof(E) == 0, "not an event type: add it to trainbus::events::AllEvents");
};

}  // namespace detail

/// Position of `E` in AllEvents; a compile error for a type that is not an event.
template <class E>
inline constexpr std::size_t kEventIndex = detail::IndexOf<E, AllEvents>::value;

/// Names an event type as a value: `fn(Tag<E>{})`, with `typename decltype(tag)::type` inside fn.
template <class E>
struct Tag {
  using type = E;
};

/// Calls `fn(Tag<E>{})` once per type of `list`, in order.
template <class Fn, class... Es>
void for_each_event_type(Fn&& fn, TypeList<Es...> list) {
  (fn(Tag<Es>{}), ...);
}

/// Calls `fn(Tag<E>{})` once per event type, in AllEvents order.
template <class Fn>
void for_each_event_type(Fn&& fn) {
  for_each_event_type(std::forward<Fn>(fn), AllEvents{});
}

}  // namespace trainbus::events
