#pragma once
/// Recorder: an asynchronous observer that writes every event of a run to a recording
/// (events.tbrec), for `trainbus replay` and record::RecordingReader.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
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
  /// The recording to create (by convention events.tbrec in the run directory): rank 0's, and
  /// that of a process of its own. A Recorder added on a rank R > 0 (ObserverOptions::every_rank)
  /// writes rank R's beside it, with .rankR before the extension (recording_path_of_rank).
  TRAINBUS_ARG(std::string, path);
  /// Replace a file already there; otherwise the Recorder refuses (no run is overwritten).
  TRAINBUS_ARG(bool, overwrite) = false;
  // ---- run metadata, written in the header ----
  /// The rank and world size the header and every envelope name. Unset (the default): those of
  /// the Trainer that runs the Recorder (Trainer::add_observer; 0 of 1 without one). Setting them
  /// is only needed for a Recorder fed events outside a Trainer; in a job of several processes
  /// they must be the Trainer's (else adding the Recorder throws), so that no two ranks record
  /// under one rank. A Recorder added on a rank R > 0 writes `path` marked .rankR
  /// (recording_path_of_rank), unless `rank` is set and `path` is marked for it already (one
  /// configuration per rank, each naming its own file): then `path` itself. In a job of several
  /// processes, rank 0 refuses a path marked for another rank (events.rank1.tbrec).
  TRAINBUS_ARG(std::optional<int64_t>, rank);
  TRAINBUS_ARG(std::optional<int64_t>, world_size);
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
/// left out. The file is created, with its header, when the Recorder is attached (Trainer::
/// add_observer or ObserverPool::attach, which throw record::RecordingError naming it when it
/// cannot be; or at its first event when its hooks are called directly): only then is its rank
/// known. A Recorder never attached and given no event writes nothing (as one a Trainer does not
/// run on a rank R > 0 without every_rank). The terminal record, which marks a complete
/// recording, when the recorder is destroyed (after its pool has delivered everything to it),
/// unless a write failed: then the recording ends without one and reads as cut. A run that failed
/// is still complete: its Exception event is in the recording. flush() runs on the pool's flush
/// interval (1 s by default), so a killed process loses at most that much of the recording.
class Recorder : public events::Observer {
 public:
  /// Checks the options; the file is created when the Recorder is attached (see the class).
  explicit Recorder(RecorderOptions options);
  ~Recorder() override;

  /// "Recorder(<path()>)".
  std::string name() const override { return "Recorder(" + path_ + ")"; }
  void flush() override;
  /// Takes the rank and world size it runs on, and creates its recording: options.path() on rank
  /// 0, marked with .rankR on a rank R > 0. Throws MisconfigurationError when, in a job of
  /// several processes, RecorderOptions::rank or world_size say otherwise, or rank 0's path is
  /// marked for another rank (rank_marked_in), or when it records another rank already;
  /// record::RecordingError when the file cannot be created.
  void attached(const events::Placement& placement) override;

  /// The recording: options.path(), or the rank's file once attached on a rank R > 0.
  const std::string& path() const noexcept { return path_; }

#define TRAINBUS_DETAIL_RECORDER_HOOK(Type, hook) void hook(const events::Type& event) override;
  TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_RECORDER_HOOK)
#undef TRAINBUS_DETAIL_RECORDER_HOOK

 private:
  template <class E>
  void record(const E& event);
  void create_file();  // at path_, its header naming rank_ and world_size_

  RecorderOptions options_;
  std::string path_;
  int64_t rank_ = 0;
  int64_t world_size_ = 1;
  std::optional<int64_t> placed_rank_;  // the global rank it was attached on
  int64_t placed_world_size_ = 1;       // and the world size then
  std::unique_ptr<RecordFileWriter> writer_;
  // One envelope per event type, refilled for each event of its type: their entries stay
  // allocated (hooks never run concurrently, so one set serves every pool thread).
  std::vector<std::unique_ptr<v1::Envelope>> envelopes_;
  bool failed_ = false;  // a write failed: no terminal record
  std::chrono::steady_clock::time_point start_steady_;
  int64_t start_unix_ns_ = 0;
  uint64_t sequence_ = 0;
};

/// The recording of rank `rank` in a job whose rank 0 records to `path`: `path` itself for rank 0,
/// else with ".rankR" before its extension (runs/events.tbrec -> runs/events.rank1.tbrec; at the
/// end of a name without one: runs/recording -> runs/recording.rank1). Always marked, a path
/// marked already too (events.rank1.tbrec -> events.rank1.rank1.tbrec), so that the same path
/// never names one file on two ranks.
std::string recording_path_of_rank(const std::string& path, int64_t rank);

/// N when the file name of `path` is marked as rank N's recording: ".rankN" before its extension
/// (events.rank1.tbrec), or ending a name without one (recording.rank1).
std::optional<int64_t> rank_marked_in(const std::string& path);

}  // namespace trainbus::record
