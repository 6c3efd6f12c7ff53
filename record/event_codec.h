#pragma once
/// Events to and from their trainbus.record.v1 messages (proto/record.proto), one generic
/// conversion for every event type; tensors are left out.

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "events/all.h"
#include "proto/record.pb.h"

namespace trainbus::events {
class EventBus;
}  // namespace trainbus::events

namespace trainbus::record {

// Declares, for every event type E:
//   void encode(const events::E& event, v1::Envelope& envelope);   sets the envelope's event
//     (an envelope that already holds an E is refilled, reusing its allocations)
//   void decode(const v1::Envelope& envelope, events::E& event);   throws if it holds another
#define TRAINBUS_DETAIL_DECLARE_CODEC(Type, hook)                 \
  void encode(const events::Type& event, v1::Envelope& envelope); \
  void decode(const v1::Envelope& envelope, events::Type& event);
TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_DECLARE_CODEC)
#undef TRAINBUS_DETAIL_DECLARE_CODEC

/// The event's name (its kName: "train_batch_end"), "end" for the terminal record, "" for none.
std::string_view event_name(const v1::Envelope& envelope);

/// The event message an envelope holds (nullptr for none); for generic printing.
const google::protobuf::Message* event_message(const v1::Envelope& envelope);

/// The event's progress (epoch and global step), or nullptr if its type has none. Points into the
/// envelope.
const v1::Progress* progress_of(const v1::Envelope& envelope);

/// Decodes the envelope's event and calls fn(event) with it in its C++ type; false, calling
/// nothing, for the terminal record or an empty envelope.
template <class Fn>
bool visit_event(const v1::Envelope& envelope, Fn&& fn) {
  switch (envelope.event_case()) {
#define TRAINBUS_DETAIL_VISIT(Type, hook) \
  case v1::Envelope::k##Type: {           \
    events::Type event;                   \
    decode(envelope, event);              \
    fn(event);                            \
    return true;                          \
  }
    TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_VISIT)
#undef TRAINBUS_DETAIL_VISIT
    default:
      return false;
  }
}

/// Decodes the envelope's event and publishes it on `bus`, in its C++ type, to every subscriber
/// (callbacks, observers). False, publishing nothing, for the terminal record or an empty envelope.
bool publish(const v1::Envelope& envelope, events::EventBus& bus);

namespace detail {
template <class List>
struct TupleOf;
template <class... Es>
struct TupleOf<events::TypeList<Es...>> {
  using type = std::tuple<Es...>;
};
}  // namespace detail

/// visit_event and publish for a stream of records: decodes each into an event of its type kept
/// from one record to the next, so that metric maps with the same names as the last event's (the
/// usual case) are updated in place instead of built again. A replay of 1M events spends most of
/// its time allocating otherwise. The event passed to fn is valid until the next visit.
class EventDecoder {
 public:
  template <class Fn>
  bool visit(const v1::Envelope& envelope, Fn&& fn) {
    switch (envelope.event_case()) {
#define TRAINBUS_DETAIL_VISIT_REUSED(Type, hook)   \
  case v1::Envelope::k##Type: {                    \
    auto& event = std::get<events::Type>(events_); \
    decode(envelope, event);                       \
    fn(std::as_const(event));                      \
    return true;                                   \
  }
      TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_VISIT_REUSED)
#undef TRAINBUS_DETAIL_VISIT_REUSED
      default:
        return false;
    }
  }

  bool publish(const v1::Envelope& envelope, events::EventBus& bus);

 private:
  typename detail::TupleOf<events::AllEvents>::type events_;
};

}  // namespace trainbus::record
