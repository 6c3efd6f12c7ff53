#include "record/recorder.h"

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <utility>

#include "base/errors.h"
#include "record/event_codec.h"
#include "record/record_file.h"

namespace trainbus::record {

namespace {

std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string();
}

}  // namespace

std::optional<int64_t> rank_marked_in(const std::string& path) {
  const std::filesystem::path name = std::filesystem::path(path).filename();
  // ".rankN" ending the stem (events.rank1.tbrec), or a name without an extension ending so
  // (recording.rank1, whose ".rank1" std::filesystem takes for the extension).
  for (const std::string& part : {name.extension().string(), name.stem().string()}) {
    const std::size_t dot = part.rfind(".rank");
    if (dot == std::string::npos) continue;
    const std::string digits = part.substr(dot + 5);
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
      continue;
    return std::stoll(digits);
  }
  return std::nullopt;
}

std::string recording_path_of_rank(const std::string& path, int64_t rank) {
  if (rank == 0) return path;
  // Always marked, a path marked already too: the same path on two ranks never names one file.
  std::filesystem::path of_rank(path);
  of_rank.replace_filename(of_rank.stem().string() + ".rank" + std::to_string(rank) +
                           of_rank.extension().string());
  return of_rank.string();
}

Recorder::Recorder(RecorderOptions options)
    : options_(std::move(options)),
      path_(options_.path()),
      rank_(options_.rank().value_or(0)),
      world_size_(options_.world_size().value_or(1)),
      envelopes_(events::AllEvents::size) {
  TRAINBUS_CHECK(!options_.path().empty(), "Recorder: RecorderOptions::path is empty; name the ",
                 "recording (events.tbrec in the run directory)");
  for (auto& envelope : envelopes_) envelope = std::make_unique<v1::Envelope>();
  start_steady_ = std::chrono::steady_clock::now();
  start_unix_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
}

void Recorder::attached(const events::Placement& placement) {
  if (placed_rank_) {
    TRAINBUS_CHECK(
        *placed_rank_ == placement.global_rank && placed_world_size_ == placement.world_size,
        name(), " records rank ", *placed_rank_, " of ", placed_world_size_,
        "'s events already; it cannot also be added on rank ", placement.global_rank, " of ",
        placement.world_size, ": make a Recorder for each");
    return;  // attached again on its rank of the same job: one recording
  }
  if (placement.world_size > 1) {
    // Two ranks under one rank would read as one rank's events (replay, diff): refused.
    TRAINBUS_CHECK(options_.rank().value_or(placement.global_rank) == placement.global_rank,
                   "Recorder(", options_.path(), "): RecorderOptions::rank is ", *options_.rank(),
                   " but it is added on rank ", placement.global_rank, " of ", placement.world_size,
                   "; leave rank unset and each rank's Recorder records under its own");
    TRAINBUS_CHECK(options_.world_size().value_or(placement.world_size) == placement.world_size,
                   "Recorder(", options_.path(), "): RecorderOptions::world_size is ",
                   *options_.world_size(), " but the job it is added in has ", placement.world_size,
                   " processes; leave world_size unset");
  }
  const std::optional<int64_t> marked = rank_marked_in(options_.path());
  if (placement.world_size > 1 && placement.global_rank == 0) {
    // Rank 0 keeps the path it is given: its recording would be named as rank N's, and rank
    // N's own (RecorderOptions::rank set there, the path kept) would be the very same file.
    TRAINBUS_CHECK(!marked || *marked == 0, "Recorder(", options_.path(),
                   "): the path is marked as rank ", marked.value_or(0), "'s recording (.rank",
                   marked.value_or(0), ") but the Recorder is added on rank 0 of ",
                   placement.world_size, "; name rank 0's recording (without .rank",
                   marked.value_or(0), "): on a rank R > 0 the Recorder marks it .rankR itself");
  }
  if (!writer_) {
    rank_ = options_.rank().value_or(placement.global_rank);
    world_size_ = options_.world_size().value_or(placement.world_size);
    // A path marked for its rank is kept only when the rank was set too: one configuration per
    // rank, each naming its own file. The same options on every rank are always marked.
    const bool named_for_its_rank = options_.rank() && marked == placement.global_rank;
    path_ = named_for_its_rank ? options_.path()
                               : recording_path_of_rank(options_.path(), placement.global_rank);
    create_file();
  }
  placed_rank_ = placement.global_rank;
  placed_world_size_ = placement.world_size;
}

void Recorder::create_file() {
  v1::Header header;
  header.set_framework_version(TRAINBUS_VERSION);
  header.set_libtorch_version(options_.libtorch_version());
  header.set_host(host_name());
  header.set_pid(::getpid());
  header.set_start_unix_ns(start_unix_ns_);
  header.set_rank(rank_);
  header.set_world_size(world_size_);
  header.set_seed(options_.seed());
  header.set_command_line(options_.command_line());
  header.mutable_options()->insert(options_.run_options().begin(), options_.run_options().end());
  header.mutable_hparams()->insert(options_.hparams().begin(), options_.hparams().end());
  writer_ = std::make_unique<RecordFileWriter>(path_, std::move(header), options_.overwrite());
}

Recorder::~Recorder() {
  if (!writer_) return;  // never attached nor given an event: no recording
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
  if (!writer_) return;
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
  envelope.set_rank(rank_);
  try {
    if (!writer_) create_file();  // hooks called directly, not attached: as one process
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
