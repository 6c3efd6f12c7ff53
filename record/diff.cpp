#include "record/diff.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "record/detail/event_fields.h"
#include "record/detail/field_text.h"
#include "record/event_codec.h"
#include "record/record_file.h"

namespace trainbus::record {

namespace {

bool agree(double a, double b, const DiffOptions& options) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;  // inf - x is inf: no tolerance covers it
  if (a == b) return true;                            // also equal infinities
  const double difference = std::fabs(a - b);
  return difference <= options.atol() ||
         difference <= options.rtol() * std::max(std::fabs(a), std::fabs(b));
}

// One line per field (or map entry) in which `a` and `b`, events of one type, differ.
template <class E>
std::string differences(const E& a, const E& b, const DiffOptions& options) {
  std::string lines;
  // Numbers in full: values that differ beyond a small tolerance can look equal at 6 digits.
  auto precise = [](double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", value);
    return std::string(text);
  };
  auto report = [&](const std::string& name, const std::string& in_a, const std::string& in_b) {
    lines += name + ": " + in_a + " in A, " + in_b + " in B\n";
  };
  detail::for_each_recorded_field(
      [&](const char* name, const auto& value_a, const auto& value_b) {
        using Value = std::decay_t<decltype(value_a)>;
        // Setup's and FitStart's place of the process in the job: which process recorded it, as
        // the envelope's rank, not the run's (its world size is compared).
        if constexpr (std::is_same_v<E, events::Setup> || std::is_same_v<E, events::FitStart>) {
          if (std::string_view(name) == "global_rank" || std::string_view(name) == "local_rank") {
            return;
          }
        }
        if constexpr (std::is_same_v<Value, double>) {
          if (!agree(value_a, value_b, options)) {
            report(name, precise(value_a), precise(value_b));
          }
        } else if constexpr (std::is_same_v<Value, Metrics>) {
          for (const auto& [key, in_a] : value_a) {
            const auto in_b = value_b.find(key);
            const std::string entry = std::string(name) + "[" + key + "]";
            if (in_b == value_b.end()) {
              report(entry, precise(in_a), "none");
            } else if (!agree(in_a, in_b->second, options)) {
              report(entry, precise(in_a), precise(in_b->second));
            }
          }
          for (const auto& [key, in_b] : value_b) {
            if (value_a.count(key) == 0) {
              report(std::string(name) + "[" + key + "]", "none", precise(in_b));
            }
          }
        } else {
          if (!(value_a == value_b)) {
            report(name, detail::text_of(value_a), detail::text_of(value_b));
          }
        }
      },
      a, b);
  return lines;
}

}  // namespace

namespace {

// When a background checkpoint write lands depends on the disk, not on the run: its events are
// compared as a set, not by position.
bool lands_when_the_disk_says(const v1::Envelope& envelope) {
  return envelope.event_case() == v1::Envelope::kCheckpointCommitted ||
         envelope.event_case() == v1::Envelope::kCheckpointRemoved;
}

std::string landing_key(const v1::Envelope& envelope) {
  std::string key;
  visit_event(envelope, [&](const auto& event) {
    using E = std::decay_t<decltype(event)>;
    if constexpr (std::is_same_v<E, events::CheckpointCommitted> ||
                  std::is_same_v<E, events::CheckpointRemoved>) {
      key = std::string(E::kName) + " " + event.path + " (epoch " +
            std::to_string(event.progress.epoch) + ", step " +
            std::to_string(event.progress.global_step) + ")";
    }
  });
  return key;
}

// The next event to compare by position; checkpoint landings on the way go into `landed`.
bool next_positional(RecordingReader& reader, v1::Envelope& envelope, uint64_t& count,
                     std::multiset<std::string>& landed) {
  while (reader.next(envelope)) {
    ++count;
    if (!lands_when_the_disk_says(envelope)) return true;
    landed.insert(landing_key(envelope));
  }
  return false;
}

}  // namespace

DiffResult diff_recordings(RecordingReader& a, RecordingReader& b, const DiffOptions& options) {
  DiffResult result;
  v1::Envelope event_a, event_b;
  std::multiset<std::string> landed_a, landed_b;
  for (;;) {
    const bool has_a = next_positional(a, event_a, result.events_a, landed_a);
    const bool has_b = next_positional(b, event_b, result.events_b, landed_b);
    if (!has_a && !has_b) break;
    if (result.first) {
      if (!has_a || !has_b) break;  // the rest only counts events: read the longer one on its own
      continue;
    }
    Divergence divergence;
    divergence.index = result.compared;
    divergence.event_a = has_a ? std::string(event_name(event_a)) : std::string();
    divergence.event_b = has_b ? std::string(event_name(event_b)) : std::string();
    if (const v1::Progress* progress = has_a ? progress_of(event_a) : progress_of(event_b)) {
      divergence.progress = *progress;
    }
    if (!has_a || !has_b) {
      divergence.what = std::string(has_a ? "B" : "A") + " has no more events";
      result.first = divergence;
      break;
    }
    if (event_a.event_case() != event_b.event_case()) {
      divergence.what =
          "a different event: " + divergence.event_a + " in A, " + divergence.event_b + " in B";
      result.first = divergence;
      continue;
    }
    std::string found;
    visit_event(event_a, [&](const auto& decoded_a) {
      std::decay_t<decltype(decoded_a)> decoded_b;
      decode(event_b, decoded_b);
      found = differences(decoded_a, decoded_b, options);
    });
    if (!found.empty()) {
      divergence.what = std::move(found);
      result.first = divergence;
      continue;
    }
    ++result.compared;
  }
  // Whichever recording is longer: count the rest of its events.
  v1::Envelope rest;
  while (next_positional(a, rest, result.events_a, landed_a)) {
  }
  while (next_positional(b, rest, result.events_b, landed_b)) {
  }
  if (!result.first && landed_a != landed_b) {
    Divergence divergence;
    divergence.index = result.compared;
    divergence.event_a = divergence.event_b = "checkpoint_committed";
    std::vector<std::string> only_a, only_b;
    std::set_difference(landed_a.begin(), landed_a.end(), landed_b.begin(), landed_b.end(),
                        std::back_inserter(only_a));
    std::set_difference(landed_b.begin(), landed_b.end(), landed_a.begin(), landed_a.end(),
                        std::back_inserter(only_b));
    divergence.what = "the checkpoints written or removed differ (compared as a set):";
    for (const std::string& key : only_a) divergence.what += "\nonly in A: " + key;
    for (const std::string& key : only_b) divergence.what += "\nonly in B: " + key;
    result.first = divergence;
  }
  result.ending_a = a.summary().ending;
  result.ending_b = b.summary().ending;
  return result;
}

std::string describe(const DiffResult& result, const std::string& path_a, const std::string& path_b,
                     const DiffOptions& options) {
  std::ostringstream out;
  out << "A: " << path_a << " (" << result.events_a << " events, " << result.ending_a << ")\n"
      << "B: " << path_b << " (" << result.events_b << " events, " << result.ending_b << ")\n"
      << "tolerance: rtol " << options.rtol() << ", atol " << options.atol() << "\n";
  if (!result.first) {
    out << "same: all " << result.compared << " events agree\n";
    return out.str();
  }
  const Divergence& first = *result.first;
  out << "first divergence: event #" << first.index;
  if (first.progress) {
    out << " (epoch " << first.progress->epoch() << ", step " << first.progress->global_step()
        << ")";
  }
  out << ", " << (first.event_a.empty() ? "(end)" : first.event_a);
  if (first.event_b != first.event_a) {
    out << " in A, " << (first.event_b.empty() ? "(end)" : first.event_b) << " in B";
  }
  out << "\n";
  std::istringstream lines(first.what);
  std::string line;
  while (std::getline(lines, line)) out << "  " << line << '\n';
  out << "the " << result.compared << " events before it agree\n";
  return out.str();
}

}  // namespace trainbus::record
