#include "record/event_codec.h"

#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "events/event_bus.h"
#include "record/detail/event_fields.h"

namespace trainbus::record {

namespace {

namespace pb = google::protobuf;

v1::Stage to_proto(Stage stage) {
  switch (stage) {
    case Stage::kFit:
      return v1::STAGE_FIT;
    case Stage::kValidate:
      return v1::STAGE_VALIDATE;
    case Stage::kTest:
      return v1::STAGE_TEST;
    case Stage::kPredict:
      return v1::STAGE_PREDICT;
    case Stage::kSanityCheck:
      return v1::STAGE_SANITY_CHECK;
  }
  throw std::logic_error("record: unknown Stage");
}

Stage from_proto(v1::Stage stage) {
  switch (stage) {
    case v1::STAGE_FIT:
      return Stage::kFit;
    case v1::STAGE_VALIDATE:
      return Stage::kValidate;
    case v1::STAGE_TEST:
      return Stage::kTest;
    case v1::STAGE_PREDICT:
      return Stage::kPredict;
    case v1::STAGE_SANITY_CHECK:
      return Stage::kSanityCheck;
    default:
      throw std::runtime_error("recording: unknown stage " + std::to_string(stage) +
                               " (written by a newer trainbus?)");
  }
}

// Metrics and text maps as repeated {key, value} entries, in the map's (sorted) order. Entries
// already in `out` are reused: a cleared repeated field keeps its elements allocated.
template <class Entries, class Map>
void put_map(Entries& out, const Map& in) {
  for (const auto& [key, value] : in) {
    auto* entry = out.Add();
    entry->set_key(key);
    entry->set_value(value);
  }
}

// Decodes into `out`, which may hold the previous event's values (EventDecoder): when it has the
// same names in the same order (recorded maps are sorted), only the values change.
template <class Map, class Entries>
void get_map(Map& out, const Entries& in) {
  if (out.size() == static_cast<std::size_t>(in.size())) {
    auto names = out.begin();
    bool same_names = true;
    for (const auto& entry : in) {
      if (names->first != entry.key()) {
        same_names = false;
        break;
      }
      ++names;
    }
    if (same_names) {
      auto values = out.begin();
      for (const auto& entry : in) (values++)->second = entry.value();
      return;
    }
  }
  out.clear();
  for (const auto& entry : in) out.insert_or_assign(entry.key(), entry.value());
}

// The oneof field of the envelope that holds events of type E (its number is the oneof case).
template <class E>
const pb::FieldDescriptor* field_of(int number) {
  static const pb::FieldDescriptor* const field =
      v1::Envelope::descriptor()->FindFieldByNumber(number);
  return field;
}

template <class E, class Message>
void encode_fields(const E& event, Message& message) {
  static_assert(detail::kKnownFields<E> == detail::kFieldCount<E>,
                "this event has a field the recorder does not know: add it to "
                "TRAINBUS_DETAIL_FOR_EACH_EVENT_FIELD, record/event_codec.cpp and the event's "
                "message in proto/record.proto");
  if constexpr (detail::Has_stage<E>::value) message.set_stage(to_proto(event.stage));
  if constexpr (detail::Has_progress<E>::value) {
    v1::Progress& progress = *message.mutable_progress();
    progress.set_epoch(event.progress.epoch);
    progress.set_global_step(event.progress.global_step);
  }
  if constexpr (detail::Has_batch<E>::value) {
    v1::BatchInfo& batch = *message.mutable_batch();
    batch.set_batch_idx(event.batch.batch_idx);
    batch.set_batch_size(event.batch.batch_size);
    batch.set_dataloader_idx(event.batch.dataloader_idx);
  }
  if constexpr (detail::Has_loss<E>::value) {
    if constexpr (std::is_same_v<std::decay_t<decltype(event.loss)>, double>)
      message.set_loss(event.loss);
    // a tensor loss (BeforeBackward) is not recorded
  }
  if constexpr (detail::Has_metrics<E>::value) put_map(*message.mutable_metrics(), event.metrics);
  if constexpr (detail::Has_callback_metrics<E>::value) {
    put_map(*message.mutable_callback_metrics(), event.callback_metrics);
  }
  if constexpr (detail::Has_progress_bar<E>::value) {
    put_map(*message.mutable_progress_bar(), event.progress_bar);
  }
  // outputs: tensors are not recorded
  if constexpr (detail::Has_hparams<E>::value) put_map(*message.mutable_hparams(), event.hparams);
  if constexpr (detail::Has_num_batches<E>::value) message.set_num_batches(event.num_batches);
  if constexpr (detail::Has_max_epochs<E>::value) message.set_max_epochs(event.max_epochs);
  if constexpr (detail::Has_optimizer_idx<E>::value) message.set_optimizer_idx(event.optimizer_idx);
  if constexpr (detail::Has_batch_idx<E>::value) message.set_batch_idx(event.batch_idx);
  if constexpr (detail::Has_path<E>::value) message.set_path(event.path);
  if constexpr (detail::Has_type<E>::value) message.set_type(event.type);
  if constexpr (detail::Has_message<E>::value) message.set_message(event.message);
  if constexpr (detail::Has_reason<E>::value) message.set_reason(event.reason);
  if constexpr (detail::Has_num_val_batches<E>::value) {
    message.set_num_val_batches(event.num_val_batches);
  }
  if constexpr (detail::Has_bytes<E>::value) message.set_bytes(event.bytes);
  if constexpr (detail::Has_monitor<E>::value) message.set_monitor(event.monitor);
  if constexpr (detail::Has_score<E>::value) message.set_score(event.score);
  if constexpr (detail::Has_learning_rates<E>::value) {
    put_map(*message.mutable_learning_rates(), event.learning_rates);
  }
  if constexpr (detail::Has_step<E>::value) message.set_step(event.step);
  if constexpr (detail::Has_logger<E>::value) message.set_logger(event.logger);
  if constexpr (detail::Has_asked_in<E>::value) message.set_asked_in(event.asked_in);
  if constexpr (detail::Has_global_rank<E>::value) message.set_global_rank(event.global_rank);
  if constexpr (detail::Has_local_rank<E>::value) message.set_local_rank(event.local_rank);
  if constexpr (detail::Has_world_size<E>::value) message.set_world_size(event.world_size);
}

template <class E, class Message>
void decode_fields(const Message& message, E& event) {
  if constexpr (detail::Has_stage<E>::value) event.stage = from_proto(message.stage());
  if constexpr (detail::Has_progress<E>::value) {
    event.progress.epoch = message.progress().epoch();
    event.progress.global_step = message.progress().global_step();
  }
  if constexpr (detail::Has_batch<E>::value) {
    event.batch.batch_idx = message.batch().batch_idx();
    event.batch.batch_size = message.batch().batch_size();
    event.batch.dataloader_idx = message.batch().dataloader_idx();
  }
  if constexpr (detail::Has_loss<E>::value) {
    if constexpr (std::is_same_v<std::decay_t<decltype(event.loss)>, double>)
      event.loss = message.loss();
  }
  if constexpr (detail::Has_metrics<E>::value) get_map(event.metrics, message.metrics());
  if constexpr (detail::Has_callback_metrics<E>::value) {
    get_map(event.callback_metrics, message.callback_metrics());
  }
  if constexpr (detail::Has_progress_bar<E>::value) {
    get_map(event.progress_bar, message.progress_bar());
  }
  if constexpr (detail::Has_hparams<E>::value) get_map(event.hparams, message.hparams());
  if constexpr (detail::Has_num_batches<E>::value) event.num_batches = message.num_batches();
  if constexpr (detail::Has_max_epochs<E>::value) event.max_epochs = message.max_epochs();
  if constexpr (detail::Has_optimizer_idx<E>::value) event.optimizer_idx = message.optimizer_idx();
  if constexpr (detail::Has_batch_idx<E>::value) event.batch_idx = message.batch_idx();
  if constexpr (detail::Has_path<E>::value) event.path = message.path();
  if constexpr (detail::Has_type<E>::value) event.type = message.type();
  if constexpr (detail::Has_message<E>::value) event.message = message.message();
  if constexpr (detail::Has_reason<E>::value) event.reason = message.reason();
  if constexpr (detail::Has_num_val_batches<E>::value) {
    event.num_val_batches = message.num_val_batches();
  }
  if constexpr (detail::Has_bytes<E>::value) event.bytes = message.bytes();
  if constexpr (detail::Has_monitor<E>::value) event.monitor = message.monitor();
  if constexpr (detail::Has_score<E>::value) event.score = message.score();
  if constexpr (detail::Has_learning_rates<E>::value) {
    get_map(event.learning_rates, message.learning_rates());
  }
  if constexpr (detail::Has_step<E>::value) event.step = message.step();
  if constexpr (detail::Has_logger<E>::value) event.logger = message.logger();
  if constexpr (detail::Has_asked_in<E>::value) event.asked_in = message.asked_in();
  if constexpr (detail::Has_global_rank<E>::value) event.global_rank = message.global_rank();
  if constexpr (detail::Has_local_rank<E>::value) event.local_rank = message.local_rank();
  // Recordings made before the world size was recorded have none (0): one process.
  if constexpr (detail::Has_world_size<E>::value) {
    event.world_size = message.world_size() > 0 ? message.world_size() : 1;
  }
}

}  // namespace

#define TRAINBUS_DETAIL_DEFINE_CODEC(Type, hook)                                             \
  void encode(const events::Type& event, v1::Envelope& envelope) {                           \
    const pb::FieldDescriptor* field = field_of<events::Type>(v1::Envelope::k##Type);        \
    const bool reuse = envelope.event_case() == v1::Envelope::k##Type;                       \
    auto& message =                                                                          \
        static_cast<v1::Type&>(*envelope.GetReflection()->MutableMessage(&envelope, field)); \
    if (reuse) message.Clear(); /* keeps its repeated entries (not progress, batch) */       \
    encode_fields(event, message);                                                           \
  }                                                                                          \
  void decode(const v1::Envelope& envelope, events::Type& event) {                           \
    if (envelope.event_case() != v1::Envelope::k##Type) {                                    \
      throw std::invalid_argument("record::decode: the envelope holds `" +                   \
                                  std::string(event_name(envelope)) + "`, not `" +           \
                                  std::string(events::Type::kName) + "`");                   \
    }                                                                                        \
    const pb::FieldDescriptor* field = field_of<events::Type>(v1::Envelope::k##Type);        \
    decode_fields(                                                                           \
        static_cast<const v1::Type&>(envelope.GetReflection()->GetMessage(envelope, field)), \
        event);                                                                              \
  }
TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_DEFINE_CODEC)
#undef TRAINBUS_DETAIL_DEFINE_CODEC

std::string_view event_name(const v1::Envelope& envelope) {
  if (envelope.event_case() == v1::Envelope::EVENT_NOT_SET) return {};
  const pb::FieldDescriptor* field =
      v1::Envelope::descriptor()->FindFieldByNumber(envelope.event_case());
  return field ? std::string_view(field->name()) : std::string_view();
}

const pb::Message* event_message(const v1::Envelope& envelope) {
  if (envelope.event_case() == v1::Envelope::EVENT_NOT_SET) return nullptr;
  const pb::FieldDescriptor* field =
      v1::Envelope::descriptor()->FindFieldByNumber(envelope.event_case());
  return field ? &envelope.GetReflection()->GetMessage(envelope, field) : nullptr;
}

const v1::Progress* progress_of(const v1::Envelope& envelope) {
  // Per oneof case (a field number of the envelope), the event message's `progress` field, found
  // once: the reader asks for every record.
  struct ProgressFields {
    std::vector<const pb::FieldDescriptor*> by_number;
    ProgressFields() {
      const pb::Descriptor* envelope_type = v1::Envelope::descriptor();
      for (int i = 0; i < envelope_type->field_count(); ++i) {
        const pb::FieldDescriptor* event = envelope_type->field(i);
        if (event->containing_oneof() == nullptr || event->message_type() == nullptr) continue;
        const pb::FieldDescriptor* progress = event->message_type()->FindFieldByName("progress");
        if (progress == nullptr || progress->message_type() != v1::Progress::descriptor()) continue;
        if (by_number.size() <= static_cast<std::size_t>(event->number())) {
          by_number.resize(static_cast<std::size_t>(event->number()) + 1, nullptr);
        }
        by_number[static_cast<std::size_t>(event->number())] = progress;
      }
    }
  };
  static const ProgressFields fields;
  const auto number = static_cast<std::size_t>(envelope.event_case());
  if (number >= fields.by_number.size() || fields.by_number[number] == nullptr) return nullptr;
  const pb::Message* message = event_message(envelope);
  if (message == nullptr) return nullptr;
  return &static_cast<const v1::Progress&>(
      message->GetReflection()->GetMessage(*message, fields.by_number[number]));
}

bool publish(const v1::Envelope& envelope, events::EventBus& bus) {
  return visit_event(envelope, [&](const auto& event) { bus.publish(event); });
}

bool EventDecoder::publish(const v1::Envelope& envelope, events::EventBus& bus) {
  return visit(envelope, [&](const auto& event) { bus.publish(event); });
}

}  // namespace trainbus::record
