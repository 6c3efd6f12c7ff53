#include "core/optimizer_config.h"

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/reduce_lr_on_plateau.h"

namespace trainbus {

void validate_scheduler_configs(const std::vector<SchedulerConfig>& configs,
                                std::size_t num_optimizers, const std::string& where,
                                bool automatic_optimization) {
  for (std::size_t i = 0; i < configs.size(); ++i) {
    const SchedulerConfig& config = configs[i];
    TRAINBUS_CHECK(config.scheduler != nullptr, where, ": lr_schedulers[", i,
                   "].scheduler is null");
    TRAINBUS_CHECK(config.frequency >= 1, where, ": lr_schedulers[", i,
                   "].frequency must be >= 1, got ", config.frequency);
    TRAINBUS_CHECK(config.optimizer_idx < num_optimizers, where, ": lr_schedulers[", i,
                   "].optimizer_idx is ", config.optimizer_idx, " but there are ", num_optimizers,
                   " optimizer(s)");
    // Lightning's message (_configure_schedulers_automatic_opt).
    TRAINBUS_CHECK(
        !automatic_optimization || !reduces_on_plateau(config) || !config.monitor.empty(), where,
        ": lr_schedulers[", i,
        "] must include a monitor when a `ReduceLROnPlateau` scheduler is used, e.g. "
        "SchedulerConfig{scheduler, SchedulerInterval::kEpoch, 1, \"val_loss\"}");
  }
}

void ignore_automatic_scheduler_keys(std::vector<SchedulerConfig>& configs) {
  for (std::size_t i = 0; i < configs.size(); ++i) {
    SchedulerConfig& config = configs[i];
    std::string keys;
    if (!config.monitor.empty()) keys += "'monitor'";
    if (!config.strict) keys += keys.empty() ? "'strict'" : ", 'strict'";
    if (keys.empty()) continue;
    // Lightning's warning (_configure_schedulers_manual_opt).
    warn(detail::concat("The lr scheduler dict contains the key(s) [", keys,
                        "], but the keys will be ignored. You need to call `lr_scheduler.step()` "
                        "manually in manual optimization. (lr_schedulers[",
                        i, "])"));
    config.monitor.clear();
    config.strict = true;
  }
}

bool reduces_on_plateau(const SchedulerConfig& config) {
  return dynamic_cast<const ReduceLROnPlateau*>(config.scheduler.get()) != nullptr;
}

}  // namespace trainbus
