#pragma once
/// The one list of every event type. Adding an event means adding it here; the bus (and anything
/// else driven by AllEvents) then knows it, and the compiler points at whatever must handle it.

#include <cstddef>
#include <type_traits>
#include <utility>

#include "events/checkpoint.h"
#include "events/evaluation.h"
#include "events/lifecycle.h"
#include "events/optimization.h"
#include "events/train.h"

namespace trainbus::events {

template <class... Es>
struct TypeList {
  static constexpr std::size_t size = sizeof...(Es);
};

/// Every lifecycle point, in the order a fit with validation first meets them.
using AllEvents = TypeList<
    // run envelope
    Setup, FitStart, SanityCheckStart, SanityCheckEnd,
    // training
    TrainStart, TrainEpochStart, TrainBatchStart, BeforeZeroGrad, BeforeBackward, AfterBackward,
    BeforeOptimizerStep, AfterOptimizerStep, TrainBatchEnd, TrainEpochEnd, TrainEnd,
    // validation
    ValidationStart, ValidationEpochStart, ValidationBatchStart, ValidationBatchEnd,
    ValidationEpochEnd, ValidationEnd,
    // test
    TestStart, TestEpochStart, TestBatchStart, TestBatchEnd, TestEpochEnd, TestEnd,
    // predict
    PredictStart, PredictEpochStart, PredictBatchStart, PredictBatchEnd, PredictEpochEnd, PredictEnd,
    // checkpoints, errors, end of run
    SaveCheckpoint, LoadCheckpoint, Exception, FitEnd, Teardown>;

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
