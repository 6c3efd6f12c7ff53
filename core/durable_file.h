#pragma once
/// POSIX file steps that make a checkpoint durable: write everything, fsync, rename, fsync the
/// directory. Every failure is a CheckpointError naming the path and the cause (strerror).

#include <cstddef>
#include <cstdint>
#include <string>

#include "events/crc32c.h"

namespace trainbus {

/// A new file written front to back, its size and CRC32C kept as it goes. Never replaces an
/// existing file (O_EXCL). close_durably() fsyncs and closes; the destructor closes without it.
class DurableFile {
 public:
  explicit DurableFile(std::string path);
  ~DurableFile();
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, std::size_t size);
  void close_durably();
  uint64_t size() const noexcept { return size_; }
  uint32_t crc32c() const { return crc_.value(); }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  Crc32c crc_;
};

/// fsync of a directory, so that the names created or renamed in it survive a crash.
void fsync_directory(const std::string& path);

/// rename(2) of `from` to `to` (a directory or a file), then fsync of the parent directory.
void rename_durably(const std::string& from, const std::string& to);

/// Atomically swaps two paths (renameat2 RENAME_EXCHANGE); false if the filesystem cannot.
bool exchange_paths(const std::string& a, const std::string& b);

/// CRC32C and size of a whole file. Throws CheckpointError naming it if it cannot be read.
struct FileDigest {
  uint64_t size = 0;
  uint32_t crc32c = 0;
};
FileDigest digest_file(const std::string& path);

}  // namespace trainbus
