// Every event type round-trips through its trainbus.record.v1 message, and the schema names each
// event and each of its fields as the C++ struct does.
#include "record/event_codec.h"

#include <string>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include "events/event_bus.h"
#include "tests/record/sample_events.h"

using namespace trainbus;
namespace v1 = trainbus::record::v1;
namespace fields = trainbus::record::detail;

namespace {

// The name of every field of E that the field list knows.
template <class E>
std::vector<std::string> field_names() {
  std::vector<std::string> names;
#define TRAINBUS_TEST_FIELD_NAME(field) \
  if constexpr (fields::Has_##field<E>::value) names.push_back(#field);
  TRAINBUS_DETAIL_FOR_EACH_EVENT_FIELD(TRAINBUS_TEST_FIELD_NAME)
#undef TRAINBUS_TEST_FIELD_NAME
  return names;
}

template <class E>
bool is_tensor_field(const std::string& name) {
  if (name == "outputs") return true;
  if constexpr (fields::Has_loss<E>::value) {
    return name == "loss" && std::is_same_v<decltype(E::loss), events::TensorRef>;
  }
  return false;
}

}  // namespace

TEST_CASE("The schema has a message per event type, named as the struct, with each of its fields",
          "[record][codec]") {
  const auto* envelope = v1::Envelope::descriptor();
#define TRAINBUS_TEST_SCHEMA(Type, hook)                                                      \
  {                                                                                           \
    INFO("event " #Type);                                                                     \
    const auto* field = envelope->FindFieldByName(std::string(events::Type::kName));          \
    REQUIRE(field != nullptr);                                                                \
    REQUIRE(field->message_type() != nullptr);                                                \
    CHECK(field->message_type()->name() == #Type);                                            \
    CHECK(field->containing_oneof() == envelope->FindOneofByName("event"));                   \
    CHECK(fields::kKnownFields<events::Type> == fields::kFieldCount<events::Type>);           \
    for (const std::string& name : field_names<events::Type>()) {                             \
      INFO("field " << name);                                                                 \
      const bool in_schema = field->message_type()->FindFieldByName(name) != nullptr;         \
      const bool reserved =                                                                   \
          field->message_type()->IsReservedName(name) || is_tensor_field<events::Type>(name); \
      CHECK((in_schema || reserved));                                                         \
      CHECK(in_schema != is_tensor_field<events::Type>(name));                                \
    }                                                                                         \
  }
  TRAINBUS_FOR_EACH_EVENT(TRAINBUS_TEST_SCHEMA)
#undef TRAINBUS_TEST_SCHEMA
}

TEST_CASE("Every event type round-trips through an Envelope, every field kept, tensors left out",
          "[record][codec]") {
  int checked = 0;
  events::for_each_event_type([&](auto tag) {
    using E = typename decltype(tag)::type;
    INFO("event " << E::kName);
    const E original = testing::sample_event<E>(3);
    v1::Envelope envelope;
    record::encode(original, envelope);
    CHECK(record::event_name(envelope) == E::kName);
    v1::Envelope parsed;
    REQUIRE(parsed.ParseFromString(envelope.SerializeAsString()));
    E decoded;
    record::decode(parsed, decoded);
    CHECK(testing::same_recorded_fields(original, decoded));
    CHECK_FALSE(testing::same_recorded_fields(E{}, decoded));  // the sample is not the default
    ++checked;
  });
  CHECK(checked == static_cast<int>(events::AllEvents::size));
}

TEST_CASE("decode refuses an envelope that holds another event, naming both", "[record][codec]") {
  v1::Envelope envelope;
  record::encode(testing::sample_event<events::TrainStart>(), envelope);
  events::TrainEnd wrong;
  CHECK_THROWS_WITH(record::decode(envelope, wrong),
                    Catch::Contains("holds `train_start`, not `train_end`"));
  CHECK(record::progress_of(envelope)->global_step() == 2);
  CHECK(record::progress_of(v1::Envelope()) == nullptr);
}

TEST_CASE("publish hands a recorded event to the bus's subscribers in its C++ type",
          "[record][codec]") {
  events::EventBus bus;
  std::vector<events::TrainBatchEnd> seen;
  auto subscription = bus.subscribe<events::TrainBatchEnd>(
      [&](const events::TrainBatchEnd& e) { seen.push_back(e); });
  v1::Envelope envelope;
  const auto original = testing::sample_event<events::TrainBatchEnd>(5);
  record::encode(original, envelope);
  CHECK(record::publish(envelope, bus));
  REQUIRE(seen.size() == 1);
  CHECK(testing::same_recorded_fields(original, seen[0]));

  v1::Envelope end;
  end.mutable_end()->set_events(1);
  CHECK_FALSE(record::publish(end, bus));
  CHECK(record::event_name(end) == "end");
  CHECK(seen.size() == 1);
}

TEST_CASE("EventDecoder reuses its events and still decodes each record exactly",
          "[record][codec]") {
  // Metric maps are updated in place when the names repeat: make them change size, names and
  // order between records, and interleave another type.
  const std::vector<trainbus::Metrics> metrics = {
      {{"a", 1}, {"b", 2}},           {{"a", 3}, {"b", 4}}, {{"a", 5}, {"c", 6}}, {{"a", 7}}, {},
      {{"b", 8}, {"c", 9}, {"d", 10}}};
  record::EventDecoder decoder;
  std::vector<trainbus::Metrics> decoded;
  v1::Envelope envelope;
  for (std::size_t i = 0; i < metrics.size(); ++i) {
    events::TrainBatchEnd event = testing::sample_event<events::TrainBatchEnd>(static_cast<int>(i));
    event.metrics = metrics[i];
    record::encode(event, envelope);
    CHECK(decoder.visit(envelope, [&](const auto& got) {
      using Got = std::decay_t<decltype(got)>;
      if constexpr (std::is_same_v<Got, events::TrainBatchEnd>) {
        CHECK(testing::same_recorded_fields(got, event));
        decoded.push_back(got.metrics);
      }
    }));
    v1::Envelope other;
    record::encode(testing::sample_event<events::TrainEpochEnd>(static_cast<int>(i)), other);
    CHECK(decoder.visit(other, [](const auto&) {}));
  }
  CHECK(decoded == metrics);
}

TEST_CASE("Setup and FitStart keep the process's rank and world size through a recording",
          "[record][codec]") {
  events::Setup setup{Stage::kValidate, 3, 1, 4};
  v1::Envelope envelope;
  record::encode(setup, envelope);
  v1::Envelope parsed;
  REQUIRE(parsed.ParseFromString(envelope.SerializeAsString()));
  events::Setup decoded_setup;
  record::decode(parsed, decoded_setup);
  CHECK(decoded_setup.stage == Stage::kValidate);
  CHECK(decoded_setup.global_rank == 3);
  CHECK(decoded_setup.local_rank == 1);
  CHECK(decoded_setup.world_size == 4);

  events::FitStart fit_start;
  fit_start.global_rank = 1;
  fit_start.local_rank = 0;  // rank 1 of 2 machines of one process each
  fit_start.world_size = 2;
  record::encode(fit_start, envelope);
  REQUIRE(parsed.ParseFromString(envelope.SerializeAsString()));
  events::FitStart decoded_fit_start;
  record::decode(parsed, decoded_fit_start);
  CHECK(decoded_fit_start.global_rank == 1);
  CHECK(decoded_fit_start.local_rank == 0);
  CHECK(decoded_fit_start.world_size == 2);
}

TEST_CASE("A Setup or FitStart recorded before ranks were reads as rank 0 of a world of 1",
          "[record][codec]") {
  // What a recorder wrote before: the messages without the rank fields.
  v1::Envelope old_setup;
  old_setup.mutable_setup()->set_stage(v1::STAGE_TEST);
  v1::Envelope old_fit_start;
  old_fit_start.mutable_fit_start()->set_num_batches(7);
  for (v1::Envelope* old : {&old_setup, &old_fit_start}) {
    v1::Envelope parsed;
    REQUIRE(parsed.ParseFromString(old->SerializeAsString()));
    CHECK(record::visit_event(parsed, [](const auto& event) {
      using E = std::decay_t<decltype(event)>;
      if constexpr (fields::Has_world_size<E>::value) {
        INFO("event " << E::kName);
        CHECK(event.global_rank == 0);
        CHECK(event.local_rank == 0);
        CHECK(event.world_size == 1);
      } else {
        FAIL("not a Setup or FitStart: " << E::kName);
      }
    }));
  }
}
