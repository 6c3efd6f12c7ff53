#include "tuner/out_of_memory.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <c10/core/Allocator.h>
#include <c10/util/Exception.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#ifdef TRAINBUS_HAVE_C10_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "base/errors.h"

namespace trainbus::tuner {

MemoryBudgetExceeded::MemoryBudgetExceeded(int64_t peak_bytes, int64_t budget_bytes)
    : std::runtime_error("out of memory: the batch took " + format_bytes(peak_bytes) +
                         " on the training thread, over the memory budget of " +
                         format_bytes(budget_bytes)),
      peak_bytes_(peak_bytes),
      budget_bytes_(budget_bytes) {}

bool is_out_of_memory(const std::exception& error) {
  if (dynamic_cast<const MemoryBudgetExceeded*>(&error) != nullptr) return true;
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr) return true;
  // c10::Error's what() carries a backtrace; its message is what Lightning reads.
  const auto* c10_error = dynamic_cast<const c10::Error*>(&error);
  const std::string message = c10_error ? c10_error->msg() : error.what();
  const auto has = [&](const char* text) { return message.find(text) != std::string::npos; };
  return (has("CUDA") && has("out of memory")) || has("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED") ||
         has("DefaultCPUAllocator: not enough memory") ||
         has("DefaultCPUAllocator: can't allocate memory");
}

std::string message_of(const std::exception& error) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&error);
  const std::string message = c10_error ? c10_error->msg() : error.what();
  return message.substr(0, message.find('\n'));
}

void release_cached_memory() noexcept {
#ifdef TRAINBUS_HAVE_C10_CUDA
  try {
    c10::cuda::CUDACachingAllocator::emptyCache();
  } catch (...) {  // no CUDA device at run time: nothing cached
  }
#endif
}

int64_t parse_byte_size(const std::string& text, const std::string& what) {
  const auto refuse = [&]() -> int64_t {
    throw MisconfigurationError(what + " is \"" + text +
                                "\": expected a positive number of bytes, e.g. 268435456, "
                                "256MiB, 1.5GiB or 500MB");
  };
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(text, &used);
  } catch (const std::exception&) {
    return refuse();
  }
  const std::string unit = text.substr(used);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  if (unit == "KiB") scale = 1024.0;
  if (unit == "MiB") scale = 1024.0 * 1024;
  if (unit == "GiB") scale = 1024.0 * 1024 * 1024;
  if (unit == "KB") scale = 1e3;
  if (unit == "MB") scale = 1e6;
  if (unit == "GB") scale = 1e9;
  const double bytes = number * scale;
  if (scale == 0 || !(bytes >= 1) || bytes > 9e18) return refuse();
  return static_cast<int64_t>(std::llround(bytes));
}

std::string format_bytes(int64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (std::abs(value) >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  std::ostringstream out;
  if (unit == 0) {
    out << bytes << " B";
  } else {
    out << std::fixed << std::setprecision(1) << value << " " << kUnits[unit];
  }
  return out.str();
}

// Receives every allocation and free of the CPU allocator on the threads it is installed on.
// (Not in an anonymous namespace: CpuMemoryMeter::Impl, which has external linkage, holds one.)
class CountingReporter : public c10::MemoryReportingInfoBase {
 public:
  void reportMemoryUsage(void* pointer, int64_t alloc_size, int64_t, int64_t,
                         c10::Device device) override {
    if (!device.is_cpu()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (alloc_size > 0) {
      blocks_[pointer] = alloc_size;
    } else {
      // c10 reports every free of a block its process-wide table knows, also one allocated
      // before this meter (gradients of an earlier trial): only the blocks seen here count.
      const auto block = blocks_.find(pointer);
      if (block == blocks_.end()) return;
      alloc_size = -block->second;
      blocks_.erase(block);
    }
    const int64_t live = live_.fetch_add(alloc_size) + alloc_size;
    int64_t peak = peak_.load();
    while (live > peak && !peak_.compare_exchange_weak(peak, live)) {
    }
  }
  bool memoryProfilingEnabled() const override { return true; }

  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> peak_{0};

 private:
  std::mutex mutex_;
  std::unordered_map<void*, int64_t> blocks_;  // allocated while this meter counted
};

struct CpuMemoryMeter::Impl {
  std::shared_ptr<CountingReporter> reporter = std::make_shared<CountingReporter>();
  c10::DebugInfoGuard guard{c10::DebugInfoKind::PROFILER_STATE, reporter};
};

CpuMemoryMeter::CpuMemoryMeter() : impl_(std::make_unique<Impl>()) {}
CpuMemoryMeter::~CpuMemoryMeter() = default;

int64_t CpuMemoryMeter::live_bytes() const noexcept { return impl_->reporter->live_.load(); }
int64_t CpuMemoryMeter::peak_bytes() const noexcept { return impl_->reporter->peak_.load(); }

}  // namespace trainbus::tuner
