#pragma once
/// POSIX file steps that make a checkpoint durable: write everything, fsync, rename, fsync the
/// directory. Every failure is a CheckpointError naming the path and the cause (strerror).

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/crc32c.h"

namespace trainbus::checkpoint {

/// A new file written front to back, its size and CRC32C kept as it goes. Never replaces an
/// existing file (O_EXCL). close_durably() fsyncs and closes; the destructor closes without it.
/// Every write(2) (at most 4 MiB each) and fsync advances the thread's WriteProgress
/// (write_progress.h).
///
/// With `direct`, the data bypasses the page cache (O_DIRECT, staged through an aligned buffer
/// the file holds while open, reused by the next file) where the filesystem allows it, and is
/// written as usual where it does not. For big files written once and not read back soon, such as
/// checkpoints: a write through the page cache takes new pages for every byte and costs ~10x the
/// CPU time on the benchmark machine (bench/README.md), which training pays for when the cores are
/// busy.
class DurableFile {
 public:
  explicit DurableFile(std::string path, bool direct = false);
  ~DurableFile();
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, std::size_t size);
  void close_durably();
  uint64_t size() const noexcept { return size_; }
  uint32_t crc32c() const { return crc_.value(); }
  const std::string& path() const noexcept { return path_; }
  /// Whether writes still bypass the page cache (false without `direct`, or after a fallback).
  bool direct() const noexcept { return direct_; }

 private:
  void write_all(const char* bytes, std::size_t size);
  // Writes the staged bytes: whole blocks directly, a last partial block through the page cache.
  void flush_staged();
  void stop_direct();
  void release_staging() noexcept;

  std::string path_;
  int fd_ = -1;
  bool direct_ = false;
  char* staging_ = nullptr;  // this file's staging buffer while it writes directly
  std::size_t staged_ = 0;   // bytes waiting in the staging buffer (only ever while direct)
  uint64_t size_ = 0;
  Crc32c crc_;
};

/// fsync of a directory, so that the names created or renamed in it survive a crash.
void fsync_directory(const std::string& path);

/// rename(2) of `from` to `to` (a directory or a file), then fsync of the parent directory.
void rename_durably(const std::string& from, const std::string& to);

/// Atomically swaps two paths (renameat2 RENAME_EXCHANGE); false if the filesystem cannot.
bool exchange_paths(const std::string& a, const std::string& b);

namespace detail {
/// Makes exchange_paths() answer as a filesystem without RENAME_EXCHANGE does (tests of the
/// fallback).
void simulate_no_rename_exchange(bool on) noexcept;
}  // namespace detail

/// CRC32C and size of a whole file. Throws CheckpointError naming it if it cannot be read.
struct FileDigest {
  uint64_t size = 0;
  uint32_t crc32c = 0;
};
FileDigest digest_file(const std::string& path);

}  // namespace trainbus::checkpoint
