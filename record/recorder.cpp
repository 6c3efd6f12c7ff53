#include "record/recorder.h"

#include <unistd.h>

#include <iostream>
#include <utility>

#include "record/event_codec.h"
#include "record/record_file.h"

namespace trainbus::record {

namespace {

std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string();
}

}  // namespace

Recorder::Recorder(RecorderOptions options)
    : options_(std::move(options)), envelopes_(events::AllEvents::size) {
  for (auto& envelope : envelopes_) envelope = std::make_unique<v1::Envelope>();
  start_steady_ = std::chrono::steady_clock::now();
  start_unix_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  v1::Header header;
  header.set_framework_version(TRAINBUS_VERSION);
  header.set_libtorch_version(options_.libtorch_version());
  header.set_host(host_name());
  header.set_pid(::getpid());
  header.set_start_unix_ns(start_unix_ns_);
  header.set_rank(options_.rank());
  header.set_world_size(options_.world_size());
  header.set_seed(options_.seed());
  header.set_command_line(options_.command_line());
  header.mutable_options()->insert(options_.run_options().begin(), options_.run_options().end());
  header.mutable_hparams()->insert(options_.hparams().begin(), options_.hparams().end());
  writer_ =
      std::make_unique<RecordFileWriter>(options_.path(), std::move(header), options_.overwrite());
}

Recorder::~Recorder() {
  if (failed_) {
    writer_->close_incomplete();  // events are missing: the recording must read as cut
    return;
  }
  try {
    v1::End end;
    end.set_dropped(events_lost());  // a recording with gaps says so (ReadSummary::ending)
    writer_->close(std::move(end));
  } catch (const std::exception& error) {
    std::cerr << "trainbus: " << name() << " did not end cleanly: " << error.what() << '\n';
  }
}

void Recorder::flush() {
  try {
    writer_->flush();
  } catch (...) {
    failed_ = true;
    throw;
  }
}

template <class E>
void Recorder::record(const E& event) {
  v1::Envelope& envelope = *envelopes_[events::kEventIndex<E>];  // every field is set below
  const auto since_start =
      std::chrono::duration_cast<std::chrono::nanoseconds>(published_at() - start_steady_).count();
  envelope.set_sequence(sequence_++);
  envelope.set_monotonic_ns(since_start);
  envelope.set_wall_unix_ns(start_unix_ns_ + since_start);
  envelope.set_rank(options_.rank());
  try {
    encode(event, envelope);
    writer_->append(envelope);
  } catch (...) {
    failed_ = true;
    throw;
  }
}

#define TRAINBUS_DETAIL_RECORDER_HOOK(Type, hook) \
  void Recorder::hook(const events::Type& event) { record(event); }
TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_RECORDER_HOOK)
#undef TRAINBUS_DETAIL_RECORDER_HOOK

}  // namespace trainbus::record
