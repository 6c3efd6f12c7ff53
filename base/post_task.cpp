#include "base/post_task.h"

#include <atomic>

namespace trainbus::detail {
namespace {

std::atomic<int> failures_left{0};
std::atomic<int> successes_first{0};

}  // namespace

void inject_post_failures(int count, int after) noexcept {
  successes_first.store(after, std::memory_order_relaxed);
  failures_left.store(count, std::memory_order_relaxed);
}

bool take_injected_post_failure() noexcept {
  if (failures_left.load(std::memory_order_relaxed) <= 0) return false;
  int skip = successes_first.load(std::memory_order_relaxed);
  while (skip > 0) {
    if (successes_first.compare_exchange_weak(skip, skip - 1, std::memory_order_relaxed))
      return false;
  }
  int left = failures_left.load(std::memory_order_relaxed);
  while (left > 0) {
    if (failures_left.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

}  // namespace trainbus::detail
