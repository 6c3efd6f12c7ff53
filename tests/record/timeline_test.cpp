// What `trainbus replay` prints: one readable line per event, filters by step, epoch and name, and
// a summary of the whole recording.
#include "record/timeline.h"

#include <catch2/catch.hpp>

#include "record/event_codec.h"
#include "record/record_file.h"
#include "tests/record/sample_events.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
namespace v1 = trainbus::record::v1;

namespace {

template <class E>
v1::Envelope envelope_of(const E& event, uint64_t sequence, int64_t monotonic_ns) {
  v1::Envelope envelope;
  envelope.set_sequence(sequence);
  envelope.set_monotonic_ns(monotonic_ns);
  record::encode(event, envelope);
  return envelope;
}

}  // namespace

TEST_CASE("A timeline line shows sequence, time, epoch, step, name and every field",
          "[record][timeline]") {
  events::TrainBatchEnd event;
  event.progress = {2, 41};
  event.batch = {5, 64, 0};
  event.loss = 0.125;
  event.metrics = {{"b", 2.0}, {"a", 1.0}};
  CHECK(record::timeline_line(envelope_of(event, 7, 1'500'000'000), 1'000'000'000) ==
        "#7 +0.500s e2 s41 train_batch_end batch={batch_idx=5, batch_size=64, dataloader_idx=0} "
        "loss=0.125 metrics={a=1, b=2}");
  events::Exception error;
  error.stage = Stage::kValidate;
  error.message = "bad \"input\"\nat line 2";
  CHECK_THAT(record::timeline_line(envelope_of(error, 8, 0), 0),
             Catch::Contains("exception stage=validate") &&
                 Catch::Contains(R"(message="bad \"input\"\nat line 2")"));
  CHECK(record::timeline_json(envelope_of(event, 7, 0)) ==
        R"({"sequence":7,"wall_unix_ns":0,"monotonic_ns":0,"rank":0,"event":"train_batch_end",)"
        R"("progress":{"epoch":2,"global_step":41},)"
        R"("batch":{"batch_idx":5,"batch_size":64,"dataloader_idx":0},"loss":0.125,)"
        R"("metrics":{"a":1,"b":2},"progress_bar":{}})");
  // The process's place in the job, where a run starts.
  CHECK(record::timeline_line(envelope_of(events::Setup{Stage::kFit, 1, 1, 2}, 0, 0), 0) ==
        "#0 +0.000s setup stage=fit global_rank=1 local_rank=1 world_size=2");
  CHECK_THAT(record::timeline_json(envelope_of(events::Setup{Stage::kFit, 1, 1, 2}, 0, 0)),
             Catch::EndsWith(R"("stage":"fit","global_rank":1,"local_rank":1,"world_size":2})"));
  events::TrainBatchEnd no_loss;  // NaN: JSON has no NaN
  CHECK_THAT(record::timeline_json(envelope_of(no_loss, 0, 0)), Catch::Contains(R"("loss":null)"));
}

TEST_CASE("Timeline filters select by step, epoch and event name", "[record][timeline]") {
  events::TrainBatchEnd batch_end;
  batch_end.progress = {1, 10};
  const v1::Envelope at_step_10 = envelope_of(batch_end, 0, 0);
  const v1::Envelope setup = envelope_of(events::Setup{}, 1, 0);

  record::TimelineFilter all;
  CHECK(all.matches(at_step_10));
  CHECK(all.matches(setup));

  record::TimelineFilter steps;
  steps.from_step = 10;
  steps.to_step = 12;
  CHECK(steps.matches(at_step_10));
  CHECK_FALSE(steps.matches(setup));  // no step: not in a step range
  steps.from_step = 11;
  CHECK_FALSE(steps.matches(at_step_10));

  record::TimelineFilter epoch;
  epoch.epoch = 0;
  CHECK_FALSE(epoch.matches(at_step_10));

  record::TimelineFilter names;
  names.events = record::parse_event_names("setup,train_epoch_end");
  CHECK(names.matches(setup));
  CHECK_FALSE(names.matches(at_step_10));
  CHECK_THROWS_WITH(record::parse_event_names("train_batch_end,trian_epoch_end"),
                    Catch::StartsWith("--events: unknown event name(s) trian_epoch_end; known: ") &&
                        Catch::Contains("train_epoch_end"));
}

TEST_CASE("replay info counts events per type and says how the recording ended",
          "[record][timeline]") {
  testing::TempDir dir;
  const std::string path = dir.file("events.tbrec");
  {
    v1::Header header;
    header.set_seed(3);
    (*header.mutable_options())["max-epochs"] = "2";
    record::RecordFileWriter writer(path, header);
    writer.append(envelope_of(events::Setup{}, 0, 1'000'000'000));
    for (int64_t step = 0; step < 3; ++step) {
      events::TrainBatchEnd event;
      event.progress = {0, step + 1};
      writer.append(envelope_of(event, static_cast<uint64_t>(step + 1), 2'000'000'000 + step));
    }
  }
  record::RecordingReader reader(path);
  const record::RecordingInfo info = record::summarize(reader);
  CHECK(info.events == 4);
  CHECK(info.counts.at("train_batch_end") == 3);
  CHECK(info.last_step == 3);
  CHECK(info.clean_end);
  const std::string text = record::describe(info, path);
  CHECK_THAT(text, Catch::Contains("seed: 3") && Catch::Contains("options: max-epochs=2") &&
                       Catch::Contains("  train_batch_end: 3\n") &&
                       Catch::Contains("duration: 1.000s") &&
                       Catch::Contains("end: clean (ended cleanly after 4 events)"));
  CHECK_THAT(text, !Catch::Contains("caution"));

  // A format 1 recording made with accumulation: its losses may be undivided, and info says so.
  record::RecordingInfo old = info;
  old.header.set_format_version(1);
  (*old.header.mutable_options())["accumulate-grad-batches"] = "2";
  CHECK_THAT(record::describe(old, path),
             Catch::Contains("caution: format 1 recording made with accumulate-grad-batches 2: "
                             "its train_batch_end losses are the undivided ones, unless"));
}
