#pragma once
/// Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

#include <string>

#include <ATen/core/Tensor.h>

namespace trainbus::data {

/// Reads an IDX file of unsigned bytes (magic 0x0000080N, N = number of dimensions) into a uint8
/// tensor of that shape. gzip is detected and inflated with zlib. Throws DataError naming `path`
/// when the file is missing, is not gzip/IDX, has a wrong magic number or is truncated.
at::Tensor read_idx_file(const std::string& path);

}  // namespace trainbus::data
