#pragma once
/// TFRecord framing, as TensorBoard reads it: length, masked CRC32C of the length, data, masked
/// CRC32C of the data. Used for TensorBoard event files.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/crc32c.h"

namespace trainbus::observers {

using trainbus::crc32c;
/// TensorFlow's mask: rotate right by 15 bits and add 0xa282ead8.
uint32_t masked_crc32c(std::string_view data);

/// One record: uint64 length (little-endian), masked CRC of those 8 bytes, `payload`, masked CRC
/// of `payload`.
std::string tfrecord_frame(std::string_view payload);

/// The records of a TFRecord file up to the first that is torn or damaged.
struct TfRecords {
  std::vector<std::string> records;
  bool complete = true;  ///< false: the file ends with a partial or corrupt record
  std::string problem;   ///< why it stopped early, naming the offset
};

/// Reads `path`, checking both CRCs of every record; stops at a torn tail as TensorBoard does.
/// Throws std::runtime_error naming the file if it cannot be opened.
TfRecords read_tfrecords(const std::string& path);

}  // namespace trainbus::observers
