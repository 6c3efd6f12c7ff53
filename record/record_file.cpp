#include "record/record_file.h"

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <utility>

#include "base/tfrecord.h"
#include "record/event_codec.h"

namespace trainbus::record {

namespace {

constexpr std::size_t kWriteThreshold = std::size_t{1} << 20;  // bytes buffered before a write(2)

int64_t unix_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string errno_text(int error) { return std::strerror(error); }

}  // namespace

RecordingError::RecordingError(std::string path, std::size_t offset, const std::string& what)
    : std::runtime_error(path + ": " + what), path_(std::move(path)), offset_(offset) {}

// ---- writing ----

RecordFileWriter::RecordFileWriter(std::string path, v1::Header header, bool overwrite)
    : path_(std::move(path)) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL);
  fd_ = ::open(path_.c_str(), flags, 0644);
  if (fd_ < 0) {
    const int error = errno;
    if (error == EEXIST) {
      throw RecordingError(path_, 0,
                           "a recording is already there; choose another path (trainbus fit "
                           "--record-path) or remove it");
    }
    throw RecordingError(path_, 0, "cannot create the recording: " + errno_text(error));
  }
  header.set_magic(std::string(kHeaderMagic));
  header.set_format_version(kFormatVersion);
  if (header.start_unix_ns() == 0) header.set_start_unix_ns(unix_now_ns());
  buffer_.append(kMagic);
  header.SerializeToString(&payload_);
  append_tfrecord(buffer_, payload_);
  try {
    write_out();  // the header is in the file from the start
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

RecordFileWriter::~RecordFileWriter() {
  if (closed()) return;
  try {
    close();
  } catch (const std::exception& error) {
    std::cerr << "trainbus: the recording was not closed cleanly: " << error.what() << '\n';
  }
}

void RecordFileWriter::append(const v1::Envelope& envelope) {
  if (closed()) throw RecordingError(path_, written_, "append after close()");
  envelope.SerializeToString(&payload_);
  append_tfrecord(buffer_, payload_);
  ++records_;
  if (buffer_.size() >= kWriteThreshold) write_out();
}

void RecordFileWriter::flush() {
  if (!closed()) write_out();
}

void RecordFileWriter::write_out() {
  std::size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      buffer_.erase(0, done);  // keep what is not in the file, for a later attempt
      written_ += done;
      throw RecordingError(path_, written_, "cannot write the recording: " + errno_text(error));
    }
    done += static_cast<std::size_t>(n);
  }
  written_ += done;
  buffer_.clear();
}

void RecordFileWriter::close_incomplete() noexcept {
  if (closed()) return;
  try {
    write_out();
  } catch (const std::exception&) {
    // the events it could not write are lost; the reader reports where the file ends
  }
  ::close(std::exchange(fd_, -1));
}

void RecordFileWriter::close(v1::End end) {
  if (closed()) throw RecordingError(path_, written_, "close() called twice");
  v1::Envelope envelope;
  envelope.set_sequence(records_);
  end.set_events(records_);
  if (end.end_unix_ns() == 0) end.set_end_unix_ns(unix_now_ns());
  *envelope.mutable_end() = std::move(end);
  envelope.SerializeToString(&payload_);
  append_tfrecord(buffer_, payload_);
  try {
    write_out();
  } catch (...) {
    ::close(std::exchange(fd_, -1));
    throw;
  }
  const int fd = std::exchange(fd_, -1);
  const bool synced = ::fsync(fd) == 0;
  const int sync_error = errno;
  const bool closed_ok = ::close(fd) == 0;
  if (!synced) throw RecordingError(path_, written_, "fsync failed: " + errno_text(sync_error));
  if (!closed_ok) throw RecordingError(path_, written_, "close failed: " + errno_text(errno));
}

// ---- reading ----

RecordingReader::RecordingReader(std::string path, ReadOptions options)
    : path_(std::move(path)), options_(options) {
  std::error_code error;
  if (std::filesystem::is_directory(path_, error)) {
    fail(0, "is a directory; a recording is a file such as " +
                (std::filesystem::path(path_) / "events.tbrec").string());
  }
  std::ifstream file(path_, std::ios::binary);
  if (!file) throw RecordingError(path_, 0, "cannot open: " + errno_text(errno));
  // In chunks to the end: also a pipe (<(zcat run.tbrec.gz)), whose size is unknown.
  const auto size_hint = std::filesystem::file_size(path_, error);
  if (!error) bytes_.reserve(static_cast<std::size_t>(size_hint));
  char chunk[1 << 16];
  while (file.read(chunk, sizeof chunk) || file.gcount() > 0) {
    bytes_.append(chunk, static_cast<std::size_t>(file.gcount()));
  }
  if (file.bad()) fail(bytes_.size(), "cannot read: " + errno_text(errno));
  if (bytes_.find_first_not_of('\0') == std::string::npos) {
    fail(0, bytes_.empty() ? "is empty: the run was cut before its recording's header reached the "
                             "disk"
                           : "holds only zero bytes: the run was cut before its recording's "
                             "header reached the disk");
  }
  if (bytes_.size() < kMagic.size() ||
      std::string_view(bytes_).substr(0, kMagic.size()) != kMagic) {
    const bool mangled = bytes_.compare(0, 5, "TBREC") == 0;
    fail(0, std::string("not a trainbus recording: it does not start with the magic "
                        "\"TBREC\\r\\n\\x1a\"") +
                (mangled ? " (its line endings were changed: copied in text mode?)"
                         : " (recordings are the events.tbrec files `trainbus fit` writes)"));
  }
  offset_ = kMagic.size();
  TfRecordScanner scanner(bytes_, offset_);
  const TfRecordScanner::Step step = scanner.next();
  if (step.status != TfRecordScanner::Status::kRecord) {
    fail(step.offset, std::string("the header record at offset ") + std::to_string(step.offset) +
                          " " + TfRecordScanner::describe(step.status) +
                          ": the recording is damaged from its start");
  }
  if (!header_.ParseFromArray(step.payload.data(), static_cast<int>(step.payload.size())) ||
      header_.magic() != kHeaderMagic) {
    fail(step.offset, "the header record at offset " + std::to_string(step.offset) +
                          " is not a trainbus.record.v1 Header");
  }
  if (header_.format_version() > kFormatVersion) {
    fail(step.offset, "written in recording format version " +
                          std::to_string(header_.format_version()) +
                          ", newer than this trainbus reads (" + std::to_string(kFormatVersion) +
                          "): read it with the trainbus that wrote it (" +
                          header_.framework_version() + ") or a newer one");
  }
  offset_ = scanner.offset();
  record_index_ = 1;
}

std::string format_caveat(const v1::Header& header) {
  if (header.format_version() >= 2) return {};
  const auto accumulate = header.options().find("accumulate-grad-batches");
  if (accumulate == header.options().end() || accumulate->second.empty() ||
      accumulate->second == "1") {
    return {};
  }
  return "format 1 recording made with accumulate-grad-batches " + accumulate->second +
         ": its train_batch_end losses are the undivided ones, unless the trainbus that wrote it "
         "was built from commit 9443243 (2026-12-03 17:04 UTC) or later, which divided them by " +
         accumulate->second + "; they are replayed as recorded";
}

void RecordingReader::fail(std::size_t offset, const std::string& what) const {
  throw RecordingError(path_, offset, what);
}

void RecordingReader::finish(std::string ending) {
  done_ = true;
  summary_.ending = std::move(ending);
}

const v1::Envelope* RecordingReader::next() {
  constexpr int kRecordsPerArena = 1024;
  if (!arena_) arena_ = std::make_unique<google::protobuf::Arena>();
  if (parsed_on_arena_ == kRecordsPerArena) {
    arena_envelope_ = nullptr;
    arena_->Reset();
    parsed_on_arena_ = 0;
  }
  if (arena_envelope_ == nullptr) {
    arena_envelope_ = google::protobuf::Arena::CreateMessage<v1::Envelope>(arena_.get());
  }
  ++parsed_on_arena_;
  return next(*arena_envelope_) ? arena_envelope_ : nullptr;
}

void RecordingReader::fill_place_in_job(v1::Envelope& envelope) const {
  const auto fill = [&](auto& message) {
    if (message.world_size() != 0) return;  // recorded
    message.set_global_rank(envelope.rank());
    message.set_world_size(std::max<int64_t>(1, header_.world_size()));
  };
  if (envelope.has_setup()) {
    fill(*envelope.mutable_setup());
  } else if (envelope.has_fit_start()) {
    fill(*envelope.mutable_fit_start());
  }
}

bool RecordingReader::next(v1::Envelope& envelope) {
  using Status = TfRecordScanner::Status;
  while (!done_) {
    TfRecordScanner scanner(bytes_, offset_);
    const TfRecordScanner::Step step = scanner.next();
    // Words for the messages below, built only when one is needed.
    const auto after = [&] {
      return "after record " + std::to_string(record_index_ - 1) +
             (last_step_ >= 0 ? " (step " + std::to_string(last_step_) + ")" : "");
    };
    const auto where = [&] {
      return "record " + std::to_string(record_index_) + " at offset " +
             std::to_string(step.offset);
    };
    switch (step.status) {
      case Status::kRecord: {
        offset_ = scanner.offset();
        if (!envelope.ParseFromArray(step.payload.data(), static_cast<int>(step.payload.size()))) {
          if (!options_.salvage()) {
            fail(step.offset, where() + " has sound CRCs but is not a trainbus.record.v1 Envelope");
          }
          summary_.problems.push_back(where() + " is not an Envelope; skipped it");
          summary_.skipped_bytes += tfrecord_size(step.payload.size());
          ++record_index_;
          continue;
        }
        if (index_after_resync_) {
          // The region skipped may have held several records: the writer numbers its events
          // densely, so this one's sequence number says which record it is (the header is 0).
          // Trusted only as far as the skipped bytes could hold records (each is at least 16
          // bytes of framing): a sequence number from another file or a hand-made one is not.
          index_after_resync_ = false;
          const uint64_t at_most = record_index_ - 1 + resync_skipped_ / 16;
          if (!envelope.has_end() && envelope.sequence() + 1 > record_index_ &&
              envelope.sequence() + 1 <= at_most) {
            record_index_ = envelope.sequence() + 1;
          }
        }
        ++record_index_;
        if (envelope.has_end()) {
          summary_.clean_end = true;
          summary_.end = envelope.end();
          const std::size_t left = bytes_.size() - offset_;
          if (left > 0) {
            summary_.problems.push_back(std::to_string(left) +
                                        " bytes follow the terminal record at offset " +
                                        std::to_string(offset_) + "; ignored");
          }
          std::string ending = "ended cleanly after " + std::to_string(summary_.events) + " events";
          if (summary_.end.events() != summary_.events) {
            ending += "; its terminal record counts " + std::to_string(summary_.end.events()) +
                      ": the others were lost to damage";
          }
          if (summary_.end.dropped() > 0) {
            summary_.problems.push_back(
                "the recorder lost " + std::to_string(summary_.end.dropped()) +
                " events (its queue was full, or it stalled): the recording has gaps");
            ending += ", with " + std::to_string(summary_.end.dropped()) + " events lost";
          }
          finish(std::move(ending));
          return false;
        }
        ++summary_.events;
        if (const auto progress = progress_of(envelope)) last_step_ = progress->global_step();
        fill_place_in_job(envelope);
        return true;
      }
      case Status::kEnd:
        finish("ended without a terminal record " + after() +
               ": the run was cut (a crash or a kill); every record before is whole");
        return false;
      case Status::kTorn:
        finish("ended without a terminal record " + after() + ": the last record, at offset " +
               std::to_string(step.offset) + ", is torn (" +
               std::to_string(bytes_.size() - step.offset) +
               " bytes of it were written); every record before is whole");
        return false;
      case Status::kZeroTail:
        finish("ended without a terminal record " + after() + ": a zero-filled tail of " +
               std::to_string(bytes_.size() - step.offset) + " bytes at offset " +
               std::to_string(step.offset) + " holds no records");
        return false;
      case Status::kBadLengthCrc:
      case Status::kBadDataCrc: {
        const std::string problem = where() + " " + TfRecordScanner::describe(step.status);
        if (!options_.salvage()) {
          fail(step.offset, problem +
                                ": the file is damaged there (read with --salvage to skip it and "
                                "read the sound records after it)");
        }
        if (scanner.resync()) {
          const std::size_t skipped = scanner.offset() - step.offset;
          summary_.skipped_bytes += skipped;
          summary_.problems.push_back(problem + "; skipped " + std::to_string(skipped) +
                                      " bytes to the next sound record, at offset " +
                                      std::to_string(scanner.offset()));
          offset_ = scanner.offset();
          ++record_index_;  // at least one record; the next one's sequence number may say more
          index_after_resync_ = true;
          resync_skipped_ = skipped;
          continue;
        }
        const std::size_t skipped = bytes_.size() - step.offset;
        summary_.skipped_bytes += skipped;
        summary_.problems.push_back(problem + "; no sound record follows: skipped the last " +
                                    std::to_string(skipped) + " bytes");
        finish("ended without a terminal record " + after() + ": damaged from offset " +
               std::to_string(step.offset) + " on");
        return false;
      }
    }
  }
  return false;
}

}  // namespace trainbus::record
