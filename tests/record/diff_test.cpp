// replay diff finds the first event where two recordings differ: a value beyond the tolerance,
// another event, or one ending first.
#include "record/diff.h"

#include <cmath>
#include <functional>
#include <string>

#include <catch2/catch.hpp>

#include "record/event_codec.h"
#include "record/record_file.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
namespace v1 = trainbus::record::v1;

namespace {

// A run of `steps` batch ends (loss 1/(step+1)) with a validation end every 5 steps; `change`
// may alter or replace event i before it is written.
void write_run(const std::string& path, int steps,
               const std::function<void(int, v1::Envelope&)>& change = {}) {
  record::RecordFileWriter writer(path, v1::Header());
  int index = 0;
  for (int step = 0; step < steps; ++step) {
    events::TrainBatchEnd batch_end;
    batch_end.progress = {step / 10, step + 1};
    batch_end.loss = 1.0 / (step + 1);
    batch_end.metrics = {{"train_loss_step", batch_end.loss}};
    v1::Envelope envelope;
    envelope.set_monotonic_ns(step * 1000 + (change ? 7 : 0));  // times never count
    record::encode(batch_end, envelope);
    if (change) change(index, envelope);
    writer.append(envelope);
    ++index;
    if ((step + 1) % 5 == 0) {
      events::ValidationEnd validation;
      validation.progress = batch_end.progress;
      validation.callback_metrics = {{"val_loss", 0.5}};
      v1::Envelope other;
      record::encode(validation, other);
      if (change) change(index, other);
      writer.append(other);
      ++index;
    }
  }
}

record::DiffResult diff(const std::string& a, const std::string& b, double rtol = 1e-6) {
  record::RecordingReader reader_a(a), reader_b(b);
  return record::diff_recordings(reader_a, reader_b, record::DiffOptions().rtol(rtol));
}

}  // namespace

TEST_CASE("Two recordings of the same run agree, whatever their times", "[record][diff]") {
  testing::TempDir dir;
  write_run(dir.file("a.tbrec"), 20);
  write_run(dir.file("b.tbrec"), 20, [](int, v1::Envelope&) {});
  const record::DiffResult result = diff(dir.file("a.tbrec"), dir.file("b.tbrec"));
  CHECK_FALSE(result.first.has_value());
  CHECK(result.compared == 24);
  CHECK_THAT(record::describe(result, "a", "b", record::DiffOptions()),
             Catch::Contains("same: all 24 events agree"));
}

TEST_CASE("diff names the first value beyond the tolerance, with both values", "[record][diff]") {
  testing::TempDir dir;
  write_run(dir.file("a.tbrec"), 20);
  // Event 13 is the batch end at global step 12 (one validation end came before it).
  write_run(dir.file("b.tbrec"), 20, [](int index, v1::Envelope& envelope) {
    if (index >= 13 && envelope.has_train_batch_end()) {
      for (auto& metric : *envelope.mutable_train_batch_end()->mutable_metrics()) {
        if (metric.key() == "train_loss_step") metric.set_value(metric.value() * 1.001);
      }
    }
  });
  const record::DiffResult result = diff(dir.file("a.tbrec"), dir.file("b.tbrec"));
  REQUIRE(result.first.has_value());
  CHECK(result.first->index == 13);
  CHECK(result.compared == 13);
  CHECK(result.first->progress->global_step() == 12);
  CHECK_THAT(result.first->what, Catch::Contains("train_loss_step"));
  CHECK(result.events_a == 24);
  CHECK(result.events_b == 24);
  const std::string text = record::describe(result, "a.tbrec", "b.tbrec", record::DiffOptions());
  CHECK_THAT(text, Catch::Contains("first divergence: event #13 (epoch 1, step 12), "
                                   "train_batch_end\n"));
  // Within a looser tolerance they agree.
  CHECK_FALSE(diff(dir.file("a.tbrec"), dir.file("b.tbrec"), 1e-2).first.has_value());
}

TEST_CASE("diff finds another event in the same place, and a run that ends first",
          "[record][diff]") {
  testing::TempDir dir;
  write_run(dir.file("a.tbrec"), 20);
  write_run(dir.file("b.tbrec"), 20, [](int index, v1::Envelope& envelope) {
    if (index == 5) {  // the first validation end becomes a train end
      events::TrainEnd end;
      envelope.Clear();
      record::encode(end, envelope);
    }
  });
  record::DiffResult order = diff(dir.file("a.tbrec"), dir.file("b.tbrec"));
  REQUIRE(order.first.has_value());
  CHECK(order.first->index == 5);
  CHECK(order.first->event_a == "validation_end");
  CHECK(order.first->event_b == "train_end");

  write_run(dir.file("short.tbrec"), 7);
  record::DiffResult shorter = diff(dir.file("a.tbrec"), dir.file("short.tbrec"));
  REQUIRE(shorter.first.has_value());
  CHECK(shorter.first->index == 8);
  CHECK(shorter.first->event_b.empty());
  CHECK(shorter.first->what == "B has no more events");
  CHECK(shorter.events_a == 24);
  CHECK(shorter.events_b == 8);
}

TEST_CASE("An infinite value differs from every finite one, whatever the tolerance",
          "[record][diff]") {
  testing::TempDir dir;
  write_run(dir.file("a.tbrec"), 10);
  write_run(dir.file("b.tbrec"), 10, [](int index, v1::Envelope& envelope) {
    if (index == 3) envelope.mutable_train_batch_end()->set_loss(INFINITY);
  });
  const record::DiffResult result = diff(dir.file("a.tbrec"), dir.file("b.tbrec"), 0.5);
  REQUIRE(result.first.has_value());
  CHECK(result.first->index == 3);
  CHECK_THAT(result.first->what, Catch::StartsWith("loss: 0.25 in A, inf in B"));
}

TEST_CASE("Checkpoint landings are compared as a set, wherever the disk put them",
          "[record][diff]") {
  testing::TempDir dir;
  auto write = [&](const std::string& path, int commit_after, const std::string& committed) {
    record::RecordFileWriter writer(path, v1::Header());
    for (int step = 0; step < 6; ++step) {
      events::TrainBatchEnd batch_end;
      batch_end.progress = {0, step + 1};
      v1::Envelope envelope;
      record::encode(batch_end, envelope);
      writer.append(envelope);
      if (step == commit_after) {
        events::CheckpointCommitted commit;
        commit.progress = {0, 2};
        commit.path = committed;
        commit.bytes = 1000 + step;  // not compared: only what landed where it was asked for
        v1::Envelope landed;
        record::encode(commit, landed);
        writer.append(landed);
      }
    }
  };
  write(dir.file("a.tbrec"), 2, "/ckpt/epoch=0.ckpt");
  write(dir.file("b.tbrec"), 4, "/ckpt/epoch=0.ckpt");  // the same save, landed two steps later
  write(dir.file("c.tbrec"), 2, "/ckpt/epoch=0-v1.ckpt");
  const record::DiffResult same = diff(dir.file("a.tbrec"), dir.file("b.tbrec"));
  CHECK_FALSE(same.first.has_value());
  CHECK(same.events_a == 7);
  const record::DiffResult other = diff(dir.file("a.tbrec"), dir.file("c.tbrec"));
  REQUIRE(other.first.has_value());
  CHECK(other.first->what.find("only in A: checkpoint_committed /ckpt/epoch=0.ckpt (epoch 0, "
                               "step 2)") != std::string::npos);
  CHECK(other.first->what.find("only in B: checkpoint_committed /ckpt/epoch=0-v1.ckpt") !=
        std::string::npos);
}

TEST_CASE("diff compares the world size where a run starts, not which rank recorded it",
          "[record][diff]") {
  testing::TempDir dir;
  // Rank 0's and rank 1's recordings of one job of two: the same but for the rank.
  auto write_rank = [&](const std::string& name, int64_t rank, int64_t world_size) {
    record::RecordFileWriter writer(dir.file(name), v1::Header());
    v1::Envelope envelope;
    envelope.set_rank(rank);
    record::encode(events::Setup{Stage::kFit, rank, rank, world_size}, envelope);
    writer.append(envelope);
    events::FitStart fit_start;
    fit_start.num_batches = 8;
    fit_start.global_rank = fit_start.local_rank = rank;
    fit_start.world_size = world_size;
    record::encode(fit_start, envelope);
    writer.append(envelope);
  };
  write_rank("rank0.tbrec", 0, 2);
  write_rank("rank1.tbrec", 1, 2);
  write_rank("alone.tbrec", 0, 1);
  const record::DiffResult ranks = diff(dir.file("rank0.tbrec"), dir.file("rank1.tbrec"));
  CHECK_FALSE(ranks.first.has_value());
  CHECK(ranks.compared == 2);

  const record::DiffResult worlds = diff(dir.file("rank0.tbrec"), dir.file("alone.tbrec"));
  REQUIRE(worlds.first.has_value());
  CHECK(worlds.first->event_a == "setup");
  CHECK(worlds.first->what == "world_size: 2 in A, 1 in B\n");
}
