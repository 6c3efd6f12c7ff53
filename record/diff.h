#pragma once
/// Where two recorded runs start to differ: the first event whose name, order or values (beyond a
/// tolerance) differ, or where one recording ends before the other (`trainbus replay diff`).

#include <cstdint>
#include <optional>
#include <string>

#include "base/arg.h"
#include "proto/record.pb.h"

namespace trainbus::record {

class RecordingReader;

struct DiffOptions {
  /// Two numbers a and b agree when |a - b| <= atol or |a - b| <= rtol * max(|a|, |b|) ; NaN
  /// agrees with NaN; integers and text must be equal.
  TRAINBUS_ARG(double, rtol) = 1e-6;
  TRAINBUS_ARG(double, atol) = 0.0;
};

/// The first event at which two recordings differ.
struct Divergence {
  uint64_t index = 0;            ///< position in both recordings (0: the first event)
  std::string event_a, event_b;  ///< the events' names there ("" where a recording has ended)
  std::optional<v1::Progress> progress;  ///< where in the run (A's event, else B's)
  std::string what;  ///< what differs: the event names, or each differing field with both values
};

struct DiffResult {
  uint64_t compared = 0;                ///< events compared, equal up to the divergence
  uint64_t events_a = 0, events_b = 0;  ///< events read from each (to the divergence and beyond)
  std::optional<Divergence> first;
  std::string ending_a, ending_b;  ///< how each recording ended (see ReadSummary::ending)
};

/// Reads both recordings to their ends and finds the first divergence. Times, sequence numbers and
/// ranks (the envelope's, Setup's and FitStart's global_rank and local_rank) are not compared;
/// everything else an event carries is, the world size too. CheckpointCommitted and
/// CheckpointRemoved, whose place depends on when the disk finished a background write, are
/// compared as a set after the rest agreed.
DiffResult diff_recordings(RecordingReader& a, RecordingReader& b, const DiffOptions& options);

/// The result as text: the first divergence with its fields, then a summary.
std::string describe(const DiffResult& result, const std::string& path_a, const std::string& path_b,
                     const DiffOptions& options);

}  // namespace trainbus::record
