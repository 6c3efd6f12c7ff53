#include "record/timeline.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <vector>
#include <sstream>
#include <stdexcept>

#include "events/all.h"
#include "record/event_codec.h"
#include "record/record_file.h"

namespace trainbus::record {

namespace {

namespace pb = google::protobuf;

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

// A field's value in the timeline: numbers as %g, maps as {k=v, ...}, messages as {f=v, ...}.
std::string field_text(const pb::Message& message, const pb::FieldDescriptor* field);

std::string value_text(const pb::Message& message, const pb::FieldDescriptor* field, int index) {
  const pb::Reflection* reflection = message.GetReflection();
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return std::to_string(repeated ? reflection->GetRepeatedInt32(message, field, index)
                                     : reflection->GetInt32(message, field));
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return std::to_string(repeated ? reflection->GetRepeatedInt64(message, field, index)
                                     : reflection->GetInt64(message, field));
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return std::to_string(repeated ? reflection->GetRepeatedUInt32(message, field, index)
                                     : reflection->GetUInt32(message, field));
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return std::to_string(repeated ? reflection->GetRepeatedUInt64(message, field, index)
                                     : reflection->GetUInt64(message, field));
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return number(repeated ? reflection->GetRepeatedDouble(message, field, index)
                             : reflection->GetDouble(message, field));
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return number(repeated ? reflection->GetRepeatedFloat(message, field, index)
                             : reflection->GetFloat(message, field));
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return (repeated ? reflection->GetRepeatedBool(message, field, index)
                       : reflection->GetBool(message, field))
                 ? "true"
                 : "false";
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumValueDescriptor* value =
          repeated ? reflection->GetRepeatedEnum(message, field, index)
                   : reflection->GetEnum(message, field);
      std::string name = value->name();
      const std::string prefix = "STAGE_";
      if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return name;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string text = repeated ? reflection->GetRepeatedString(message, field, index)
                                  : reflection->GetString(message, field);
      // One line per event: escape what would break it.
      std::string quoted = "\"";
      for (char c : text) {
        if (c == '\n') {
          quoted += "\\n";
        } else if (c == '"' || c == '\\') {
          quoted += '\\';
          quoted += c;
        } else {
          quoted += c;
        }
      }
      return quoted + '"';
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      const pb::Message& inner = repeated ? reflection->GetRepeatedMessage(message, field, index)
                                          : reflection->GetMessage(message, field);
      if (field->is_map()) {
        const pb::FieldDescriptor* key = inner.GetDescriptor()->map_key();
        const pb::FieldDescriptor* value = inner.GetDescriptor()->map_value();
        std::string key_text = inner.GetReflection()->GetString(inner, key);
        return key_text + "=" + value_text(inner, value, -1);
      }
      std::string text = "{";
      for (int i = 0; i < inner.GetDescriptor()->field_count(); ++i) {
        if (i > 0) text += ", ";
        const pb::FieldDescriptor* f = inner.GetDescriptor()->field(i);
        text += f->name() + "=" + field_text(inner, f);
      }
      return text + "}";
    }
  }
  return "?";
}

std::string field_text(const pb::Message& message, const pb::FieldDescriptor* field) {
  if (!field->is_repeated()) return value_text(message, field, -1);
  // Maps print sorted by key (protobuf keeps them unordered).
  std::vector<std::string> entries;
  const int size = message.GetReflection()->FieldSize(message, field);
  for (int i = 0; i < size; ++i) entries.push_back(value_text(message, field, i));
  std::sort(entries.begin(), entries.end());
  std::string text = "{";
  for (std::size_t i = 0; i < entries.size(); ++i) text += (i ? ", " : "") + entries[i];
  return text + "}";
}

const std::set<std::string>& known_event_names() {
  static const std::set<std::string> names = [] {
    std::set<std::string> all;
    events::for_each_event_type(
        [&](auto tag) { all.emplace(decltype(tag)::type::kName); });
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
  const std::optional<v1::Progress> progress = progress_of(envelope);
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
    line += " e" + std::to_string(progress->epoch()) + " s" + std::to_string(progress->global_step());
  }
  line += " ";
  line += event_name(envelope);
  if (const pb::Message* event = event_message(envelope)) {
    const pb::Descriptor* descriptor = event->GetDescriptor();
    for (int i = 0; i < descriptor->field_count(); ++i) {
      const pb::FieldDescriptor* field = descriptor->field(i);
      if (field->name() == "progress") continue;
      if (field->is_repeated() && event->GetReflection()->FieldSize(*event, field) == 0) continue;
      line += " " + field->name() + "=" + field_text(*event, field);
    }
  }
  return line;
}

std::string timeline_json(const v1::Envelope& envelope) {
  std::string json;
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  const pb::util::Status status = pb::util::MessageToJsonString(envelope, &json, options);
  if (!status.ok()) throw std::runtime_error("record: cannot print an event as JSON: " +
                                             std::string(status.message()));
  return json;
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
  out << "end: " << (info.clean_end ? "clean" : "CUT") << " (" << info.ending << ")\n";
  return out.str();
}

}  // namespace trainbus::record
