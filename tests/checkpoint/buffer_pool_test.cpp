// checkpoint::BufferPool with fake buffers (no LibTorch): what a snapshot takes, what a preparation
// makes ready, what is given back. Runs under ThreadSanitizer and ASan too.
#include "checkpoint/buffer_pool.h"

#include <memory>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

using namespace trainbus;

namespace {

/// A buffer is a shared block of bytes; its layout is its size.
struct FakeTraits {
  using Buffer = std::shared_ptr<std::vector<char>>;
  using Layout = std::size_t;
  static Layout layout_of(const Buffer& buffer) { return buffer->size(); }
  static Buffer allocate(const Layout& layout) {
    return std::make_shared<std::vector<char>>(layout);
  }
  static void touch(Buffer& buffer) {
    for (std::size_t i = 0; i < buffer->size(); i += 4096) (*buffer)[i] = 1;
  }
  static std::size_t bytes_of(const Buffer& buffer) { return buffer ? buffer->size() : 0; }
  static bool reusable(const Buffer& buffer) { return buffer && buffer.use_count() == 1; }
};
using Pool = checkpoint::BufferPool<FakeTraits>;

const std::vector<std::size_t> kLayouts = {1000, 100, 7, 1000};

std::size_t total(const std::vector<std::size_t>& layouts) {
  std::size_t bytes = 0;
  for (std::size_t layout : layouts) bytes += layout;
  return bytes;
}

// What a snapshot does with each buffer: take one, or make a new one when none is there.
std::vector<FakeTraits::Buffer> snapshot(Pool& pool, const std::vector<std::size_t>& layouts) {
  std::vector<FakeTraits::Buffer> buffers;
  for (std::size_t layout : layouts) {
    FakeTraits::Buffer buffer = pool.take(layout);
    buffers.push_back(buffer ? buffer : FakeTraits::allocate(layout));
  }
  return buffers;
}

}  // namespace

TEST_CASE("A snapshot taken while its buffers are prepared waits for them: none in new memory",
          "[checkpoint][async]") {
  Pool pool;
  REQUIRE(pool.request_prepare({kLayouts[0]}));
  // A newer request before the queued run starts is folded into it: one run, the newest layouts.
  CHECK_FALSE(pool.request_prepare(kLayouts));
  std::thread preparer([&] { pool.prepare(); });
  const auto buffers = snapshot(pool, kLayouts);  // races the preparer: take() waits for each
  preparer.join();
  CHECK(pool.fresh_copies() == 0);
  CHECK(buffers.size() == kLayouts.size());
  CHECK(pool.bytes() == 0);  // all four taken
  CHECK(pool.prepare_requests() == 2);
  CHECK(pool.request_prepare(kLayouts));  // the run has ended: a new request needs a new run
  pool.cancel_prepare();
}

TEST_CASE("Buffers given back are reused, a preparation keeps only what the next snapshot needs",
          "[checkpoint][async]") {
  Pool pool;
  auto first = snapshot(pool, kLayouts);
  CHECK(pool.fresh_copies() == kLayouts.size());  // nothing kept or prepared yet
  const void* memory_of_100 = first[1].get();
  pool.give_back(std::move(first));
  CHECK(pool.bytes() == total(kLayouts));

  SECTION("a preparation reuses kept buffers of the layouts asked for and drops the others") {
    REQUIRE(pool.request_prepare({100}));
    pool.prepare();
    CHECK(pool.bytes() == 100);
    CHECK(pool.take(100).get() == memory_of_100);  // the kept buffer, not new memory
  }
  SECTION("a snapshot given back while buffers are prepared is dropped: never two sets") {
    auto second = snapshot(pool, kLayouts);
    REQUIRE(pool.request_prepare(kLayouts));
    pool.give_back(std::move(second));
    CHECK(pool.bytes() == 0);
    pool.prepare();
    CHECK(pool.bytes() == total(kLayouts));
  }
  SECTION("a buffer still referenced elsewhere is not kept") {
    auto second = snapshot(pool, kLayouts);
    const FakeTraits::Buffer still_used = second[0];
    pool.give_back(std::move(second));
    CHECK(pool.bytes() == total(kLayouts) - 1000);
  }
  SECTION("a cancelled request does not make snapshots wait") {
    REQUIRE(pool.request_prepare(kLayouts));
    pool.cancel_prepare();
    CHECK(snapshot(pool, kLayouts).size() == kLayouts.size());  // returns: take() does not wait
  }
}

TEST_CASE("Snapshots, give-backs and preparations on three threads never lose or share a buffer",
          "[checkpoint][async][threads]") {
  Pool pool;
  std::vector<std::vector<FakeTraits::Buffer>> written;  // the writer thread's queue
  std::mutex mutex;
  std::thread preparer([&] {
    for (int i = 0; i < 200; ++i) {
      if (pool.request_prepare(kLayouts)) pool.prepare();
    }
  });
  std::thread writer([&] {
    for (int i = 0; i < 200; ++i) {
      std::vector<FakeTraits::Buffer> buffers;
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (written.empty()) continue;
        buffers = std::move(written.back());
        written.pop_back();
      }
      pool.give_back(std::move(buffers));
    }
  });
  for (int i = 0; i < 200; ++i) {
    auto buffers = snapshot(pool, kLayouts);
    for (std::size_t j = 0; j < buffers.size(); ++j) {
      REQUIRE(buffers[j]->size() == kLayouts[j]);
      REQUIRE(buffers[j].use_count() == 1);  // nobody else holds what this snapshot copies into
    }
    std::lock_guard<std::mutex> lock(mutex);
    written.push_back(std::move(buffers));
  }
  preparer.join();
  writer.join();
  CHECK(pool.bytes() <= total(kLayouts));  // never more than one set kept
}
