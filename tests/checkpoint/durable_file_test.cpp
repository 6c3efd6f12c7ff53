// checkpoint::DurableFile: what lands on disk, through the page cache or around it (O_DIRECT).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include "checkpoint/durable_file.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using trainbus::testing::TempDir;

namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The open(2) flags of this process's descriptor for `path`, from /proc/self/fdinfo; -1 if none.
int open_flags_of(const std::string& path) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    if (std::filesystem::read_symlink(entry.path(), error) != path) continue;
    std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
    for (std::string key; info >> key;) {
      if (key == "flags:") {
        std::string octal;
        info >> octal;
        return std::stoi(octal, nullptr, 8);
      }
    }
  }
  return -1;
}

// Whether this filesystem takes O_DIRECT (tmpfs before Linux 6.6 does not).
bool supports_o_direct(const std::string& dir) {
  const std::string probe = dir + "/probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return fd >= 0;
}

// The fraction of `path`'s pages in the page cache.
double cached_fraction(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  struct stat info {};
  ::fstat(fd, &info);
  const std::size_t size = static_cast<std::size_t>(info.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  ::mincore(map, size, resident.data());
  ::munmap(map, size);
  ::close(fd);
  std::size_t cached = 0;
  for (unsigned char r : resident) cached += r & 1;
  return static_cast<double>(cached) / static_cast<double>(resident.size());
}

}  // namespace

TEST_CASE("A direct DurableFile holds exactly what was written, whatever the sizes of the writes",
          "[checkpoint]") {
  TempDir dir;
  std::mt19937 random(11);
  // Around the 4 KiB block and the 4 MiB staging buffer, and empty.
  for (const std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4096}, std::size_t{4097},
        (std::size_t{4} << 20) + 3, std::size_t{9} << 20}) {
    for (const bool direct : {true, false}) {
      std::string data(size, '\0');
      for (char& c : data) c = static_cast<char>(random());
      const std::string path = dir.file(std::to_string(size) + (direct ? "-direct" : "-cached"));
      checkpoint::DurableFile out(path, direct);
      // On a filesystem without O_DIRECT (tmpfs before Linux 6.6) the file falls back; both must
      // hold.
      const bool went_direct = out.direct();
      for (std::size_t at = 0; at < size;) {
        const std::size_t chunk = std::min<std::size_t>(size - at, 1 + random() % 300000);
        out.write(data.data() + at, chunk);
        at += chunk;
      }
      out.close_durably();
      INFO("size " << size << (direct ? ", direct" : ", through the page cache")
                   << (went_direct ? " (O_DIRECT)" : ""));
      CHECK(out.size() == size);
      CHECK(file_bytes(path) == data);
      const checkpoint::FileDigest digest = checkpoint::digest_file(path);
      CHECK(digest.size == size);
      CHECK(digest.crc32c == out.crc32c());
      if (!direct) CHECK_FALSE(went_direct);
    }
  }
}

TEST_CASE("Two direct DurableFiles open at once on one thread each hold their own bytes",
          "[checkpoint]") {
  TempDir dir;
  std::mt19937 random(5);
  std::string a_data((std::size_t{9} << 20) + 123, '\0'), b_data((std::size_t{6} << 20) + 7, '\0');
  for (char& c : a_data) c = static_cast<char>(random());
  for (char& c : b_data) c = static_cast<char>(random());
  checkpoint::DurableFile a(dir.file("a"), /*direct=*/true);
  checkpoint::DurableFile b(dir.file("b"), /*direct=*/true);
  // Interleaved writes of odd sizes, so that both have bytes staged at the same time.
  std::size_t at_a = 0, at_b = 0;
  while (at_a < a_data.size() || at_b < b_data.size()) {
    const std::size_t n = 1 + random() % 700000;
    const std::size_t take_a = std::min(n, a_data.size() - at_a),
                      take_b = std::min(n / 2 + 1, b_data.size() - at_b);
    a.write(a_data.data() + at_a, take_a);
    b.write(b_data.data() + at_b, take_b);
    at_a += take_a;
    at_b += take_b;
  }
  a.close_durably();
  b.close_durably();
  CHECK((file_bytes(dir.file("a")) == a_data));  // not printed: megabytes of binary
  CHECK((file_bytes(dir.file("b")) == b_data));
}

TEST_CASE("A direct DurableFile really bypasses the page cache where the filesystem allows it",
          "[checkpoint]") {
  TempDir dir;
  if (!supports_o_direct(dir.path().string())) {
    WARN("the temporary directory's filesystem refuses O_DIRECT: only the fallback is tested here");
    checkpoint::DurableFile out(dir.file("fallback"), /*direct=*/true);
    CHECK_FALSE(out.direct());
    return;
  }
  const std::string data(std::size_t{8} << 20, 'x');  // whole blocks: no partial last block
  const std::string direct_path = dir.file("direct"), cached_path = dir.file("cached");
  {
    checkpoint::DurableFile out(direct_path, /*direct=*/true);
    CHECK(out.direct());
    CHECK((open_flags_of(direct_path) & O_DIRECT) != 0);  // the kernel's view, not ours
    out.write(data.data(), data.size());
    CHECK(out.direct());
    out.close_durably();
  }
  {
    checkpoint::DurableFile out(cached_path, /*direct=*/false);
    CHECK((open_flags_of(cached_path) & O_DIRECT) == 0);
    out.write(data.data(), data.size());
    out.close_durably();
  }
  // What O_DIRECT is for: the written bytes took no page cache (read before anything reads them).
  CHECK(cached_fraction(direct_path) < 0.1);
  CHECK(cached_fraction(cached_path) > 0.9);
}
