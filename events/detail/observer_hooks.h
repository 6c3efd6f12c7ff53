#pragma once
/// Which Observer hook receives which event type: the table ObserverPool dispatches through,
/// generated from TRAINBUS_FOR_EACH_EVENT.

#include "events/observer.h"

namespace trainbus::events::detail {

template <class E>
struct ObserverHook;

#define TRAINBUS_DETAIL_OBSERVER_HOOK_ENTRY(Type, hook) \
  template <>                                           \
  struct ObserverHook<events::Type> {                   \
    static constexpr auto method = &Observer::hook;     \
    static constexpr const char* name = #hook;          \
  };
TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_OBSERVER_HOOK_ENTRY)
#undef TRAINBUS_DETAIL_OBSERVER_HOOK_ENTRY

/// Calls the hook of `observer` that receives events of type E.
template <class E>
void deliver(Observer& observer, const E& event) {
  (observer.*ObserverHook<E>::method)(event);
}

}  // namespace trainbus::events::detail
