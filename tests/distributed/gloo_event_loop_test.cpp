// create_gloo_device_with_niced_loop: the one thread a device's creation starts (Gloo's event
// loop) gets the nice value; where it cannot tell which thread that is, nothing changes.
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "distributed/gloo_event_loop.h"

using trainbus::distributed::create_gloo_device_with_niced_loop;

namespace {

// Threads that report their thread id, then wait until released: a stand-in for Gloo's loop.
class WaitingThreads {
 public:
  // `own_nice`: each thread first gives itself that nice value (0: none); then start returns
  // once they have.
  void start(int count, int own_nice = 0) {
    for (int i = 0; i < count; ++i) {
      auto id = std::make_shared<std::promise<pid_t>>();
      ids_.push_back(id->get_future());
      threads_.emplace_back([this, id, own_nice] {
        const auto thread = static_cast<pid_t>(::syscall(SYS_gettid));
        if (own_nice != 0) ::setpriority(PRIO_PROCESS, static_cast<id_t>(thread), own_nice);
        id->set_value(thread);
        std::unique_lock<std::mutex> lock(mutex_);
        released_.wait(lock, [this] { return release_; });
      });
    }
    if (own_nice != 0)
      for (auto& id : ids_) id.wait();
  }
  // Each started thread's nice value.
  std::vector<int> nice_values() {
    std::vector<int> result;
    for (auto& id : ids_)
      result.push_back(::getpriority(PRIO_PROCESS, static_cast<id_t>(id.get())));
    return result;
  }
  ~WaitingThreads() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      release_ = true;
    }
    released_.notify_all();
    for (auto& thread : threads_) thread.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  bool release_ = false;
  std::vector<std::future<pid_t>> ids_;
  std::vector<std::thread> threads_;
};

// A sanitizer starts a thread of its own at a process's first thread creation: done here, it is
// not one of the threads a test's device "starts".
void start_the_sanitizers_thread() {
  std::thread([] {}).join();
}

}  // namespace

TEST_CASE("the one thread a Gloo device starts gets the nice value", "[ddp]") {
  start_the_sanitizers_thread();
  const int own = ::getpriority(PRIO_PROCESS, 0);
  WaitingThreads loop;
  CHECK(create_gloo_device_with_niced_loop([&] { loop.start(1); }, 19));
  CHECK(loop.nice_values() == std::vector<int>{19});
  CHECK(::getpriority(PRIO_PROCESS, 0) == own);  // the calling thread keeps its own
}

TEST_CASE("nice 0, or a device that starts no thread or several, changes no thread", "[ddp]") {
  start_the_sanitizers_thread();
  const int own = ::getpriority(PRIO_PROCESS, 0);
  WaitingThreads threads;
  CHECK_FALSE(create_gloo_device_with_niced_loop([] {}, 19));
  CHECK_FALSE(create_gloo_device_with_niced_loop([&] { threads.start(2); }, 19));
  CHECK_FALSE(create_gloo_device_with_niced_loop([&] { threads.start(1); }, 0));
  CHECK(threads.nice_values() == std::vector<int>{own, own, own});
}

TEST_CASE("a device that fails to start, having started its loop, leaves it as it was", "[ddp]") {
  start_the_sanitizers_thread();
  const int own = ::getpriority(PRIO_PROCESS, 0);
  WaitingThreads loop;
  CHECK_THROWS_WITH(create_gloo_device_with_niced_loop(
                        [&] {
                          loop.start(1);
                          throw std::runtime_error("no such interface");
                        },
                        19),
                    "no such interface");
  CHECK(loop.nice_values() == std::vector<int>{own});
}

TEST_CASE("a loop already at a lower priority than asked keeps it", "[ddp]") {
  start_the_sanitizers_thread();
  WaitingThreads loop;
  CHECK(create_gloo_device_with_niced_loop([&] { loop.start(1, /*own_nice=*/19); }, 5));
  CHECK(loop.nice_values() == std::vector<int>{19});
}
