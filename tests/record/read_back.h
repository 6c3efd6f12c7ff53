#pragma once
// A whole recording read into memory, for tests.

#include <string>
#include <vector>

#include "record/record_file.h"

namespace trainbus::testing {

struct ReadBack {
  std::vector<record::v1::Envelope> events;
  record::ReadSummary summary;
};

/// Every event of the recording at `path` and how the reading ended.
inline ReadBack read_recording(const std::string& path, record::ReadOptions options = {}) {
  record::RecordingReader reader(path, options);
  ReadBack result;
  record::v1::Envelope envelope;
  while (reader.next(envelope)) result.events.push_back(envelope);
  result.summary = reader.summary();
  return result;
}

}  // namespace trainbus::testing
