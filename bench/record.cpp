// Micro-benchmarks (Google Benchmark) of event recordings: how fast the Recorder's writer appends
// a typical TrainBatchEnd (5 metrics, 2 progress-bar values) and how many bytes each takes, and how
// fast a recording replays (read, CRC-checked, decoded and published on a bus).
//
//   build/bin/bench_record --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <benchmark/benchmark.h>

#include "events/event_bus.h"
#include "record/event_codec.h"
#include "record/record_file.h"

namespace {

namespace events = trainbus::events;
namespace record = trainbus::record;

events::TrainBatchEnd typical_batch_end(int64_t step) {
  events::TrainBatchEnd event;
  event.progress = {step / 1000, step};
  event.batch = {step % 1000, 64, 0};
  event.loss = 0.5 / static_cast<double>(step + 1);
  event.metrics = {{"train_loss_step", 0.41},
                   {"train_acc_step", 0.87},
                   {"lr", 1e-3},
                   {"grad_norm", 2.5},
                   {"throughput", 48211.0}};
  event.progress_bar = {{"train_loss", 0.41}, {"train_acc", 0.87}};
  return event;
}

std::string scratch_path(const char* name) {
  return "/tmp/trainbus-bench-" + std::to_string(::getpid()) + "-" + name + ".tbrec";
}

// Encodes, frames and writes TrainBatchEnd events (write(2) every MiB, as the Recorder does).
void BM_RecordTrainBatchEnd(benchmark::State& state) {
  const std::string path = scratch_path("write");
  int64_t step = 0;
  int64_t bytes = 0;
  {
    record::RecordFileWriter writer(path, record::v1::Header(), /*overwrite=*/true);
    record::v1::Envelope envelope;
    events::TrainBatchEnd event = typical_batch_end(0);  // the Recorder gets its events made
    for (auto _ : state) {
      event.progress.global_step = step;
      event.batch.batch_idx = step % 1000;
      envelope.set_sequence(static_cast<uint64_t>(step));
      envelope.set_monotonic_ns(step * 1000);
      envelope.set_wall_unix_ns(1'700'000'000'000'000'000 + step * 1000);
      record::encode(event, envelope);
      writer.append(envelope);
      ++step;
    }
    writer.flush();
  }
  bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  std::remove(path.c_str());
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(bytes);
  state.counters["bytes_per_event"] = static_cast<double>(bytes) / static_cast<double>(step);
}

// A recording of `count` typical TrainBatchEnd events, written once per process.
bool recording_written = false;

const std::string& recording_of(int64_t count) {
  static const std::string path = [count] {
    recording_written = true;
    std::string made = scratch_path("replay");
    record::RecordFileWriter writer(made, record::v1::Header(), /*overwrite=*/true);
    record::v1::Envelope envelope;
    for (int64_t step = 0; step < count; ++step) {
      envelope.set_sequence(static_cast<uint64_t>(step));
      record::encode(typical_batch_end(step), envelope);
      writer.append(envelope);
    }
    return made;
  }();
  return path;
}

// How far BM_ReplayRecording goes with each record, to show where a replay's time goes.
enum class ReplayStage { kRead = 0, kDecode = 1, kPublish = 2 };

// Reads a recording of range(0) events (each record's CRCs checked and its envelope parsed) and,
// by range(1): stops there, decodes each into its C++ event, or also publishes it on a bus with
// one subscriber (a whole replay).
void BM_ReplayRecording(benchmark::State& state) {
  const int64_t count = state.range(0);
  const auto stage = static_cast<ReplayStage>(state.range(1));
  const std::string& path = recording_of(count);
  events::EventBus bus;
  double loss_sum = 0;
  auto subscription = bus.subscribe<events::TrainBatchEnd>(
      [&](const events::TrainBatchEnd& event) { loss_sum += event.loss; });
  for (auto _ : state) {
    record::RecordingReader reader(path);
    record::EventDecoder decoder;
    int64_t replayed = 0;
    while (const record::v1::Envelope* envelope = reader.next()) {
      switch (stage) {
        case ReplayStage::kRead:
          replayed += envelope->has_train_batch_end() ? 1 : 0;
          break;
        case ReplayStage::kDecode:
          replayed += decoder.visit(*envelope, [&](const auto&) {}) ? 1 : 0;
          break;
        case ReplayStage::kPublish:
          replayed += decoder.publish(*envelope, bus) ? 1 : 0;
          break;
      }
    }
    if (replayed != count || !reader.summary().clean_end) state.SkipWithError("replay lost events");
  }
  benchmark::DoNotOptimize(loss_sum);
  state.SetItemsProcessed(state.iterations() * count);
}

BENCHMARK(BM_RecordTrainBatchEnd);
BENCHMARK(BM_ReplayRecording)
    ->ArgNames({"events", "stage"})
    ->Args({1'000'000, static_cast<int64_t>(ReplayStage::kRead)})
    ->Args({1'000'000, static_cast<int64_t>(ReplayStage::kDecode)})
    ->Args({1'000'000, static_cast<int64_t>(ReplayStage::kPublish)})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (recording_written) std::remove(recording_of(1'000'000).c_str());
  return 0;
}
