#pragma once
/// TFRecord framing, as TensorBoard reads it: length, masked CRC32C of the length, data, masked
/// CRC32C of the data. TensorBoard event files and event recordings (record/) are framed so.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trainbus {

/// TensorFlow's mask: rotate right by 15 bits and add 0xa282ead8.
uint32_t masked_crc32c(std::string_view data);

/// Appends one record to `out`: uint64 length (little-endian), masked CRC of those 8 bytes,
/// `payload`, masked CRC of `payload`.
void append_tfrecord(std::string& out, std::string_view payload);
/// One record, as append_tfrecord writes it.
std::string tfrecord_frame(std::string_view payload);

/// Bytes a record of `payload_size` takes in a file.
constexpr std::size_t tfrecord_size(std::size_t payload_size) { return payload_size + 16; }

/// Walks the records of a buffer, checking both CRCs of each. Stops at the first record that is
/// not whole and sound, and says why; resync() finds the next sound record after a damaged one.
class TfRecordScanner {
 public:
  enum class Status {
    kRecord,        ///< `payload` is the next record; the scanner moved past it
    kEnd,           ///< the buffer ends exactly after the last record
    kTorn,          ///< the buffer ends inside a record (a write cut by a crash)
    kZeroTail,      ///< the file ends in zeros from within this record on (a file system's tail
                    ///< after a crash): no more records
    kBadLengthCrc,  ///< the length does not match its CRC: damaged
    kBadDataCrc,    ///< the payload does not match its CRC: damaged
  };
  struct Step {
    Status status = Status::kEnd;
    std::size_t offset = 0;    ///< where the record (or the problem) starts
    std::string_view payload;  ///< kRecord only
  };

  explicit TfRecordScanner(std::string_view bytes, std::size_t offset = 0)
      : bytes_(bytes), offset_(offset) {}

  /// The next record, or why there is none; only kRecord moves the scanner.
  Step next();
  /// Moves to the first offset after the current one where a sound record starts (both CRCs
  /// match); false, staying put, if there is none. For salvaging a damaged file.
  bool resync();
  std::size_t offset() const noexcept { return offset_; }
  /// "ends inside a record", "has a bad data CRC"... for messages.
  static const char* describe(Status status);

 private:
  Step check(std::size_t offset) const;

  // Where the run of zero bytes that ends the buffer starts; found once, on the first damage.
  std::size_t zeros_start() const;
  bool zero_tail_within(std::size_t offset, std::size_t record_bytes) const;

  std::string_view bytes_;
  std::size_t offset_;
  mutable std::size_t zeros_start_ = std::string_view::npos;
};

/// The records of a TFRecord file up to the first that is torn or damaged.
struct TfRecords {
  std::vector<std::string> records;
  bool complete = true;  ///< false: the file ends with a partial or corrupt record
  std::string problem;   ///< why it stopped early, naming the offset
};

/// Reads `path`, checking both CRCs of every record; stops at a torn tail as TensorBoard does.
/// Throws std::runtime_error naming the file if it cannot be opened.
TfRecords read_tfrecords(const std::string& path);

}  // namespace trainbus
