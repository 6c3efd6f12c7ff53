// DurableFile: what lands on disk, through the page cache or around it (O_DIRECT).
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "core/durable_file.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using trainbus::testing::TempDir;

namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("A direct DurableFile holds exactly what was written, whatever the sizes of the writes",
          "[core][checkpoint]") {
  TempDir dir;
  std::mt19937 random(11);
  // Around the 4 KiB block and the 4 MiB staging buffer, and empty.
  for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4096},
                                 std::size_t{4097}, (std::size_t{4} << 20) + 3, std::size_t{9} << 20}) {
    for (const bool direct : {true, false}) {
      std::string data(size, '\0');
      for (char& c : data) c = static_cast<char>(random());
      const std::string path = dir.file(std::to_string(size) + (direct ? "-direct" : "-cached"));
      DurableFile out(path, direct);
      // On a filesystem without O_DIRECT (tmpfs before Linux 6.6) the file falls back; both must hold.
      const bool went_direct = out.direct();
      for (std::size_t at = 0; at < size;) {
        const std::size_t chunk = std::min<std::size_t>(size - at, 1 + random() % 300000);
        out.write(data.data() + at, chunk);
        at += chunk;
      }
      out.close_durably();
      INFO("size " << size << (direct ? ", direct" : ", through the page cache") << (went_direct ? " (O_DIRECT)" : ""));
      CHECK(out.size() == size);
      CHECK(file_bytes(path) == data);
      const FileDigest digest = digest_file(path);
      CHECK(digest.size == size);
      CHECK(digest.crc32c == out.crc32c());
      if (!direct) CHECK_FALSE(went_direct);
    }
  }
}

TEST_CASE("Two direct DurableFiles open at once on one thread each hold their own bytes", "[core][checkpoint]") {
  TempDir dir;
  std::mt19937 random(5);
  std::string a_data((std::size_t{9} << 20) + 123, '\0'), b_data((std::size_t{6} << 20) + 7, '\0');
  for (char& c : a_data) c = static_cast<char>(random());
  for (char& c : b_data) c = static_cast<char>(random());
  DurableFile a(dir.file("a"), /*direct=*/true);
  DurableFile b(dir.file("b"), /*direct=*/true);
  // Interleaved writes of odd sizes, so that both have bytes staged at the same time.
  std::size_t at_a = 0, at_b = 0;
  while (at_a < a_data.size() || at_b < b_data.size()) {
    const std::size_t n = 1 + random() % 700000;
    const std::size_t take_a = std::min(n, a_data.size() - at_a), take_b = std::min(n / 2 + 1, b_data.size() - at_b);
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
