#pragma once
/// for_each_tensor_field: visits the TensorRef members of an event (`loss`, `outputs`), so that
/// snapshots can copy or drop them without knowing each event type.

#include <type_traits>
#include <utility>

#include "events/common.h"

namespace trainbus::events {
namespace detail {

template <class E, class = void>
struct HasTensorOutputs : std::false_type {};
template <class E>
struct HasTensorOutputs<E, std::void_t<decltype(std::declval<E&>().outputs)>>
    : std::is_same<decltype(std::declval<E&>().outputs), TensorRef> {};

template <class E, class = void>
struct HasTensorLoss : std::false_type {};
template <class E>
struct HasTensorLoss<E, std::void_t<decltype(std::declval<E&>().loss)>>
    : std::is_same<decltype(std::declval<E&>().loss), TensorRef> {};

}  // namespace detail

/// Calls fn(TensorRef&) for each tensor-carrying field of `event`.
template <class E, class Fn>
void for_each_tensor_field(E& event, Fn&& fn) {
  if constexpr (detail::HasTensorOutputs<E>::value) fn(event.outputs);
  if constexpr (detail::HasTensorLoss<E>::value) fn(event.loss);
}

/// Whether events of type E carry tensors.
template <class E>
inline constexpr bool kHasTensorFields =
    detail::HasTensorOutputs<E>::value || detail::HasTensorLoss<E>::value;

}  // namespace trainbus::events
