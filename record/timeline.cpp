#include "record/timeline.h"

#include <cstdio>
#include <ctime>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "events/all.h"
#include "record/detail/event_fields.h"
#include "record/detail/field_text.h"
#include "record/event_codec.h"
#include "record/record_file.h"

namespace trainbus::record {

namespace {

const std::set<std::string>& known_event_names() {
  static const std::set<std::string> names = [] {
    std::set<std::string> all;
    events::for_each_event_type([&](auto tag) { all.emplace(decltype(tag)::type::kName); });
    return all;
  }();
  return names;
}

std::string seconds(int64_t nanoseconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3fs", static_cast<double>(nanoseconds) * 1e-9);
  return text;
}

}  // namespace

bool TimelineFilter::matches(const v1::Envelope& envelope) const {
  if (!events.empty() && events.count(std::string(event_name(envelope))) == 0) return false;
  const v1::Progress* progress = progress_of(envelope);
  if (!progress) return !from_step && !to_step && !epoch;
  if (from_step && progress->global_step() < *from_step) return false;
  if (to_step && progress->global_step() > *to_step) return false;
  if (epoch && progress->epoch() != *epoch) return false;
  return true;
}

std::set<std::string> parse_event_names(const std::string& comma_separated) {
  std::set<std::string> names;
  std::string unknown;
  std::istringstream list(comma_separated);
  std::string name;
  while (std::getline(list, name, ',')) {
    if (name.empty()) continue;
    if (known_event_names().count(name) == 0) {
      unknown += (unknown.empty() ? "" : ", ") + name;
      continue;
    }
    names.insert(name);
  }
  if (!unknown.empty()) {
    std::string known;
    for (const std::string& each : known_event_names()) known += (known.empty() ? "" : ",") + each;
    throw std::invalid_argument("--events: unknown event name(s) " + unknown + "; known: " + known);
  }
  return names;
}

std::string timeline_line(const v1::Envelope& envelope, int64_t first_monotonic_ns) {
  std::string line = "#" + std::to_string(envelope.sequence()) + " +" +
                     seconds(envelope.monotonic_ns() - first_monotonic_ns);
  if (const auto progress = progress_of(envelope)) {
    line +=
        " e" + std::to_string(progress->epoch()) + " s" + std::to_string(progress->global_step());
  }
  line += " ";
  line += event_name(envelope);
  visit_event(envelope, [&](const auto& event) {
    detail::for_each_recorded_field(
        [&](const char* name, const auto& value) {
          using Value = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<Value, events::Progress>) {
            return;  // shown as eEPOCH sSTEP
          } else {
            if constexpr (!std::is_arithmetic_v<Value> && !std::is_enum_v<Value> &&
                          !std::is_same_v<Value, std::string> &&
                          !std::is_same_v<Value, events::BatchInfo>) {
              if (value.empty()) return;  // an empty map says nothing
            }
            line += std::string(" ") + name + "=" + detail::text_of(value);
          }
        },
        event);
  });
  return line;
}

std::string timeline_json(const v1::Envelope& envelope) {
  std::string json = "{\"sequence\":" + std::to_string(envelope.sequence()) +
                     ",\"wall_unix_ns\":" + std::to_string(envelope.wall_unix_ns()) +
                     ",\"monotonic_ns\":" + std::to_string(envelope.monotonic_ns()) +
                     ",\"rank\":" + std::to_string(envelope.rank()) +
                     ",\"event\":" + detail::quoted(std::string(event_name(envelope)));
  visit_event(envelope, [&](const auto& event) {
    detail::for_each_recorded_field(
        [&](const char* name, const auto& value) {
          json += std::string(",\"") + name + "\":" + detail::json_of(value);
        },
        event);
  });
  return json + "}";
}

RecordingInfo summarize(RecordingReader& reader) {
  RecordingInfo info;
  info.header = reader.header();
  info.file_bytes = reader.file_size();
  v1::Envelope envelope;
  bool first = true;
  while (reader.next(envelope)) {
    ++info.events;
    ++info.counts[std::string(event_name(envelope))];
    if (first) info.first_monotonic_ns = envelope.monotonic_ns();
    first = false;
    info.last_monotonic_ns = envelope.monotonic_ns();
    if (const auto progress = progress_of(envelope)) {
      info.last_epoch = progress->epoch();
      info.last_step = progress->global_step();
    }
  }
  info.clean_end = reader.summary().clean_end;
  info.ending = reader.summary().ending;
  info.problems = reader.summary().problems;
  return info;
}

std::string describe(const RecordingInfo& info, const std::string& path) {
  std::ostringstream out;
  const v1::Header& header = info.header;
  const std::time_t start = static_cast<std::time_t>(header.start_unix_ns() / 1000000000);
  char started[64];
  std::strftime(started, sizeof started, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&start));
  out << "recording: " << path << " (" << info.file_bytes << " bytes, format "
      << header.format_version() << ")\n"
      << "written by: trainbus " << header.framework_version();
  if (!header.libtorch_version().empty()) out << ", LibTorch " << header.libtorch_version();
  out << ", on " << header.host() << " (pid " << header.pid() << ", rank " << header.rank()
      << " of " << header.world_size() << ")\n"
      << "started: " << started << "\n";
  if (!header.command_line().empty()) out << "command: " << header.command_line() << '\n';
  out << "seed: " << header.seed() << '\n';
  if (!header.options().empty()) {
    std::map<std::string, std::string> sorted(header.options().begin(), header.options().end());
    // Wrapped at 80 columns, as many per line as fit.
    std::string line = "options:";
    for (const auto& [name, value] : sorted) {
      const std::string option = name + "=" + value;
      if (line.size() + 1 + option.size() > 80 && line.size() > 8) {
        out << line << '\n';
        line = "        ";
      }
      line += " " + option;
    }
    out << line << '\n';
  }
  out << "duration: " << seconds(info.last_monotonic_ns - info.first_monotonic_ns) << " between "
      << "the first and the last event; last epoch " << info.last_epoch << ", last step "
      << info.last_step << '\n'
      << "events: " << info.events << '\n';
  // Counts in the order a fit meets the events, then anything else.
  events::for_each_event_type([&](auto tag) {
    const std::string name(decltype(tag)::type::kName);
    const auto count = info.counts.find(name);
    if (count != info.counts.end()) out << "  " << name << ": " << count->second << '\n';
  });
  for (const std::string& problem : info.problems) out << "problem: " << problem << '\n';
  if (const std::string caveat = format_caveat(header); !caveat.empty()) {
    out << "caution: " << caveat << '\n';
  }
  out << "end: " << (info.clean_end ? "clean" : "CUT") << " (" << info.ending << ")\n";
  return out.str();
}

}  // namespace trainbus::record
