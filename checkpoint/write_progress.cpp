#include "checkpoint/write_progress.h"

#include <memory>
#include <mutex>
#include <utility>

namespace trainbus::checkpoint {
namespace {

thread_local WriteProgress* reported_to = nullptr;

// The test hook: a flag read on every step, the hook itself under a mutex (tests only).
std::atomic<bool> slow_disk{false};
std::mutex slow_disk_mutex;
std::shared_ptr<const std::function<void(const std::string&)>> slow_disk_hook;

}  // namespace

ReportWriteProgress::ReportWriteProgress(WriteProgress& progress) noexcept
    : previous_(std::exchange(reported_to, &progress)) {}

ReportWriteProgress::~ReportWriteProgress() { reported_to = previous_; }

void note_write_step() noexcept {
  if (reported_to != nullptr) reported_to->advance();
}

void detail::simulate_slow_disk(std::function<void(const std::string& path)> hook) {
  std::lock_guard<std::mutex> lock(slow_disk_mutex);
  slow_disk_hook =
      hook ? std::make_shared<const std::function<void(const std::string&)>>(std::move(hook))
           : nullptr;
  slow_disk.store(slow_disk_hook != nullptr);
}

void detail::before_write_step(const std::string& path) {
  if (!slow_disk.load(std::memory_order_relaxed)) return;
  std::shared_ptr<const std::function<void(const std::string&)>> hook;
  {
    std::lock_guard<std::mutex> lock(slow_disk_mutex);
    hook = slow_disk_hook;
  }
  if (hook) (*hook)(path);
}

}  // namespace trainbus::checkpoint
