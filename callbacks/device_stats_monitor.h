#pragma once
/// DeviceStatsMonitor: logs the device's memory and utilisation around every logged batch
/// (Lightning's, same options and key names).

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/arg.h"
#include "base/metrics.h"
#include "core/callback.h"

namespace trainbus::callbacks {

/// Lightning's DeviceStatsMonitor arguments and defaults.
struct DeviceStatsMonitorOptions {
  /// CPU stats: unset logs them when the device is the CPU; true logs them on any device (beside
  /// CUDA's); false never does (on the CPU nothing is logged then).
  TRAINBUS_ARG(std::optional<bool>, cpu_stats);
  /// Only these stats ("cpu_percent", "allocated_bytes.all.current", ...); empty: all. A name no
  /// device reports is warned about once.
  TRAINBUS_ARG(std::vector<std::string>, filter_keys);
};

/// On the CPU (from /proc, as Lightning's psutil): cpu_percent (all cores' utilisation since the
/// last reading), cpu_vm_percent (system memory in use), cpu_swap_percent, and process_rss_mb
/// (this process's resident memory; a trainbus addition). On CUDA, where LibTorch has it, the
/// caching allocator's torch.cuda.memory_stats() keys: "allocated_bytes.all.current",
/// "reserved_bytes.large_pool.peak", "num_ooms", "num_alloc_retries", "oversize_segments.peak",
/// "max_split_size", ...
///
/// Logged at on_{train,validation,test}_batch_{start,end} when the loggers get step values
/// (Trainer::should_update_logs()), as one row for every logger at step =
/// Trainer::batches_that_stepped(), keys "DeviceStatsMonitor.<hook>/<stat>". CPU stats are read
/// from /proc (Linux). Throws MisconfigurationError at setup of a fit when the trainer has no
/// logger. Does nothing in a replay: the recording has the rows.
class DeviceStatsMonitor : public Callback {
 public:
  explicit DeviceStatsMonitor(DeviceStatsMonitorOptions options = {});

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void on_train_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                            int64_t batch_idx) override;
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override;
  void on_validation_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                 int64_t batch_idx) override;
  void on_validation_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                               const Batch& batch, int64_t batch_idx) override;
  void on_test_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                           int64_t batch_idx) override;
  void on_test_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                         const Batch& batch, int64_t batch_idx) override;

  /// The stats of `device` now, unprefixed and unfiltered.
  Metrics device_stats(const c10::Device& device);
  /// What the last log sent to the loggers.
  const Metrics& last_logged() const noexcept { return last_logged_; }
  const DeviceStatsMonitorOptions& options() const noexcept { return options_; }

 private:
  void log_stats(Trainer& trainer, const char* hook);
  Metrics cpu_stats();

  DeviceStatsMonitorOptions options_;
  // /proc/stat's busy and total jiffies at the last reading, for cpu_percent.
  uint64_t last_busy_ = 0, last_total_ = 0;
  std::set<std::string> warned_keys_;
  Metrics last_logged_;
};

}  // namespace trainbus::callbacks
