#pragma once
/// What the batch size finder counts as "out of memory": a real allocation failure (CUDA's, or
/// the CPU allocator's), or on the CPU, where running out of memory means swapping or the OOM
/// killer rather than an exception, a memory budget that a trial's allocations exceed.

#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>

namespace trainbus::tuner {

/// Thrown by a batch size trial whose allocations on the training thread went past the
/// memory budget: the CPU's stand-in for CUDA's out-of-memory error.
class MemoryBudgetExceeded : public std::runtime_error {
 public:
  MemoryBudgetExceeded(int64_t peak_bytes, int64_t budget_bytes);
  int64_t peak_bytes() const noexcept { return peak_bytes_; }
  int64_t budget_bytes() const noexcept { return budget_bytes_; }

 private:
  int64_t peak_bytes_, budget_bytes_;
};

/// Lightning's is_oom_error, for LibTorch: c10::OutOfMemoryError (the CUDA caching allocator's,
/// LibTorch >= 1.13), a message with both "CUDA" and "out of memory" (cudaMalloc, older
/// LibTorch), cuDNN's "CUDNN_STATUS_NOT_SUPPORTED" (what cuDNN says when it cannot get its
/// workspace), the CPU allocator's "DefaultCPUAllocator: not enough memory" / "can't allocate
/// memory", and MemoryBudgetExceeded.
bool is_out_of_memory(const std::exception& error);

/// The error's message on one line: a c10::Error's without LibTorch's backtrace.
std::string message_of(const std::exception& error);

/// Frees what the CUDA caching allocator keeps, after an out-of-memory error (Lightning's
/// garbage_collection_cuda); nothing where LibTorch has no CUDA.
void release_cached_memory() noexcept;

/// "268435456", "256MiB", "1.5GiB", "64KiB", "500MB", "2GB" (KB/MB/GB are powers of 1000) as
/// bytes; throws MisconfigurationError naming `what` and the accepted forms otherwise.
int64_t parse_byte_size(const std::string& text, const std::string& what);
/// Bytes as "1.5 MiB" (B, KiB, MiB, GiB), for tables and messages.
std::string format_bytes(int64_t bytes);

/// Counts the bytes LibTorch's CPU allocator hands out and takes back on the thread that made
/// the meter (and on threads LibTorch hands its thread-local state to: the autograd engine's),
/// through the allocator's memory-profiling hook (c10::MemoryReportingInfoBase), from its
/// construction to its destruction. Blocks allocated before it are not counted, nor their frees:
/// it measures what the code run under it needs on top of what existed. Not movable.
///
/// NOTE: the CPU allocator logs "Memory block of unknown size was allocated before the profiling
/// started" (once per 1000 such frees) when a tensor older than the meter is freed under it.
class CpuMemoryMeter {
 public:
  CpuMemoryMeter();
  ~CpuMemoryMeter();
  CpuMemoryMeter(const CpuMemoryMeter&) = delete;
  CpuMemoryMeter& operator=(const CpuMemoryMeter&) = delete;

  /// Bytes allocated under the meter and not yet freed.
  int64_t live_bytes() const noexcept;
  /// The most live_bytes() reached.
  int64_t peak_bytes() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainbus::tuner
