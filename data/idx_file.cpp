#include "data/idx_file.h"

#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include <ATen/Functions.h>

#include "base/errors.h"

namespace trainbus::data {
namespace {

struct GzCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads up to `size` bytes; returns how many were read. Throws on a damaged gzip stream.
size_t read_some(gzFile file, const std::string& path, void* out, size_t size) {
  size_t total = 0;
  auto* bytes = static_cast<unsigned char*>(out);
  while (total < size) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(size - total, 1u << 30));
    const int got = gzread(file, bytes + total, chunk);
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file, &code);
      if (code == Z_BUF_ERROR) {
        throw DataError(::trainbus::detail::concat(
            path, ": truncated: the compressed stream ends early (zlib: ", message,
            "); download or reinstall the file"));
      }
      throw DataError(
          ::trainbus::detail::concat(path, ": cannot decompress (zlib: ", message,
                                     "); the file is damaged, download or reinstall it"));
    }
    if (got == 0) break;
    total += static_cast<size_t>(got);
  }
  return total;
}

std::string describe_shape(const std::vector<int64_t>& dims) {
  std::string shape;
  for (size_t i = 0; i < dims.size(); ++i) shape += (i ? "x" : "") + std::to_string(dims[i]);
  return shape;
}

}  // namespace

at::Tensor read_idx_file(const std::string& path) {
  TRAINBUS_CHECK_AS(DataError, std::filesystem::is_regular_file(path), path, ": no such file");
  GzFile file(gzopen(path.c_str(), "rb"));
  TRAINBUS_CHECK_AS(DataError, file != nullptr, path, ": cannot open for reading");
  gzbuffer(file.get(), 1 << 20);

  std::array<unsigned char, 4> magic{};
  TRAINBUS_CHECK_AS(DataError, read_some(file.get(), path, magic.data(), 4) == 4, path,
                    ": truncated: shorter than the 4-byte IDX magic number");
  const uint32_t magic_value = (uint32_t{magic[0]} << 24) | (uint32_t{magic[1]} << 16) |
                               (uint32_t{magic[2]} << 8) | uint32_t{magic[3]};
  const int ndims = magic[3];
  char shown[11];
  std::snprintf(shown, sizeof shown, "0x%08x", magic_value);
  TRAINBUS_CHECK_AS(
      DataError, magic[0] == 0 && magic[1] == 0 && magic[2] == 0x08 && ndims >= 1 && ndims <= 4,
      path, ": bad magic number ", shown,
      ": expected an IDX file of unsigned bytes (0x00000801 labels, 0x00000803 images)");

  std::vector<int64_t> dims(ndims);
  for (int d = 0; d < ndims; ++d) {
    std::array<unsigned char, 4> be{};
    TRAINBUS_CHECK_AS(DataError, read_some(file.get(), path, be.data(), 4) == 4, path,
                      ": truncated: the header ends inside dimension ", d + 1, " of ", ndims);
    dims[d] =
        (int64_t{be[0]} << 24) | (int64_t{be[1]} << 16) | (int64_t{be[2]} << 8) | int64_t{be[3]};
  }

  at::Tensor tensor = at::empty(dims, at::TensorOptions().dtype(at::kByte));
  const size_t expected = static_cast<size_t>(tensor.numel());
  const size_t got = read_some(file.get(), path, tensor.data_ptr<uint8_t>(), expected);
  TRAINBUS_CHECK_AS(DataError, got == expected, path, ": truncated: the header promises ", expected,
                    " bytes of data (", describe_shape(dims), ") but the file ends after ", got);
  unsigned char extra = 0;
  TRAINBUS_CHECK_AS(DataError, read_some(file.get(), path, &extra, 1) == 0, path,
                    ": has bytes after the ", describe_shape(dims),
                    " data its header announces; it is not a valid IDX file");
  return tensor;
}

}  // namespace trainbus::data
