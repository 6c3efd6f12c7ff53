#include "checkpoint/buffer_pool.h"

namespace trainbus::checkpoint {

std::size_t BufferCounters::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}

uint64_t BufferCounters::fresh_copies() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fresh_copies_;
}

uint64_t BufferCounters::prepare_requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return prepare_requests_;
}

}  // namespace trainbus::checkpoint
