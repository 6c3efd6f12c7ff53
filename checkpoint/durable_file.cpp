#include "checkpoint/durable_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "base/errors.h"
#include "checkpoint/write_progress.h"

namespace trainbus::checkpoint {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error) {
  throw CheckpointError(::trainbus::detail::concat(what, " ", path, ": ", std::strerror(error)));
}

// O_DIRECT wants the memory, the file offset and the length aligned to the device's logical block
// size: 4096 covers 512 and 4096.
constexpr std::size_t kDirectBlock = 4096;
constexpr std::size_t kStagingBytes = std::size_t{4} << 20;
// The most one write(2) is given, so that a slow disk shows progress (note_write_step) at least
// every so many bytes, also through the page cache.
constexpr std::size_t kMostBytesAWrite = kStagingBytes;
static_assert(kMostBytesAWrite % kDirectBlock == 0, "direct writes stay whole blocks when split");

// Staging buffers of direct files, reused: new memory for every file would cost a page fault per
// page again. Each open direct file holds one of its own; closed files give theirs back. Two kept
// cover the checkpoint writer (one file at a time) and a second writer beside it.
class StagingBuffers {
 public:
  static StagingBuffers& instance() {
    // Never destroyed: a checkpoint writer joined during static destruction may still write.
    static StagingBuffers* buffers = new StagingBuffers;
    return *buffers;
  }
  /// A buffer of kStagingBytes aligned to kDirectBlock, or nullptr if memory is short.
  char* take() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        char* buffer = free_.back();
        free_.pop_back();
        return buffer;
      }
    }
    return static_cast<char*>(std::aligned_alloc(kDirectBlock, kStagingBytes));
  }
  void give_back(char* buffer) noexcept {
    if (buffer == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.size() < kKept) {
      free_.push_back(buffer);  // NOTE: reserved in the constructor, so this never allocates
    } else {
      std::free(buffer);
    }
  }

 private:
  static constexpr std::size_t kKept = 2;
  StagingBuffers() { free_.reserve(kKept); }
  std::mutex mutex_;
  std::vector<char*> free_;
};

std::string parent_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

}  // namespace

DurableFile::DurableFile(std::string path, bool direct) : path_(std::move(path)) {
  // Again while a signal interrupts it (FUSE answers an interrupted request with EINTR); the
  // file a try made before it was interrupted exists then, and is ours (its name is new).
  bool retried = false;
  for (;;) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ >= 0 || errno != EINTR) break;
    retried = true;
  }
  if (fd_ < 0 && errno == EEXIST && retried)
    fd_ = ::open(path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd_ < 0) fail("cannot create", path_, errno);
  if (!direct) return;
  // O_DIRECT set after the file exists: a filesystem that refuses it (EINVAL) leaves a plain file
  // to write through the page cache.
  staging_ = StagingBuffers::instance().take();
  const int flags = ::fcntl(fd_, F_GETFL);
  direct_ = staging_ != nullptr && flags >= 0 && ::fcntl(fd_, F_SETFL, flags | O_DIRECT) == 0;
  if (!direct_) release_staging();
}

DurableFile::~DurableFile() {
  if (fd_ >= 0) ::close(fd_);
  release_staging();
}

void DurableFile::release_staging() noexcept {
  StagingBuffers::instance().give_back(std::exchange(staging_, nullptr));
}

void DurableFile::write(const void* data, std::size_t size) {
  crc_.update(data, size);
  size_ += size;
  const char* bytes = static_cast<const char*>(data);
  while (size > 0 && direct_) {
    const std::size_t n = std::min(size, kStagingBytes - staged_);
    std::memcpy(staging_ + staged_, bytes, n);
    staged_ += n;
    bytes += n;
    size -= n;
    if (staged_ == kStagingBytes) flush_staged();
  }
  // Not direct, or no longer (a fallback in flush_staged, which left nothing staged).
  write_all(bytes, size);
}

void DurableFile::flush_staged() {
  const std::size_t staged = std::exchange(staged_, 0);
  const std::size_t whole = direct_ ? staged / kDirectBlock * kDirectBlock : staged;
  write_all(staging_, whole);
  if (whole <
      staged) {  // a last partial block, which O_DIRECT cannot write: through the page cache
    stop_direct();
    write_all(staging_ + whole, staged - whole);
  }
}

void DurableFile::write_all(const char* bytes, std::size_t size) {
  while (size > 0) {
    detail::before_write_step(path_);
    const ssize_t written = ::write(fd_, bytes, std::min(size, kMostBytesAWrite));
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && direct_) {  // this filesystem refuses these direct writes after all
        stop_direct();
        continue;
      }
      fail("cannot write", path_, errno);
    }
    bytes += written;
    size -= static_cast<std::size_t>(written);
    note_write_step();
  }
}

void DurableFile::stop_direct() {
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0)
    fail("cannot leave O_DIRECT for", path_, errno);
  direct_ = false;
}

void DurableFile::close_durably() {
  if (staged_ > 0) flush_staged();  // fsync covers both halves of it
  detail::before_write_step(path_);
  if (::fsync(fd_) != 0) fail("cannot fsync", path_, errno);
  note_write_step();
  const int fd = fd_;
  fd_ = -1;
  release_staging();
  if (::close(fd) != 0) fail("cannot close", path_, errno);
}

void fsync_directory(const std::string& path) {
  // No simulated slow disk here: this also runs right after a rename, where nothing may be added.
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory", path, errno);
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  note_write_step();
  // Some filesystems cannot fsync a directory (EINVAL); their renames are as durable as they get.
  if (result != 0 && error != EINVAL) fail("cannot fsync directory", path, error);
}

void rename_durably(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int error = errno;
    throw CheckpointError(
        ::trainbus::detail::concat("cannot rename ", from, " to ", to, ": ", std::strerror(error)));
  }
  fsync_directory(parent_of(to));
}

namespace {
std::atomic<bool> no_rename_exchange{false};
}  // namespace

void detail::simulate_no_rename_exchange(bool on) noexcept { no_rename_exchange.store(on); }

bool exchange_paths(const std::string& a, const std::string& b) {
  if (no_rename_exchange.load()) return false;
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_directory(parent_of(b));
    return true;
  }
  if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) return false;
  const int error = errno;
  throw CheckpointError(
      ::trainbus::detail::concat("cannot exchange ", a, " and ", b, ": ", std::strerror(error)));
}

FileDigest digest_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open", path, errno);
  FileDigest digest;
  Crc32c crc;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      fail("cannot read", path, error);
    }
    if (got == 0) break;
    crc.update(buffer.data(), static_cast<std::size_t>(got));
    digest.size += static_cast<uint64_t>(got);
  }
  ::close(fd);
  digest.crc32c = crc.value();
  return digest;
}

}  // namespace trainbus::checkpoint
