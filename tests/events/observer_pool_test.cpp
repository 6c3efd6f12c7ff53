// events::ObserverPool: order per observer, bounded delivery, drains, errors, filters. No LibTorch,
// so this also runs under ThreadSanitizer. Waits are on drains and latches, never on sleeps.
#include "events/observer_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/post_task.h"
#include "events/detail/observer_hooks.h"

using namespace trainbus;
using Catch::Matchers::Contains;

namespace {

/// A gate the test opens; observers wait on it to stay "slow" as long as the test needs.
class Latch {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    changed_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return open_; });
  }
  /// wait() for at most `timeout` (so that a broken test fails instead of hanging); true if opened.
  bool wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
};

/// Records the batch index of every TrainBatchEnd; fails the test if a hook ever overlaps itself.
class BatchRecorder : public events::Observer {
 public:
  explicit BatchRecorder(Latch* gate = nullptr, int64_t throw_at = -1)
      : gate_(gate), throw_at_(throw_at) {}
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd& event) override {
    if (busy_.exchange(true)) overlapped_ = true;
    if (gate_) gate_->wait();
    if (event.batch.batch_idx == throw_at_) {
      busy_ = false;
      throw std::runtime_error("disk full at batch " + std::to_string(throw_at_));
    }
    seen.push_back(event.batch.batch_idx);  // only this observer's strand touches it
    busy_ = false;
  }
  std::vector<int64_t> seen;
  std::atomic<bool> overlapped_{false};

 private:
  Latch* gate_;
  int64_t throw_at_;
  std::atomic<bool> busy_{false};
};

events::TrainBatchEnd batch(int64_t i) {
  events::TrainBatchEnd event;
  event.batch.batch_idx = i;
  event.metrics = {{"loss", 1.0 / static_cast<double>(i + 1)}};
  return event;
}

}  // namespace

TEST_CASE("Each observer sees its events in publish order, never concurrently with itself",
          "[events][observers]") {
  for (std::size_t threads : {1u, 2u, 4u}) {
    DYNAMIC_SECTION(threads << " pool threads") {
      events::EventBus bus;
      events::ObserverPool pool(threads);
      std::vector<std::shared_ptr<BatchRecorder>> observers;
      for (int i = 0; i < 6; ++i) {
        observers.push_back(std::make_shared<BatchRecorder>());
        pool.attach(bus, observers.back(), events::ObserverOptions().capacity(64));
      }
      constexpr int64_t kEvents = 5000;
      for (int64_t i = 0; i < kEvents; ++i) bus.publish(batch(i));
      pool.drain();
      for (const auto& observer : observers) {
        REQUIRE(observer->seen.size() == kEvents);
        for (int64_t i = 0; i < kEvents; ++i) REQUIRE(observer->seen[i] == i);
        CHECK_FALSE(observer->overlapped_);
      }
      for (const events::ObserverStats& s : pool.stats()) {
        CHECK(s.delivered == kEvents);
        CHECK(s.in_flight == 0);
        CHECK(s.peak_in_flight <= 64);
      }
    }
  }
}

TEST_CASE("drain() returns only once a slow observer has handled everything",
          "[events][observers]") {
  events::EventBus bus;
  events::ObserverPool pool(2);
  Latch gate;
  auto slow = std::make_shared<BatchRecorder>(&gate);
  pool.attach(bus, slow);
  for (int64_t i = 0; i < 10; ++i) bus.publish(batch(i));  // does not wait for the observer
  CHECK(pool.stats()[0].in_flight == 10);
  gate.open();
  pool.drain();
  CHECK(slow->seen.size() == 10);
}

TEST_CASE("WhenFull::kBlock loses nothing under a burst of 100k events", "[events][observers]") {
  events::EventBus bus;
  events::ObserverPool pool(2);
  auto observer = std::make_shared<BatchRecorder>();
  pool.attach(
      bus, observer,
      events::ObserverOptions().capacity(16).when_full(events::ObserverOptions::WhenFull::kBlock));
  constexpr int64_t kEvents = 100000;
  for (int64_t i = 0; i < kEvents; ++i) bus.publish(batch(i));
  pool.drain();
  REQUIRE(observer->seen.size() == kEvents);
  CHECK(observer->seen.back() == kEvents - 1);
  CHECK(pool.stats()[0].peak_in_flight <= 16);
  CHECK(pool.stats()[0].dropped == 0);
}

TEST_CASE("WhenFull::kDrop drops and counts what does not fit", "[events][observers]") {
  events::EventBus bus;
  events::ObserverPool pool(2);
  Latch gate;
  auto observer = std::make_shared<BatchRecorder>(&gate);
  pool.attach(
      bus, observer,
      events::ObserverOptions().capacity(4).when_full(events::ObserverOptions::WhenFull::kDrop));
  for (int64_t i = 0; i < 100; ++i) bus.publish(batch(i));  // never blocks
  gate.open();
  pool.drain();
  const events::ObserverStats stats = pool.stats()[0];
  CHECK(stats.delivered == 4);
  CHECK(stats.dropped == 96);
  CHECK(observer->seen == std::vector<int64_t>{0, 1, 2, 3});
}

TEST_CASE("An observer that throws is raised as ObserverError naming it, the others carry on",
          "[events][observers]") {
  events::EventBus bus;
  events::ObserverPool pool(2);
  auto failing = std::make_shared<BatchRecorder>(nullptr, /*throw_at=*/3);
  auto healthy = std::make_shared<BatchRecorder>();
  pool.attach(bus, failing);
  pool.attach(bus, healthy);
  for (int64_t i = 0; i < 10; ++i) bus.publish(batch(i));
  pool.drain();
  REQUIRE(pool.has_failure());
  try {
    pool.check();
    FAIL("check() did not throw");
  } catch (const events::ObserverError& error) {
    CHECK(error.observer() == "(anonymous namespace)::BatchRecorder");
    CHECK_THAT(
        error.what(),
        Contains("observer `(anonymous namespace)::BatchRecorder` failed: disk full at batch 3"));
    CHECK_THROWS_WITH(std::rethrow_exception(error.original()), "disk full at batch 3");
  }
  CHECK_FALSE(pool.has_failure());  // raised once
  CHECK_NOTHROW(pool.check());
  CHECK(failing->seen == std::vector<int64_t>{0, 1, 2});
  CHECK(healthy->seen.size() == 10);
  CHECK(pool.stats()[0].failed);
}

TEST_CASE("OnError::kDisable reports once and switches the observer off", "[events][observers]") {
  events::EventBus bus;
  events::ObserverPool pool(1);
  auto failing = std::make_shared<BatchRecorder>(nullptr, 2);
  pool.attach(bus, failing,
              events::ObserverOptions()
                  .capacity(1024)
                  .when_full(events::ObserverOptions::WhenFull::kBlock)
                  .on_error(events::ObserverOptions::OnError::kDisable));
  for (int64_t i = 0; i < 10; ++i) bus.publish(batch(i));
  pool.drain();
  CHECK_FALSE(pool.has_failure());
  CHECK(pool.stats()[0].disabled);
  CHECK(failing->seen == std::vector<int64_t>{0, 1});
}

TEST_CASE("Filters deliver every N, once, before and after, counting from 1",
          "[events][observers]") {
  class Filtered : public BatchRecorder {
   public:
    explicit Filtered(events::EventFilter filter) : filter_(filter) {}
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>(filter_);
    }
    events::EventFilter filter_;
  };
  events::EventBus bus;
  events::ObserverPool pool(2);
  auto every = std::make_shared<Filtered>(events::EventFilter::every(10));
  auto once = std::make_shared<Filtered>(events::EventFilter::once(3));
  auto before = std::make_shared<Filtered>(events::EventFilter::before(4));
  auto after = std::make_shared<Filtered>(events::EventFilter::every(5).and_after(20));
  for (const auto& o : {every, once, before, after}) pool.attach(bus, o);
  std::vector<int64_t> sync_seen;
  events::Subscription sync = bus.subscribe<events::TrainBatchEnd>(
      events::EventFilter::every(15),
      [&](const events::TrainBatchEnd& e) { sync_seen.push_back(e.batch.batch_idx); });
  for (int64_t i = 1; i <= 30; ++i) bus.publish(batch(i));  // the i-th event carries batch_idx i
  pool.drain();
  CHECK(every->seen == std::vector<int64_t>{10, 20, 30});
  CHECK(once->seen == std::vector<int64_t>{3});
  CHECK(before->seen == std::vector<int64_t>{1, 2, 3});
  CHECK(after->seen == std::vector<int64_t>{25, 30});
  CHECK(sync_seen == std::vector<int64_t>{15, 30});
  CHECK_THROWS_WITH(events::EventFilter::every(0), Contains("n must be >= 1"));
}

namespace {

/// Keeps the `outputs` (an int standing in for a tensor; -1 when none came) of each TrainBatchEnd,
/// and where the event it got lives.
class Outputs : public events::Observer {
 public:
  explicit Outputs(bool wants) : wants_(wants) {}
  bool wants_tensors() const override { return wants_; }
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd& event) override {
    values.push_back(event.outputs.has_value() ? std::any_cast<int>(event.outputs.value()) : -1);
    addresses.push_back(&event);
  }
  std::vector<int> values;
  std::vector<const events::TrainBatchEnd*> addresses;
  bool wants_;
};

}  // namespace

TEST_CASE("Tensor fields reach only the observers that want them, as snapshots",
          "[events][observers]") {
  events::EventBus bus;
  // Stands in for core's detach-and-clone: marks the copy so the test can tell it from the
  // original.
  events::ObserverPool pool(2, [](const events::TensorRef& ref) {
    return events::TensorRef(std::any(std::any_cast<int>(ref.value()) + 1000));
  });
  auto wants = std::make_shared<Outputs>(true);
  auto ignores = std::make_shared<Outputs>(false);
  pool.attach(bus, wants);
  pool.attach(bus, ignores);
  std::vector<int> sync_seen;  // a synchronous slot sees the trainer's own tensors, untouched
  events::Subscription sync =
      bus.subscribe<events::TrainBatchEnd>([&](const events::TrainBatchEnd& e) {
        sync_seen.push_back(std::any_cast<int>(e.outputs.value()));
      });
  const auto with_outputs = [](int value) {
    events::TrainBatchEnd event = batch(0);
    event.outputs = events::TensorRef(std::any(value));
    return event;
  };
  bus.publish(with_outputs(7));  // copied for each kind of observer
  // Built by the bus: handed to the pool, which copies it once for the observer wanting tensors
  // and empties the original's for the other.
  bus.publish_lazy<events::TrainBatchEnd>([&] { return with_outputs(8); });
  pool.drain();
  CHECK(wants->values == std::vector<int>{1007, 1008});
  CHECK(ignores->values == std::vector<int>{-1, -1});
  CHECK(sync_seen == std::vector<int>{7, 8});
}

TEST_CASE("A pool given the event by the bus delivers the same as one that copies it",
          "[events][observers]") {
  const auto snapshot = [](const events::TensorRef& ref) {
    return events::TensorRef(std::any(std::any_cast<int>(ref.value()) + 1000));
  };
  for (const bool tensors : {false, true}) {
    events::EventBus bus;
    events::ObserverPool pool(2, snapshot);
    auto first = std::make_shared<Outputs>(tensors);
    auto second = std::make_shared<Outputs>(tensors);
    pool.attach(bus, first);
    pool.attach(bus, second);
    bus.publish_lazy<events::TrainBatchEnd>([] {
      events::TrainBatchEnd event = batch(0);
      event.outputs = events::TensorRef(std::any(5));
      return event;
    });
    pool.drain();
    CHECK(first->values == std::vector<int>{tensors ? 1005 : -1});
    CHECK(second->values == first->values);
    CHECK(first->addresses == second->addresses);  // one snapshot, shared
  }
}

TEST_CASE(
    "Destroying a pool with a stuck observer reports it, does not hang, and runs nothing queued "
    "behind it",
    "[events][observers]") {
  // The observer's state is shared: the abandoned pool thread still uses it after the pool is gone.
  struct Shared {
    Latch gate;       // opened by the test: the stuck hook returns
    Latch destroyed;  // opened when the observer is destroyed: no pool thread can call it any more
    std::atomic<int> handled{0};
  };
  class Stuck : public events::Observer {
   public:
    explicit Stuck(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
    ~Stuck() override { shared_->destroyed.open(); }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd&) override {
      shared_->gate.wait();
      ++shared_->handled;
    }

   private:
    std::shared_ptr<Shared> shared_;
  };
  auto shared = std::make_shared<Shared>();
  const auto start = std::chrono::steady_clock::now();
  {
    events::EventBus bus;
    events::ObserverPool pool(1, {}, /*stall_timeout=*/std::chrono::milliseconds(50));
    pool.attach(bus, std::make_shared<Stuck>(shared));
    bus.publish(batch(0));
    bus.publish(batch(1));
  }  // returns after ~50-100 ms instead of waiting for the gate
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  shared->gate.open();          // the stuck hook returns...
  shared->destroyed.wait();     // ... and the pool thread lets go of the observer
  CHECK(shared->handled == 1);  // the second event, queued behind the stuck hook, never ran
}

TEST_CASE("A slow observer is waited for as long as it makes progress", "[events][observers]") {
  class Slow : public events::Observer {
   public:
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd&) override {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(3));  // the slowness under test, not a wait
      ++handled;
    }
    std::atomic<int> handled{0};
  };
  events::EventBus bus;
  events::ObserverPool pool(1);
  auto slow = std::make_shared<Slow>();
  pool.attach(bus, slow);
  for (int64_t i = 0; i < 200; ++i) bus.publish(batch(i));
  // 200 events take ~600 ms, several times the 150 ms the drain allows without progress.
  CHECK(pool.drain_unless_stalled(std::chrono::milliseconds(150)));
  CHECK(slow->handled == 200);
  CHECK_NOTHROW(pool.check());
}

TEST_CASE("An observer waiting for a thread while a slow one works is not taken for stuck",
          "[events][observers]") {
  class Slow : public events::Observer {
   public:
    std::string name() const override { return "slow"; }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd&) override {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(3));  // the slowness under test, not a wait
    }
  };
  events::EventBus bus;
  // One thread, a stall timeout far shorter than the slow observer's backlog: the quick observer
  // waits for its turn on the thread the whole time, while the slow one makes progress.
  events::ObserverPool pool(1, {}, /*stall_timeout=*/std::chrono::milliseconds(100));
  pool.attach(bus, std::make_shared<Slow>());
  auto quick = std::make_shared<BatchRecorder>();
  pool.attach(bus, quick, events::ObserverOptions().capacity(8));
  for (int64_t i = 0; i < 150; ++i) bus.publish(batch(i));
  CHECK(pool.drain_unless_stalled(std::chrono::milliseconds(100)));
  CHECK_NOTHROW(pool.check());
  CHECK(quick->seen.size() == 150);
}

TEST_CASE("Every event type reaches the Observer hook of the same name", "[events][observers]") {
  class EveryHook : public events::Observer {
   public:
#define RECORD_HOOK(Type, hook) \
  void hook(const events::Type&) override { hooks.push_back(#hook); }
    TRAINBUS_FOR_EACH_EVENT(RECORD_HOOK)
#undef RECORD_HOOK
    std::vector<std::string> hooks;
  };
  events::EventBus bus;
  events::ObserverPool pool(2);
  auto every = std::make_shared<EveryHook>();
  pool.attach(bus, every);
  std::vector<std::string> expected;
  events::for_each_event_type([&](auto tag) {
    using E = typename decltype(tag)::type;
    bus.publish(E{});
    expected.push_back(events::detail::ObserverHook<E>::name);
  });
  pool.drain();
  CHECK(expected.size() == events::AllEvents::size);
  CHECK(every->hooks == expected);
}

TEST_CASE("Failures of many observers at once are each raised exactly once",
          "[events][observers][threads]") {
  class FailsAt : public events::Observer {
   public:
    FailsAt(std::string name, int64_t at) : name_(std::move(name)), at_(at) {}
    std::string name() const override { return name_; }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd& event) override {
      if (event.batch.batch_idx == at_) throw std::runtime_error(name_ + " failed");
    }

   private:
    std::string name_;
    int64_t at_;
  };
  for (const std::size_t threads : {1, 2, 4}) {
    DYNAMIC_SECTION(threads << " pool threads") {
      events::EventBus bus;
      events::ObserverPool pool(threads);
      std::mt19937 random(static_cast<unsigned>(threads));
      constexpr int kObservers = 16;
      for (int i = 0; i < kObservers; ++i) {
        // Several fail on the same event, so that failures land while check() runs.
        pool.attach(bus,
                    std::make_shared<FailsAt>("observer-" + std::to_string(i), 20 + random() % 5),
                    events::ObserverOptions().capacity(4));
      }
      std::map<std::string, int> raised;
      auto collect = [&] {
        while (pool.has_failure()) {
          try {
            pool.check();
          } catch (const events::ObserverError& error) {
            ++raised[error.observer()];
          }
        }
      };
      for (int64_t i = 0; i < 300; ++i) {
        bus.publish(batch(i));
        collect();
      }
      pool.drain();
      collect();
      CHECK(raised.size() == kObservers);
      for (const auto& [name, times] : raised) {
        INFO(name);
        CHECK(times == 1);
      }
    }
  }
}

TEST_CASE(
    "A kick whose post fails leaves the events to the next one, never a drain waiting for ever",
    "[events][observers]") {
  events::EventBus bus;
  // The flusher's own kicks come an hour apart: the injected failure is this test's kick's.
  events::ObserverPool pool(2, {}, std::chrono::seconds(60),
                            /*kick_interval=*/std::chrono::hours(1));
  auto recorder = std::make_shared<BatchRecorder>();
  pool.attach(bus, recorder);
  for (int64_t i = 0; i < 3; ++i) bus.publish(batch(i));  // queued, waiting for a kick
  SECTION("posting to the pool fails") {
    detail::inject_post_failures(1);
    CHECK_THROWS_AS(pool.kick(), std::bad_alloc);
    CHECK(pool.drain_unless_stalled(std::chrono::seconds(5)));
    CHECK(recorder->seen == std::vector<int64_t>{0, 1, 2});
  }
  SECTION("posting the observer's drainer to its strand fails") {
    detail::inject_post_failures(1, /*after=*/1);
    pool.kick();
    CHECK(pool.drain_unless_stalled(std::chrono::seconds(5)));
    CHECK_THROWS_AS(pool.check(), events::ObserverError);  // the observer failed with bad_alloc
    CHECK(recorder->seen.empty());
  }
  detail::inject_post_failures(0);
}

TEST_CASE("A burst hands itself over without a kick: at 512 events, or half a small capacity",
          "[events][observers]") {
  // The flusher's kicks come an hour apart: only the publisher's own hand-over can deliver here.
  // Each observer opens its latch when it has seen `expected` events.
  class CountingTo : public events::Observer {
   public:
    explicit CountingTo(int64_t expected) : expected_(expected) {}
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd&) override {
      if (++seen == expected_) reached.open();
    }
    std::atomic<int64_t> seen{0};
    Latch reached;

   private:
    int64_t expected_;
  };
  events::EventBus bus;
  events::ObserverPool pool(2, {}, std::chrono::seconds(60), std::chrono::hours(1));
  auto default_capacity = std::make_shared<CountingTo>(512);
  auto small_capacity = std::make_shared<CountingTo>(50);
  pool.attach(bus, default_capacity);  // capacity 1024: hands over at 512
  pool.attach(bus, small_capacity, events::ObserverOptions().capacity(100));  // at 50
  int64_t published = 0;
  auto publish_up_to = [&](int64_t count) {
    for (; published < count; ++published) bus.publish(batch(published));
  };
  publish_up_to(49);
  CHECK(small_capacity->seen == 0);  // below its mark: nothing handed over
  publish_up_to(50);
  CHECK(small_capacity->reached.wait_for(std::chrono::seconds(30)));
  publish_up_to(511);
  CHECK(default_capacity->seen == 0);  // 64 was the mark until 2026-12-04
  publish_up_to(512);
  CHECK(default_capacity->reached.wait_for(std::chrono::seconds(30)));
  pool.drain();
  CHECK(default_capacity->seen == 512);
  CHECK(small_capacity->seen == 512);
}

TEST_CASE("drain() from an observer's own hook is an error naming it, not a deadlock",
          "[events][observers]") {
  class Drains : public events::Observer {
   public:
    explicit Drains(events::ObserverPool& pool) : pool_(pool) {}
    std::string name() const override { return "drainer"; }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd&) override { pool_.drain(); }

   private:
    events::ObserverPool& pool_;
  };
  events::EventBus bus;
  events::ObserverPool pool(1);
  pool.attach(bus, std::make_shared<Drains>(pool));
  bus.publish(batch(0));
  REQUIRE(pool.drain_unless_stalled(std::chrono::seconds(5)));
  CHECK_THROWS_WITH(pool.check(),
                    Contains("observer `drainer` failed") &&
                        Contains("drain() was called from a hook of observer `drainer`") &&
                        Contains("would wait for itself"));
}

TEST_CASE("flush() runs on the observer's strand after events, within flush_interval",
          "[events][observers]") {
  class Buffers : public events::Observer {
   public:
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd& event) override {
      if (busy_.exchange(true)) overlapped = true;
      buffered.push_back(event.batch.batch_idx);
      busy_ = false;
    }
    void flush() override {
      if (busy_.exchange(true)) overlapped = true;
      {
        std::lock_guard<std::mutex> lock(mutex);
        flushed.insert(flushed.end(), buffered.begin(), buffered.end());
        if (flushed.size() == 5) all_flushed_at = std::chrono::steady_clock::now();
      }
      buffered.clear();
      busy_ = false;
      if (flushed.size() == 5) all_flushed.open();
    }
    std::vector<int64_t> buffered;
    std::mutex mutex;
    std::vector<int64_t> flushed;
    std::chrono::steady_clock::time_point all_flushed_at;
    Latch all_flushed;
    std::atomic<bool> overlapped{false};

   private:
    std::atomic<bool> busy_{false};
  };
  events::EventBus bus;
  events::ObserverPool pool(2);
  auto observer = std::make_shared<Buffers>();
  events::ObserverOptions options;
  options.flush_interval(std::chrono::milliseconds(100));
  pool.attach(bus, observer, options);
  for (int64_t i = 0; i < 5; ++i) bus.publish(batch(i));
  const auto published = std::chrono::steady_clock::now();
  // Nobody asks: the pool's timer flushes, within the interval (plus the pool's wake-up and a
  // generous allowance for a loaded machine), and the test gives up rather than hang.
  REQUIRE(observer->all_flushed.wait_for(std::chrono::seconds(10)));
  std::lock_guard<std::mutex> lock(observer->mutex);
  CHECK(observer->flushed == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(observer->all_flushed_at - published <
        std::chrono::milliseconds(100) + std::chrono::seconds(1));
  CHECK_FALSE(observer->overlapped);
}

TEST_CASE("A full queue behind a stuck hook does not block the trainer for ever",
          "[events][observers]") {
  auto gate = std::make_shared<Latch>();
  class Stuck : public events::Observer {
   public:
    explicit Stuck(std::shared_ptr<Latch> gate) : gate_(std::move(gate)) {}
    std::string name() const override { return "stuck"; }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd&) override { gate_->wait(); }

   private:
    std::shared_ptr<Latch> gate_;
  };
  {
    events::EventBus bus;
    events::ObserverPool pool(1, {}, /*stall_timeout=*/std::chrono::milliseconds(200));
    pool.attach(bus, std::make_shared<Stuck>(gate), events::ObserverOptions().capacity(4));
    for (int64_t i = 0; i < 20; ++i) bus.publish(batch(i));  // the 5th would wait for room for ever
    CHECK_THROWS_WITH(pool.check(), Contains("observer `stuck` failed: ") &&
                                        Contains("waiting event") &&
                                        Contains("waited for room in its queue"));
    CHECK(pool.stats()[0].in_flight <= 4);  // nothing queued after it was abandoned
  }
  gate->open();
}

TEST_CASE("An observer stuck in flush() at shutdown does not hang the destructor",
          "[events][observers]") {
  struct Shared {
    Latch gate;
    Latch destroyed;
  };
  class StuckFlush : public events::Observer {
   public:
    explicit StuckFlush(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
    ~StuckFlush() override { shared_->destroyed.open(); }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void flush() override { shared_->gate.wait(); }  // a hung network filesystem, say

   private:
    std::shared_ptr<Shared> shared_;
  };
  auto shared = std::make_shared<Shared>();
  const auto start = std::chrono::steady_clock::now();
  {
    events::EventBus bus;
    events::ObserverPool pool(1, {}, /*stall_timeout=*/std::chrono::milliseconds(50));
    events::ObserverOptions options;
    options.flush_interval(std::chrono::hours(1));  // only the shutdown flush
    pool.attach(bus, std::make_shared<StuckFlush>(shared), options);
    bus.publish(batch(0));
    pool.drain();
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  shared->gate.open();
  CHECK(shared->destroyed.wait_for(std::chrono::seconds(10)));
}

TEST_CASE("Failures at shutdown, with nobody left to raise them to, are reported",
          "[events][observers]") {
  class FailsToFlush : public events::Observer {
   public:
    std::string name() const override { return "disk-full"; }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void flush() override { throw std::runtime_error("No space left on device"); }
  };
  std::ostringstream captured;
  std::streambuf* previous = std::cerr.rdbuf(captured.rdbuf());
  {
    events::EventBus bus;
    events::ObserverPool pool(1);
    events::ObserverOptions options;
    options.flush_interval(std::chrono::hours(1));  // only the shutdown flush
    pool.attach(bus, std::make_shared<FailsToFlush>(), options);
    bus.publish(batch(0));
    pool.drain();
  }
  std::cerr.rdbuf(previous);
  CHECK_THAT(captured.str(),
             Contains("observer `disk-full` failed at shutdown: No space left on device"));
}

namespace {

// Keeps published_at() of every TrainStart it handles.
class PublishTimes : public events::Observer {
 public:
  std::vector<std::chrono::steady_clock::time_point> times;
  void on_train_start(const events::TrainStart&) override { times.push_back(published_at()); }
};

}  // namespace

TEST_CASE("published_at() is when the event was published, not when the hook runs",
          "[events][pool]") {
  events::EventBus bus;
  events::ObserverPool pool(1);
  auto observer = std::make_shared<PublishTimes>();
  pool.attach(bus, observer);
  const auto before_first = std::chrono::steady_clock::now();
  bus.publish(events::TrainStart{});
  const auto after_first = std::chrono::steady_clock::now();
  bus.publish(events::TrainStart{});
  const auto after_second = std::chrono::steady_clock::now();
  pool.drain();
  const auto drained = std::chrono::steady_clock::now();
  REQUIRE(observer->times.size() == 2);
  CHECK(observer->times[0] >= before_first);
  CHECK(observer->times[0] <= after_first);
  CHECK(observer->times[1] >= after_first);
  CHECK(observer->times[1] <= after_second);
  CHECK(observer->times[1] <= drained);
}

TEST_CASE(
    "attach() tells the observer where it runs before any event, and refuses one that "
    "throws there",
    "[events][pool]") {
  // Notes the placement it was attached with, and whether an event came before it.
  class Placed : public events::Observer {
   public:
    explicit Placed(bool refuse) : refuse_(refuse) {}
    void attached(const events::Placement& placement) override {
      if (refuse_) throw std::runtime_error("cannot write here");
      attached_ = true;
      seen.push_back("attached " + std::to_string(placement.global_rank) + " " +
                     std::to_string(placement.local_rank) + " " +
                     std::to_string(placement.world_size));
    }
    void on_train_start(const events::TrainStart&) override { seen.push_back("train_start"); }
    // Neither asked for its events nor flushed before it is told where it runs.
    void select_events(events::EventSelection& selection) const override {
      (attached_ ? asked : asked_before_attached).push_back("select_events");
      events::Observer::select_events(selection);
    }
    void flush() override {
      if (!attached_) asked_before_attached.push_back("flush");
    }
    std::vector<std::string> seen;
    mutable std::vector<std::string> asked;
    mutable std::vector<std::string> asked_before_attached;

   private:
    bool refuse_;
    bool attached_ = false;
  };
  events::EventBus bus;
  auto owner = std::make_unique<events::ObserverPool>(1);  // destroyed below: flushes all
  events::ObserverPool& pool = *owner;
  auto alone = std::make_shared<Placed>(false);
  auto rank_two = std::make_shared<Placed>(false);
  auto refusing = std::make_shared<Placed>(true);
  pool.attach(bus, alone);  // a pool without a Trainer: one process
  pool.attach(bus, rank_two, {}, events::Placement{2, 0, 4});
  CHECK_THROWS_WITH(pool.attach(bus, refusing), "cannot write here");
  bus.publish(events::TrainStart{});
  pool.drain();
  CHECK(alone->seen == std::vector<std::string>{"attached 0 0 1", "train_start"});
  CHECK(rank_two->seen == std::vector<std::string>{"attached 2 0 4", "train_start"});
  CHECK(refusing->seen.empty());  // not attached: no event
  CHECK(pool.size() == 2);
  owner.reset();
  for (const auto& observer : {alone, rank_two, refusing})
    CHECK(observer->asked_before_attached.empty());
  CHECK_FALSE(alone->asked.empty());
  CHECK(refusing->asked.empty());
}
