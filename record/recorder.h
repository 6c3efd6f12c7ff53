#pragma once
/// Recorder: an asynchronous observer that writes every event of a run to a recording
/// (events.tbrec), for `trainbus replay` and record::RecordingReader.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/arg.h"
#include "events/observer.h"

namespace trainbus::record {

class RecordFileWriter;
namespace v1 {
class Envelope;
}  // namespace v1

struct RecorderOptions {
  using Text = std::map<std::string, std::string>;
  /// The recording to create (by convention events.tbrec in the run directory).
  TRAINBUS_ARG(std::string, path);
  /// Replace a file already at `path`; otherwise the constructor refuses (no run is overwritten).
  TRAINBUS_ARG(bool, overwrite) = false;
  // ---- run metadata, written in the header ----
  TRAINBUS_ARG(int64_t, rank) = 0;
  TRAINBUS_ARG(int64_t, world_size) = 1;
  TRAINBUS_ARG(int64_t, seed) = 0;
  TRAINBUS_ARG(std::string, command_line);
  TRAINBUS_ARG(std::string, libtorch_version);
  /// The run's options (trainer, data, callbacks) as text: what `trainbus replay info` shows and
  /// what a replay of its callbacks starts from.
  TRAINBUS_ARG(Text, run_options);
  TRAINBUS_ARG(Text, hparams);
};

/// Writes each event it receives, in publish order, with its sequence number, the wall and
/// monotonic time it was published and the rank, as a trainbus.record.v1.Envelope. Tensors are
/// left out. The header is written by the constructor; the terminal record, which marks a complete
/// recording, when the recorder is destroyed (after its pool has delivered everything to it),
/// unless a write failed: then the recording ends without one and reads as cut. A run that failed
/// is still complete: its Exception event is in the recording. flush() runs on the pool's flush
/// interval (1 s by default), so a killed process loses at most that much of the recording.
class Recorder : public events::Observer {
 public:
  /// Creates the file; throws record::RecordingError naming it when it cannot.
  explicit Recorder(RecorderOptions options);
  ~Recorder() override;

  std::string name() const override { return "Recorder(" + options_.path() + ")"; }
  void flush() override;

  const std::string& path() const noexcept { return options_.path(); }

#define TRAINBUS_DETAIL_RECORDER_HOOK(Type, hook) void hook(const events::Type& event) override;
  TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_RECORDER_HOOK)
#undef TRAINBUS_DETAIL_RECORDER_HOOK

 private:
  template <class E>
  void record(const E& event);

  RecorderOptions options_;
  std::unique_ptr<RecordFileWriter> writer_;
  // One envelope per event type, refilled for each event of its type: their entries stay
  // allocated (hooks never run concurrently, so one set serves every pool thread).
  std::vector<std::unique_ptr<v1::Envelope>> envelopes_;
  bool failed_ = false;  // a write failed: no terminal record
  std::chrono::steady_clock::time_point start_steady_;
  int64_t start_unix_ns_ = 0;
  uint64_t sequence_ = 0;
};

}  // namespace trainbus::record
