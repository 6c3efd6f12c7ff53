#pragma once
/// Reading a recording as a person does: one line per event (text or JSON), filtered by step,
/// epoch and event name, and a summary of the whole (`trainbus replay` and `replay info`).

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "proto/record.pb.h"

namespace trainbus::record {

class RecordingReader;

/// Which events a timeline shows; an unset bound lets everything through.
struct TimelineFilter {
  std::optional<int64_t> from_step;  ///< global_step >= from_step
  std::optional<int64_t> to_step;    ///< global_step <= to_step
  std::optional<int64_t> epoch;
  std::set<std::string> events;  ///< event names (kName); empty: all
  /// Events without a progress (setup, teardown) pass only when no step or epoch bound is set.
  bool matches(const v1::Envelope& envelope) const;
};

/// Throws std::invalid_argument naming the unknown names and listing the known ones.
std::set<std::string> parse_event_names(const std::string& comma_separated);

/// "#12 +0.532s e0 s3 train_batch_end batch_idx=3 batch_size=4 loss=0.52 metrics={...}":
/// sequence, time since the first event, epoch and global step, name and every other field.
std::string timeline_line(const v1::Envelope& envelope, int64_t first_monotonic_ns);

/// The envelope as one line of JSON (protobuf's JSON mapping, field names as in the schema).
std::string timeline_json(const v1::Envelope& envelope);

/// Everything `trainbus replay info` prints.
struct RecordingInfo {
  v1::Header header;
  uint64_t events = 0;
  std::map<std::string, uint64_t> counts;  ///< per event name
  int64_t first_monotonic_ns = 0;
  int64_t last_monotonic_ns = 0;
  int64_t last_epoch = -1;
  int64_t last_step = -1;
  uint64_t file_bytes = 0;
  bool clean_end = false;
  std::string ending;
  std::vector<std::string> problems;
};

/// Reads the rest of `reader` (from where it is) into a summary.
RecordingInfo summarize(RecordingReader& reader);

/// The summary as text: header, duration, counts per event type, how the recording ended.
std::string describe(const RecordingInfo& info, const std::string& path);

}  // namespace trainbus::record
