#include "core/durable_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "events/check.h"

namespace trainbus {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error) {
  throw CheckpointError(detail::concat(what, " ", path, ": ", std::strerror(error)));
}

std::string parent_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

}  // namespace

DurableFile::DurableFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create", path_, errno);
}

DurableFile::~DurableFile() {
  if (fd_ >= 0) ::close(fd_);
}

void DurableFile::write(const void* data, std::size_t size) {
  const char* bytes = static_cast<const char*>(data);
  std::size_t left = size;
  while (left > 0) {
    const ssize_t written = ::write(fd_, bytes, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail("cannot write", path_, errno);
    }
    bytes += written;
    left -= static_cast<std::size_t>(written);
  }
  crc_.update(data, size);
  size_ += size;
}

void DurableFile::close_durably() {
  if (::fsync(fd_) != 0) fail("cannot fsync", path_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("cannot close", path_, errno);
}

void fsync_directory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory", path, errno);
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some filesystems cannot fsync a directory (EINVAL); their renames are as durable as they get.
  if (result != 0 && error != EINVAL) fail("cannot fsync directory", path, error);
}

void rename_durably(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int error = errno;
    throw CheckpointError(detail::concat("cannot rename ", from, " to ", to, ": ", std::strerror(error)));
  }
  fsync_directory(parent_of(to));
}

bool exchange_paths(const std::string& a, const std::string& b) {
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_directory(parent_of(b));
    return true;
  }
  if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) return false;
  const int error = errno;
  throw CheckpointError(detail::concat("cannot exchange ", a, " and ", b, ": ", std::strerror(error)));
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

}  // namespace trainbus
