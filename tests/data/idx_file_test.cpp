// The IDX reader: good files in, and a clear error naming the file for every bad one.
#include "data/idx_file.h"

#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <vector>

#include <torch/types.h>
#include "tests/support/catch.h"

#include "base/errors.h"
#include "data/fashion_mnist.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using Catch::Matchers::Contains;
using trainbus::testing::TempDir;

namespace {

using Bytes = std::vector<unsigned char>;

Bytes idx_bytes(const std::vector<uint32_t>& dims, int fill_count) {
  Bytes bytes{0, 0, 0x08, static_cast<unsigned char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift : {24, 16, 8, 0}) bytes.push_back(static_cast<unsigned char>(d >> shift));
  }
  for (int i = 0; i < fill_count; ++i) bytes.push_back(static_cast<unsigned char>(i % 251));
  return bytes;
}

void write_plain(const std::string& path, const Bytes& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void write_gz(const std::string& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(file);
}

}  // namespace

TEST_CASE("read_idx_file reads plain and gzip IDX files into uint8 tensors", "[data][idx]") {
  TempDir dir;
  const Bytes bytes = idx_bytes({3, 2, 2}, 12);
  write_plain(dir.file("plain-idx3-ubyte"), bytes);
  write_gz(dir.file("packed-idx3-ubyte.gz"), bytes);
  for (const std::string name : {"plain-idx3-ubyte", "packed-idx3-ubyte.gz"}) {
    const at::Tensor t = data::read_idx_file(dir.file(name));
    CHECK(t.sizes() == at::IntArrayRef({3, 2, 2}));
    CHECK(t.scalar_type() == at::kByte);
    CHECK(t.flatten()[11].item<int>() == 11);
  }
}

TEST_CASE("read_idx_file names the file and the problem", "[data][idx]") {
  TempDir dir;
  SECTION("missing") {
    CHECK_THROWS_MATCHES(data::read_idx_file(dir.file("nope.gz")), DataError,
                         Catch::Matchers::Message(dir.file("nope.gz") + ": no such file"));
  }
  SECTION("wrong magic number") {
    Bytes bytes = idx_bytes({4}, 4);
    bytes[2] = 0x0D;  // float data, not unsigned bytes
    write_plain(dir.file("float-idx1"), bytes);
    CHECK_THROWS_WITH(data::read_idx_file(dir.file("float-idx1")),
                      Contains(dir.file("float-idx1")) && Contains("bad magic number 0x00000d01"));
  }
  SECTION("not IDX at all") {
    write_plain(dir.file("text"), Bytes{'h', 'e', 'l', 'l', 'o'});
    CHECK_THROWS_WITH(data::read_idx_file(dir.file("text")),
                      Contains("bad magic number 0x68656c6c"));
  }
  SECTION("truncated data, plain") {
    write_plain(dir.file("short-idx3"), idx_bytes({10, 28, 28}, 100));
    CHECK_THROWS_WITH(data::read_idx_file(dir.file("short-idx3")),
                      Contains(dir.file("short-idx3")) &&
                          Contains("truncated: the header promises 7840 bytes") &&
                          Contains("(10x28x28) but the file ends after 100"));
  }
  SECTION("truncated header") {
    write_plain(dir.file("short-header"), Bytes{0, 0, 8, 3, 0, 0});
    CHECK_THROWS_WITH(data::read_idx_file(dir.file("short-header")),
                      Contains("truncated: the header ends inside dimension 1"));
  }
  SECTION("truncated gzip stream") {
    write_gz(dir.file("full.gz"), idx_bytes({1000}, 1000));
    std::ifstream in(dir.file("full.gz"), std::ios::binary);
    Bytes gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    gz.resize(gz.size() / 2);
    write_plain(dir.file("cut.gz"), gz);
    CHECK_THROWS_WITH(data::read_idx_file(dir.file("cut.gz")),
                      Contains(dir.file("cut.gz")) && Contains("truncated"));
  }
  SECTION("extra bytes after the data") {
    write_plain(dir.file("long-idx1"), idx_bytes({4}, 6));
    CHECK_THROWS_WITH(data::read_idx_file(dir.file("long-idx1")),
                      Contains("has bytes after the 4 data"));
  }
}

TEST_CASE("A missing Fashion-MNIST directory names the file and the Debian package",
          "[data][idx]") {
  TempDir dir;
  data::FashionMnistOptions options;
  options.root(dir.file("absent"));
  data::FashionMnistDataModule data(options);
  CHECK_THROWS_MATCHES(
      data.prepare_data(), DataError,
      Catch::Matchers::Message(
          "Fashion-MNIST file " + dir.file("absent/train-images-idx3-ubyte.gz") +
          " not found; install Debian's package with `apt-get install dataset-fashion-mnist`, or "
          "point --data / FashionMnistOptions::root at a directory holding the four IDX files"));
}

TEST_CASE("Fashion-MNIST files that do not match each other are refused", "[data][idx]") {
  TempDir dir;
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_bytes({3, 28, 28}, 3 * 28 * 28));
  write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_bytes({2}, 2));
  CHECK_THROWS_WITH(
      data::read_fashion_mnist(dir.path().string(), /*train=*/false),
      Contains("t10k-labels-idx1-ubyte.gz: holds 2 labels but") && Contains("holds 3 images"));
}
