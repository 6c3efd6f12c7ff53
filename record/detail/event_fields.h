#pragma once
/// Private to record/: which of the fields events share a given event type has, and how many
/// fields it has in all, so that the codec converts every event generically and refuses to compile
/// for an event with a field it does not know (rather than silently not recording it).

#include <cstddef>
#include <type_traits>
#include <utility>

namespace trainbus::record::detail {

// Has_<field><E>: whether E has a member named <field>.
#define TRAINBUS_DETAIL_HAS_FIELD(field)                                                          \
  template <class E, class = void>                                                                \
  struct Has_##field : std::false_type {};                                                        \
  template <class E>                                                                              \
  struct Has_##field<E, std::void_t<decltype(std::declval<const E&>().field)>> : std::true_type { \
  };

/// Every field name an event may have; the codec handles each (record/event_codec.cpp) and
/// proto/record.proto has it in the event's message.
#define TRAINBUS_DETAIL_FOR_EACH_EVENT_FIELD(X) \
  X(stage)                                      \
  X(progress)                                   \
  X(batch)                                      \
  X(loss)                                       \
  X(metrics)                                    \
  X(callback_metrics)                           \
  X(progress_bar)                               \
  X(outputs)                                    \
  X(hparams)                                    \
  X(num_batches)                                \
  X(max_epochs)                                 \
  X(optimizer_idx)                              \
  X(batch_idx)                                  \
  X(path)                                       \
  X(type)                                       \
  X(message)                                    \
  X(reason)                                     \
  X(num_val_batches)                            \
  X(bytes)                                      \
  X(monitor)                                    \
  X(score)                                      \
  X(learning_rates)                             \
  X(step)                                       \
  X(logger)                                     \
  X(asked_in)                                   \
  X(global_rank)                                \
  X(local_rank)                                 \
  X(world_size)

TRAINBUS_DETAIL_FOR_EACH_EVENT_FIELD(TRAINBUS_DETAIL_HAS_FIELD)
#undef TRAINBUS_DETAIL_HAS_FIELD

#define TRAINBUS_DETAIL_COUNT_FIELD(field) +(Has_##field<E>::value ? 1 : 0)
/// How many of E's fields the list above names.
template <class E>
inline constexpr std::size_t kKnownFields =
    0 TRAINBUS_DETAIL_FOR_EACH_EVENT_FIELD(TRAINBUS_DETAIL_COUNT_FIELD);
#undef TRAINBUS_DETAIL_COUNT_FIELD

/// Converts to any type: `E{AnyField{}, ...}` compiles for at most as many values as E has fields.
struct AnyField {
  template <class T>
  operator T() const;  // never defined: only used in unevaluated contexts
};

template <class E, class Indices, class = void>
struct BraceInitializableWith : std::false_type {};
template <class E, std::size_t... I>
struct BraceInitializableWith<E, std::index_sequence<I...>,
                              std::void_t<decltype(E{(static_cast<void>(I), AnyField{})...})>>
    : std::true_type {};

template <class E, std::size_t N = 0>
constexpr std::size_t count_fields() {
  if constexpr (N > 32) {
    return N;  // not an aggregate of plain fields: the static_assert that uses it fails
  } else if constexpr (BraceInitializableWith<E, std::make_index_sequence<N + 1>>::value) {
    return count_fields<E, N + 1>();
  } else {
    return N;
  }
}

/// How many fields (non-static data members) the aggregate E has.
template <class E>
inline constexpr std::size_t kFieldCount = count_fields<E>();

}  // namespace trainbus::record::detail

namespace trainbus::record::detail {

/// Calls fn(name, events.field...) for every recorded field of the events (all of one type E), in
/// the schema's order; tensor fields (outputs, a tensor loss) are skipped. For printing, JSON and
/// comparing events without protobuf reflection.
template <class Fn, class E, class... Es>
void for_each_recorded_field(Fn&& fn, const E& event, const Es&... others) {
  if constexpr (Has_stage<E>::value) fn("stage", event.stage, others.stage...);
  if constexpr (Has_progress<E>::value) fn("progress", event.progress, others.progress...);
  if constexpr (Has_batch<E>::value) fn("batch", event.batch, others.batch...);
  if constexpr (Has_loss<E>::value) {
    if constexpr (std::is_same_v<std::decay_t<decltype(event.loss)>, double>) {
      fn("loss", event.loss, others.loss...);
    }
  }
  if constexpr (Has_metrics<E>::value) fn("metrics", event.metrics, others.metrics...);
  if constexpr (Has_callback_metrics<E>::value) {
    fn("callback_metrics", event.callback_metrics, others.callback_metrics...);
  }
  if constexpr (Has_progress_bar<E>::value) {
    fn("progress_bar", event.progress_bar, others.progress_bar...);
  }
  if constexpr (Has_hparams<E>::value) fn("hparams", event.hparams, others.hparams...);
  if constexpr (Has_num_batches<E>::value)
    fn("num_batches", event.num_batches, others.num_batches...);
  if constexpr (Has_max_epochs<E>::value) fn("max_epochs", event.max_epochs, others.max_epochs...);
  if constexpr (Has_optimizer_idx<E>::value) {
    fn("optimizer_idx", event.optimizer_idx, others.optimizer_idx...);
  }
  if constexpr (Has_batch_idx<E>::value) fn("batch_idx", event.batch_idx, others.batch_idx...);
  if constexpr (Has_path<E>::value) fn("path", event.path, others.path...);
  if constexpr (Has_type<E>::value) fn("type", event.type, others.type...);
  if constexpr (Has_message<E>::value) fn("message", event.message, others.message...);
  if constexpr (Has_reason<E>::value) fn("reason", event.reason, others.reason...);
  if constexpr (Has_num_val_batches<E>::value) {
    fn("num_val_batches", event.num_val_batches, others.num_val_batches...);
  }
  if constexpr (Has_bytes<E>::value) fn("bytes", event.bytes, others.bytes...);
  if constexpr (Has_monitor<E>::value) fn("monitor", event.monitor, others.monitor...);
  if constexpr (Has_score<E>::value) fn("score", event.score, others.score...);
  if constexpr (Has_learning_rates<E>::value) {
    fn("learning_rates", event.learning_rates, others.learning_rates...);
  }
  if constexpr (Has_step<E>::value) fn("step", event.step, others.step...);
  if constexpr (Has_logger<E>::value) fn("logger", event.logger, others.logger...);
  if constexpr (Has_asked_in<E>::value) fn("asked_in", event.asked_in, others.asked_in...);
  if constexpr (Has_global_rank<E>::value) {
    fn("global_rank", event.global_rank, others.global_rank...);
  }
  if constexpr (Has_local_rank<E>::value) fn("local_rank", event.local_rank, others.local_rank...);
  if constexpr (Has_world_size<E>::value) fn("world_size", event.world_size, others.world_size...);
}

}  // namespace trainbus::record::detail
