#include "callbacks/device_stats_monitor.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"

#ifdef TRAINBUS_HAVE_C10_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace trainbus::callbacks {
namespace {

// /proc/meminfo as name -> kB.
std::map<std::string, double> read_meminfo() {
  std::map<std::string, double> fields;
  std::ifstream in("/proc/meminfo");
  std::string name;
  double value = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream parts(line);
    if (parts >> name >> value) {
      if (!name.empty() && name.back() == ':') name.pop_back();
      fields[name] = value;
    }
  }
  return fields;
}

// The aggregate "cpu" line of /proc/stat: busy and total jiffies since boot.
bool read_cpu_jiffies(uint64_t& busy, uint64_t& total) {
  std::ifstream in("/proc/stat");
  std::string label;
  if (!(in >> label) || label != "cpu") return false;
  uint64_t value = 0, idle = 0;
  total = 0;
  for (int field = 0; field < 10 && in >> value; ++field) {
    if (field == 8 || field == 9) continue;  // guest time is already counted in user time
    total += value;
    if (field == 3 || field == 4) idle += value;  // idle, iowait
  }
  busy = total - idle;
  return total > 0;
}

double process_rss_mb() {
  std::ifstream in("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / 1e6;
}

#ifdef TRAINBUS_HAVE_C10_CUDA
// torch.cuda.memory_stats(device), flattened as Lightning logs it.
Metrics cuda_memory_stats(int device) {
  namespace allocator = c10::cuda::CUDACachingAllocator;
  const allocator::DeviceStats stats = allocator::getDeviceStats(device);
  Metrics out;
  const std::pair<const char*, const allocator::StatArray*> arrays[] = {
      {"allocation", &stats.allocation},
      {"segment", &stats.segment},
      {"active", &stats.active},
      {"inactive_split", &stats.inactive_split},
      {"allocated_bytes", &stats.allocated_bytes},
      {"reserved_bytes", &stats.reserved_bytes},
      {"active_bytes", &stats.active_bytes},
      {"inactive_split_bytes", &stats.inactive_split_bytes}};
  const char* pools[] = {"all", "small_pool", "large_pool"};
  for (const auto& [name, array] : arrays) {
    for (std::size_t pool = 0; pool < 3; ++pool) {
      const allocator::Stat& stat = (*array)[pool];
      const std::string prefix = std::string(name) + "." + pools[pool] + ".";
      out[prefix + "current"] = static_cast<double>(stat.current);
      out[prefix + "peak"] = static_cast<double>(stat.peak);
      out[prefix + "allocated"] = static_cast<double>(stat.allocated);
      out[prefix + "freed"] = static_cast<double>(stat.freed);
    }
  }
  out["num_alloc_retries"] = static_cast<double>(stats.num_alloc_retries);
  out["num_ooms"] = static_cast<double>(stats.num_ooms);
  out["max_split_size"] = static_cast<double>(stats.max_split_size);
  const std::pair<const char*, const allocator::Stat*> oversize[] = {
      {"oversize_allocations", &stats.oversize_allocations},
      {"oversize_segments", &stats.oversize_segments}};
  for (const auto& [name, stat] : oversize) {
    out[std::string(name) + ".current"] = static_cast<double>(stat->current);
    out[std::string(name) + ".peak"] = static_cast<double>(stat->peak);
    out[std::string(name) + ".allocated"] = static_cast<double>(stat->allocated);
    out[std::string(name) + ".freed"] = static_cast<double>(stat->freed);
  }
  return out;
}
#endif

}  // namespace

DeviceStatsMonitor::DeviceStatsMonitor(DeviceStatsMonitorOptions options)
    : options_(std::move(options)) {}

void DeviceStatsMonitor::setup(Trainer& trainer, Module&, Stage stage) {
  if (trainer.replaying()) return;
  read_cpu_jiffies(last_busy_, last_total_);  // cpu_percent counts from here, in every stage
  if (stage != Stage::kFit) return;
  TRAINBUS_CHECK(!trainer.loggers().empty(),
                 "Cannot use the DeviceStatsMonitor callback without a logger: add one "
                 "(trainer.add_observer of a CsvLogger or TensorBoardLogger; on the command line, "
                 "drop --no-csv or --no-tensorboard) or remove the callback");
#ifndef __linux__
  TRAINBUS_CHECK(trainer.device().is_cuda() && !options_.cpu_stats().value_or(false),
                 "DeviceStatsMonitor reads CPU stats from /proc, which only Linux has; on this "
                 "system use it on CUDA with cpu_stats unset or false");
#endif
#ifndef TRAINBUS_HAVE_C10_CUDA
  if (trainer.device().is_cuda()) {
    warn(
        "DeviceStatsMonitor: this LibTorch was built without c10_cuda, so CUDA memory stats "
        "cannot be read; only CPU stats (cpu_stats=true) will be logged");
  }
#endif
}

Metrics DeviceStatsMonitor::cpu_stats() {
  Metrics stats;
  uint64_t busy = 0, total = 0;
  if (read_cpu_jiffies(busy, total)) {
    // Counters can go backwards (CPU hotplug, containers): a change below 0 counts as 0, as
    // psutil's.
    const auto change = [](uint64_t now, uint64_t before) {
      return now > before ? static_cast<double>(now - before) : 0.0;
    };
    const double elapsed = change(total, last_total_);
    const double percent = elapsed > 0 ? 100.0 * change(busy, last_busy_) / elapsed : 0.0;
    stats["cpu_percent"] = std::min(100.0, std::max(0.0, percent));
    last_busy_ = busy;
    last_total_ = total;
  }
  const auto memory = read_meminfo();
  const auto field = [&](const char* name) {
    const auto found = memory.find(name);
    return found == memory.end() ? 0.0 : found->second;
  };
  if (field("MemTotal") > 0) {
    stats["cpu_vm_percent"] =
        100.0 * (field("MemTotal") - field("MemAvailable")) / field("MemTotal");
  }
  stats["cpu_swap_percent"] =
      field("SwapTotal") > 0 ? 100.0 * (field("SwapTotal") - field("SwapFree")) / field("SwapTotal")
                             : 0.0;
  stats["process_rss_mb"] = process_rss_mb();
  return stats;
}

Metrics DeviceStatsMonitor::device_stats(const c10::Device& device) {
  if (device.is_cpu()) return cpu_stats();
  Metrics stats;
#ifdef TRAINBUS_HAVE_C10_CUDA
  if (device.is_cuda()) {
    stats = cuda_memory_stats(device.has_index() ? device.index() : c10::cuda::current_device());
  }
#endif
  if (options_.cpu_stats().value_or(false)) {
    for (const auto& [key, value] : cpu_stats()) stats[key] = value;
  }
  return stats;
}

void DeviceStatsMonitor::log_stats(Trainer& trainer, const char* hook) {
  if (trainer.replaying()) return;
  if (!trainer.should_update_logs()) return;
  const c10::Device device = trainer.device();
  if (device.is_cpu() && options_.cpu_stats() == std::optional<bool>(false)) return;
  Metrics stats = device_stats(device);
  if (!options_.filter_keys().empty()) {
    Metrics kept;
    for (const std::string& key : options_.filter_keys()) {
      const auto found = stats.find(key);
      if (found != stats.end()) {
        kept[key] = found->second;
      } else if (warned_keys_.insert(key).second) {
        warn("DeviceStatsMonitor: filter_keys names '" + key + "', which " + device.str() +
             " does not report; it reports cpu_percent, cpu_vm_percent, cpu_swap_percent, "
             "process_rss_mb on the CPU and torch.cuda.memory_stats() keys on CUDA");
      }
    }
    stats = std::move(kept);
  }
  if (stats.empty()) return;
  Metrics prefixed;
  for (const auto& [key, value] : stats) {
    prefixed["DeviceStatsMonitor." + std::string(hook) + "/" + key] = value;
  }
  last_logged_ = prefixed;
  trainer.log_metrics(prefixed, trainer.batches_that_stepped());
}

void DeviceStatsMonitor::on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) {
  log_stats(trainer, "on_train_batch_start");
}
void DeviceStatsMonitor::on_train_batch_end(Trainer& trainer, Module&, const StepOutput&,
                                            const Batch&, int64_t) {
  log_stats(trainer, "on_train_batch_end");
}
void DeviceStatsMonitor::on_validation_batch_start(Trainer& trainer, Module&, const Batch&,
                                                   int64_t) {
  log_stats(trainer, "on_validation_batch_start");
}
void DeviceStatsMonitor::on_validation_batch_end(Trainer& trainer, Module&, const StepOutput&,
                                                 const Batch&, int64_t) {
  log_stats(trainer, "on_validation_batch_end");
}
void DeviceStatsMonitor::on_test_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) {
  log_stats(trainer, "on_test_batch_start");
}
void DeviceStatsMonitor::on_test_batch_end(Trainer& trainer, Module&, const StepOutput&,
                                           const Batch&, int64_t) {
  log_stats(trainer, "on_test_batch_end");
}

}  // namespace trainbus::callbacks
