#pragma once
/// The event recording file (events.tbrec): the magic, then TFRecord-framed records: a Header, one
/// Envelope per event, and an Envelope holding `end` when the run ended cleanly
/// (proto/record.proto).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/arena.h>

#include "base/arg.h"
#include "proto/record.pb.h"

namespace trainbus::record {

/// The first 8 bytes of every recording: a text reader stops at \x1a, a line-ending conversion
/// breaks \r\n (the PNG trick), so a damaged copy is caught before parsing.
inline constexpr std::string_view kMagic{"TBREC\r\n\x1a", 8};
/// The format this build writes and the newest it reads. Older formats are read as they are; what
/// each version changed is listed in proto/record.proto.
inline constexpr int64_t kFormatVersion = 2;
/// What Header::magic holds.
inline constexpr std::string_view kHeaderMagic = "trainbus.record";

/// What a reader must know of a recording in an older format to read it right, as one sentence;
/// empty when nothing. Today: a format 1 recording made with accumulate_grad_batches > 1 (as its
/// header's options say) may hold undivided train_batch_end losses (proto/record.proto).
std::string format_caveat(const v1::Header& header);

/// A recording cannot be written, or read past the point `offset` names.
class RecordingError : public std::runtime_error {
 public:
  RecordingError(std::string path, std::size_t offset, const std::string& what);
  const std::string& path() const noexcept { return path_; }
  /// Byte offset in the file the problem is at.
  std::size_t offset() const noexcept { return offset_; }

 private:
  std::string path_;
  std::size_t offset_;
};

/// Appends records to a new recording. Buffers in memory; flush() hands the buffer to the
/// operating system (a kill of the process then loses nothing flushed), close() ends the file
/// with its terminal record and fsyncs it. One thread at a time.
class RecordFileWriter {
 public:
  /// Creates `path` and writes the magic and `header` (magic and format version filled in).
  /// Refuses to replace an existing file unless `overwrite`. Throws RecordingError naming it.
  RecordFileWriter(std::string path, v1::Header header, bool overwrite = false);
  /// Closes (with the terminal record) if close() was not called; reports a failure on stderr.
  ~RecordFileWriter();
  RecordFileWriter(const RecordFileWriter&) = delete;
  RecordFileWriter& operator=(const RecordFileWriter&) = delete;

  void append(const v1::Envelope& envelope);
  void flush();
  /// Appends an envelope holding `end` (with the count of envelopes before it), flushes, fsyncs
  /// and closes. Once; append() afterwards throws.
  void close(v1::End end = {});

  /// Writes what is buffered (best effort) and closes without the terminal record, so that the
  /// recording reads as cut: for a recording whose events are incomplete. Never throws.
  void close_incomplete() noexcept;

  const std::string& path() const noexcept { return path_; }
  /// Envelopes appended so far.
  uint64_t records() const noexcept { return records_; }
  bool closed() const noexcept { return fd_ < 0; }

 private:
  void write_out();

  std::string path_;
  int fd_ = -1;
  std::size_t written_ = 0;  // bytes in the file
  uint64_t records_ = 0;
  std::string buffer_;
  std::string payload_;  // reused for each serialisation
};

struct ReadOptions {
  /// Skip damaged records (bad CRC) instead of failing: resync at the next sound record and count
  /// the bytes skipped.
  TRAINBUS_ARG(bool, salvage) = false;
};

/// How reading a recording ended.
struct ReadSummary {
  uint64_t events = 0;                ///< envelopes read (the terminal record not counted)
  bool clean_end = false;             ///< the terminal record was read
  v1::End end;                        ///< the terminal record, if clean_end
  uint64_t skipped_bytes = 0;         ///< bytes of damaged records skipped (salvage)
  std::vector<std::string> problems;  ///< each damaged region skipped, with its offset
  /// One sentence: "ended cleanly after 1234 events" or "ended without a terminal record after
  /// record 1234 (step 56): ...".
  std::string ending;
};

/// Reads a recording, one envelope at a time. The constructor reads the file and checks its
/// magic, format version and header; next() checks each record's CRCs.
///
/// A file cut by a crash (a torn last record, a zero-filled tail, no terminal record) is not an
/// error: next() returns false and summary().ending says where it ended. A damaged record (a CRC
/// that does not match) is: RecordingError with its index and byte offset, or, with salvage, a
/// problem noted and the reading resumed at the next sound record.
class RecordingReader {
 public:
  /// Throws RecordingError: cannot open, not a recording, newer format, damaged header.
  explicit RecordingReader(std::string path, ReadOptions options = {});

  const v1::Header& header() const noexcept { return header_; }
  /// The next event into `envelope`; false at the end of the recording (see summary()).
  bool next(v1::Envelope& envelope);
  /// The next event, in memory of the reader's own valid until the next call; nullptr at the end.
  /// For reading many records: they are parsed into a protobuf Arena, emptied every 1024 records,
  /// instead of allocating and freeing each one's submessages and strings (most of a replay's time
  /// otherwise).
  const v1::Envelope* next();
  /// Complete once next() returned false.
  const ReadSummary& summary() const noexcept { return summary_; }
  const std::string& path() const noexcept { return path_; }
  std::size_t file_size() const noexcept { return bytes_.size(); }

 private:
  [[noreturn]] void fail(std::size_t offset, const std::string& what) const;
  void finish(std::string ending);

  std::string path_;
  ReadOptions options_;
  std::string bytes_;
  std::size_t offset_ = 0;
  uint64_t record_index_ = 0;        // records read, the header included
  int64_t last_step_ = -1;           // global step of the last event with a progress
  bool index_after_resync_ = false;  // the next record's index comes from its sequence number
  std::size_t resync_skipped_ = 0;   // bytes the last resync skipped
  bool done_ = false;
  v1::Header header_;
  ReadSummary summary_;
  // A Setup or FitStart of a recording made before they carried the process's place in the job
  // (world_size absent): the envelope's rank and the header's world size stand in; the local
  // rank is not known (0).
  void fill_place_in_job(v1::Envelope& envelope) const;

  std::unique_ptr<google::protobuf::Arena> arena_;  // for next(); made on first use
  v1::Envelope* arena_envelope_ = nullptr;          // on arena_; null after a reset
  int parsed_on_arena_ = 0;                         // records parsed since the last reset
};

}  // namespace trainbus::record
