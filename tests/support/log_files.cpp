#include "tests/support/log_files.h"

#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "base/tfrecord.h"

namespace trainbus::testing {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<trainbus::tensorboard::Event> read_tensorboard_events(const std::string& path) {
  const TfRecords records = read_tfrecords(path);
  REQUIRE(records.complete);
  std::vector<trainbus::tensorboard::Event> events;
  for (const std::string& record : records.records) {
    trainbus::tensorboard::Event event;
    REQUIRE(event.ParseFromString(record));
    events.push_back(event);
  }
  return events;
}

}  // namespace trainbus::testing
