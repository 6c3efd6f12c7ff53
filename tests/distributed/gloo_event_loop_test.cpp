// create_gloo_device_with_idle_loop: the one thread a device's creation starts (Gloo's event
// loop) goes to SCHED_IDLE; where it cannot tell which thread that is, nothing changes.
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "distributed/gloo_event_loop.h"

using trainbus::distributed::create_gloo_device_with_idle_loop;

namespace {

// Threads that report their thread id, then wait until released: a stand-in for Gloo's loop.
class WaitingThreads {
 public:
  void start(int count) {
    for (int i = 0; i < count; ++i) {
      auto id = std::make_shared<std::promise<pid_t>>();
      ids_.push_back(id->get_future());
      threads_.emplace_back([this, id] {
        id->set_value(static_cast<pid_t>(::syscall(SYS_gettid)));
        std::unique_lock<std::mutex> lock(mutex_);
        released_.wait(lock, [this] { return release_; });
      });
    }
  }
  // Each started thread's scheduling policy.
  std::vector<int> policies() {
    std::vector<int> result;
    for (auto& id : ids_) result.push_back(::sched_getscheduler(id.get()));
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

}  // namespace

TEST_CASE("the one thread a Gloo device starts runs at idle priority", "[ddp]") {
  WaitingThreads loop;
  CHECK(create_gloo_device_with_idle_loop([&] { loop.start(1); }));
  CHECK(loop.policies() == std::vector<int>{SCHED_IDLE});
  CHECK(::sched_getscheduler(0) == SCHED_OTHER);  // the calling thread keeps its own
}

TEST_CASE("where a device starts no thread or several, no thread's priority changes", "[ddp]") {
  WaitingThreads threads;
  CHECK_FALSE(create_gloo_device_with_idle_loop([] {}));
  CHECK_FALSE(create_gloo_device_with_idle_loop([&] { threads.start(2); }));
  CHECK(threads.policies() == std::vector<int>{SCHED_OTHER, SCHED_OTHER});
}

TEST_CASE("a device that fails to start leaves every thread as it was", "[ddp]") {
  CHECK_THROWS_WITH(
      create_gloo_device_with_idle_loop([] { throw std::runtime_error("no such interface"); }),
      "no such interface");
}
