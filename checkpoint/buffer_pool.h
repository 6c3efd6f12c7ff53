#pragma once
/// BufferPool: the memory snapshots copy into, kept from one snapshot to the next and prepared
/// ahead of a save. No LibTorch: the buffer type is a parameter (at::Tensor in SnapshotBuffers, a
/// fake in the ThreadSanitizer tests).

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace trainbus::checkpoint {

/// The counters of a BufferPool, readable without knowing its buffer type (CheckpointWriterStats).
class BufferCounters {
 public:
  /// Bytes kept for reuse or prepared.
  std::size_t bytes() const;
  /// Buffers asked for that were neither kept nor prepared: the copy went to new memory.
  uint64_t fresh_copies() const;
  /// Calls of request_prepare.
  uint64_t prepare_requests() const;

 protected:
  mutable std::mutex mutex_;
  std::size_t bytes_ = 0;
  uint64_t fresh_copies_ = 0;
  uint64_t prepare_requests_ = 0;
};

/// Buffers of written snapshots, kept for the next snapshot to copy into. A copy into memory that
/// was touched before costs a memcpy; into new memory it also costs a page fault per page (and in
/// a VM, memory untouched for seconds can cost a host fault per page: bench/README.md). Holds at
/// most the buffers of the last snapshot written, or the ones prepared for the next.
///
/// Thread-safe: snapshots take() on the training thread, the writer gives back, and prepare() runs
/// on a thread of its own. `Traits` says what a buffer is:
///   using Buffer = ...; using Layout = ...;   // Layout: what a buffer is for, ordered (std::less)
///   static Layout layout_of(const Buffer&);
///   static Buffer allocate(const Layout&);     // may throw (out of memory)
///   static void touch(Buffer&);                // writes every page once
///   static std::size_t bytes_of(const Buffer&);
///   static bool reusable(const Buffer&);       // defined, and nothing else references its memory
template <class Traits>
class BufferPool : public BufferCounters {
 public:
  using Buffer = typename Traits::Buffer;
  using Layout = typename Traits::Layout;

  /// A kept or prepared buffer of `layout`, or an empty Buffer (counted in fresh_copies: the caller
  /// copies into new memory). While a preparation runs, waits for one of that layout to be ready.
  Buffer take(const Layout& layout) {
    std::unique_lock<std::mutex> lock(mutex_);
    // A prepare() in progress hands its buffers back one by one, in snapshot order.
    prepared_.wait(lock, [&] { return !preparing() || free_.count(layout) > 0; });
    auto found = free_.find(layout);
    if (found == free_.end()) {
      ++fresh_copies_;
      return Buffer();
    }
    Buffer buffer = std::move(found->second);
    free_.erase(found);
    bytes_ -= Traits::bytes_of(buffer);
    return buffer;
  }

  /// Takes back a written snapshot's buffers, replacing the ones kept; only those nothing else
  /// references are kept. While a preparation is asked for or runs, keeps none: the prepared ones
  /// are for the next snapshot already, and memory never holds two sets.
  void give_back(std::vector<Buffer> buffers) {
    std::multimap<Layout, Buffer> kept;
    std::size_t bytes = 0;
    for (Buffer& buffer : buffers) {
      if (!Traits::reusable(buffer)) continue;
      bytes += Traits::bytes_of(buffer);
      kept.emplace(Traits::layout_of(buffer), std::move(buffer));
    }
    buffers.clear();
    std::multimap<Layout, Buffer> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (preparing()) {
        dropped.swap(kept);
      } else {
        dropped.swap(free_);
        free_.swap(kept);
        bytes_ = bytes;
      }
    }
  }  // `dropped` is freed here, outside the lock

  /// Asks for buffers for the next snapshot, of `layouts` (the buffers it takes, in its order).
  /// Returns true if the caller must now run prepare() on a background thread; false if a run is
  /// queued already, which then prepares these newest layouts. From now until that run ends,
  /// take() waits for the buffers it prepares. If the caller cannot start prepare(), it must call
  /// cancel_prepare().
  bool request_prepare(std::vector<Layout> layouts) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++prepare_requests_;
    requested_ = std::move(layouts);
    if (prepare_queued_) return false;
    prepare_queued_ = true;
    return true;
  }

  /// Withdraws a request whose prepare() could not be started, so that take() does not wait for it.
  void cancel_prepare() noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      prepare_queued_ = false;
      requested_.clear();
    }
    prepared_.notify_all();
  }

  /// Makes a buffer ready for each requested layout: reuses kept buffers, allocates the missing
  /// ones, drops the rest, and touches every page, so that the snapshot's copy neither faults nor
  /// waits for memory left cold. Runs on a background thread, once per request_prepare() that
  /// returned true. A buffer that cannot be allocated is left out (the snapshot then allocates).
  void prepare() noexcept {
    std::vector<std::pair<Layout, Buffer>> to_prepare;
    std::multimap<Layout, Buffer> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::vector<Layout> layouts;
      layouts.swap(requested_);
      prepare_queued_ = false;
      prepare_running_ = true;
      try {
        // Take every kept buffer a layout asks for (take() waits for them now); drop the others.
        to_prepare.reserve(layouts.size());
        for (Layout& layout : layouts) {
          Buffer buffer;
          auto found = free_.find(layout);
          if (found != free_.end()) {
            buffer = std::move(found->second);
            free_.erase(found);
          }
          to_prepare.emplace_back(std::move(layout), std::move(buffer));
        }
      } catch (...) {
        to_prepare.clear();  // out of memory: prepare nothing; snapshots allocate their own
      }
      dropped.swap(free_);
      bytes_ = 0;
    }
    dropped.clear();
    for (auto& [layout, buffer] : to_prepare) {
      try {
        if (!Traits::reusable(buffer)) buffer = Traits::allocate(layout);
        Traits::touch(buffer);
        std::lock_guard<std::mutex> lock(mutex_);
        const std::size_t bytes = Traits::bytes_of(buffer);
        free_.emplace(layout, std::move(buffer));
        bytes_ += bytes;
      } catch (...) {
        // out of memory: this buffer is left out; the snapshot allocates its own, or fails there
      }
      prepared_.notify_all();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      prepare_running_ = false;
    }
    prepared_.notify_all();
  }

 private:
  bool preparing() const { return prepare_queued_ || prepare_running_; }

  std::condition_variable prepared_;  // a prepared buffer was handed back, or prepare() ended
  std::vector<Layout> requested_;     // layouts for the queued run of prepare()
  bool prepare_queued_ = false;
  bool prepare_running_ = false;
  std::multimap<Layout, Buffer> free_;
};

}  // namespace trainbus::checkpoint
