#pragma once
/// Private to record/: event field values as timeline text and as JSON, for the types
/// for_each_recorded_field hands out.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "base/stage.h"
#include "events/common.h"

namespace trainbus::record::detail {

inline std::string number_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

inline std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + '"';
}

// ---- timeline text: maps as {key=value, ...} in key order, numbers as %g ----

inline std::string text_of(Stage stage) { return std::string(to_string(stage)); }
inline std::string text_of(double value) { return number_text(value); }
inline std::string text_of(int64_t value) { return std::to_string(value); }
inline std::string text_of(const std::string& value) { return quoted(value); }
inline std::string text_of(const events::Progress& progress) {
  return "{epoch=" + std::to_string(progress.epoch) +
         ", global_step=" + std::to_string(progress.global_step) + "}";
}
inline std::string text_of(const events::BatchInfo& batch) {
  return "{batch_idx=" + std::to_string(batch.batch_idx) +
         ", batch_size=" + std::to_string(batch.batch_size) +
         ", dataloader_idx=" + std::to_string(batch.dataloader_idx) + "}";
}
template <class V>
std::string text_of(const std::map<std::string, V>& map) {
  std::string text = "{";
  for (const auto& [key, value] : map) {
    if (text.size() > 1) text += ", ";
    text += key + "=" + text_of(value);
  }
  return text + "}";
}

// ---- JSON: numbers as numbers (NaN and infinities as null), maps as objects ----

inline std::string json_of(Stage stage) { return quoted(std::string(to_string(stage))); }
inline std::string json_of(double value) {
  if (!std::isfinite(value)) return "null";
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}
inline std::string json_of(int64_t value) { return std::to_string(value); }
inline std::string json_of(const std::string& value) { return quoted(value); }
inline std::string json_of(const events::Progress& progress) {
  return "{\"epoch\":" + std::to_string(progress.epoch) +
         ",\"global_step\":" + std::to_string(progress.global_step) + "}";
}
inline std::string json_of(const events::BatchInfo& batch) {
  return "{\"batch_idx\":" + std::to_string(batch.batch_idx) +
         ",\"batch_size\":" + std::to_string(batch.batch_size) +
         ",\"dataloader_idx\":" + std::to_string(batch.dataloader_idx) + "}";
}
template <class V>
std::string json_of(const std::map<std::string, V>& map) {
  std::string json = "{";
  for (const auto& [key, value] : map) {
    if (json.size() > 1) json += ",";
    json += quoted(key) + ":" + json_of(value);
  }
  return json + "}";
}

}  // namespace trainbus::record::detail
