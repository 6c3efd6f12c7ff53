// What asynchronous observers cost, measured in one run:
//  1. the training thread's cost of publishing one TrainBatchEnd (5 metrics, no tensors) to an
//     async observer -- copy the event, post it to the observer's strand -- per publish, median
//     and p99, beside the same event to a synchronous no-op subscriber;
//  2. the pool's throughput: events per second handled by 1, 4 and 16 observers together.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/stats.h"
#include "events/observer_pool.h"
#include "record/recorder.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace trainbus;

volatile double sink = 0.0;

class Counting : public events::Observer {
 public:
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd& event) override {
    sum += event.batch.batch_idx;
  }
  int64_t sum = 0;
};

// Holds a pool thread until released: with one per thread, the events published meanwhile queue
// up, so that the time to drain them afterwards is the pool's alone, not the publisher's.
class ThreadHolder : public events::Observer {
 public:
  explicit ThreadHolder(std::shared_future<void> release) : release_(std::move(release)) {}
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::FitStart>();
  }
  void on_fit_start(const events::FitStart&) override {
    ++holding;
    release_.wait();
  }
  static inline std::atomic<int> holding{0};

 private:
  std::shared_future<void> release_;
};

events::TrainBatchEnd make_event(int64_t i) {
  events::TrainBatchEnd event;
  event.progress = {0, i};
  event.batch = {i, 64, 0};
  event.loss = 0.25;
  event.metrics = {{"train_loss_step", 0.25}, {"train_acc_step", 0.9}, {"lr", 1e-3}};
  event.progress_bar = {{"train_loss_step", 0.25}, {"train_acc_step", 0.9}};
  return event;
}

struct Percentiles {
  double median, p99;
};

Percentiles percentiles(const std::vector<double>& ns) {
  return {trainbus::bench::median(ns), trainbus::bench::percentile(ns, 0.99)};
}

// Busy work standing in for the training step between two publishes.
double spin(std::chrono::nanoseconds duration) {
  const auto end = Clock::now() + duration;
  double x = 1.0;
  while (Clock::now() < end) x = x * 1.0000001 + 1e-9;
  return x;
}

// Times what the training thread pays per event, as in a fit: `per_batch` publishes (one batch's
// events), then `gap` of other work (the step) while the pool's flusher hands them to the observer.
// Each publish is timed alone.
template <class Setup>
Percentiles publish_cost(int64_t events_count, Setup&& setup, int per_batch = 10,
                         std::chrono::nanoseconds gap = {}) {
  events::EventBus bus;
  events::ObserverPool pool(2);
  std::vector<events::Subscription> keep;
  setup(bus, pool, keep);
  std::vector<double> ns;
  ns.reserve(static_cast<size_t>(events_count));
  for (int64_t i = 0; i < events_count; ++i) {
    const auto start = Clock::now();
    bus.publish_lazy<events::TrainBatchEnd>([&] { return make_event(i); });
    ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count());
    if ((i + 1) % per_batch == 0 && gap.count() > 0) sink += spin(gap);
  }
  pool.drain();
  return percentiles(std::move(ns));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trainbus benchmark: asynchronous observers"};
  int64_t events_count = 200000;
  int reps = 5;
  app.add_option("--events", events_count, "Events per measurement")
      ->check(CLI::Range(int64_t{1000}, int64_t{100000000}));
  app.add_option("--reps", reps, "Repetitions (medians are quoted)")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  std::vector<double> none_median, sync_median, async_median, none_p99, sync_p99, async_p99,
      paced_median, paced_p99, recorder_median, recorder_p99, three_median, three_p99,
      beside_median, beside_p99, added_by_recorder;
  for (int rep = 0; rep < reps; ++rep) {
    const Percentiles none = publish_cost(events_count, [](events::EventBus&, events::ObserverPool&,
                                                           std::vector<events::Subscription>&) {});
    const Percentiles sync = publish_cost(
        events_count,
        [](events::EventBus& bus, events::ObserverPool&, std::vector<events::Subscription>& keep) {
          keep.push_back(bus.subscribe<events::TrainBatchEnd>([](const events::TrainBatchEnd&) {}));
        });
    const Percentiles async = publish_cost(
        events_count,
        [&](events::EventBus& bus, events::ObserverPool& pool, std::vector<events::Subscription>&) {
          pool.attach(bus, std::make_shared<Counting>(),
                      events::ObserverOptions().capacity(static_cast<size_t>(events_count)));
        });
    const Percentiles paced = publish_cost(
        events_count / 4,
        [&](events::EventBus& bus, events::ObserverPool& pool, std::vector<events::Subscription>&) {
          pool.attach(bus, std::make_shared<Counting>(),
                      events::ObserverOptions().capacity(static_cast<size_t>(events_count)));
        },
        10, std::chrono::microseconds(200));
    const std::string recording =
        "/tmp/trainbus-bench-observers-" + std::to_string(::getpid()) + ".tbrec";
    const Percentiles recorded = publish_cost(
        events_count / 4,
        [&](events::EventBus& bus, events::ObserverPool& pool, std::vector<events::Subscription>&) {
          pool.attach(bus,
                      std::make_shared<trainbus::record::Recorder>(
                          trainbus::record::RecorderOptions().path(recording).overwrite(true)),
                      events::ObserverOptions().capacity(static_cast<size_t>(events_count)));
        },
        10, std::chrono::microseconds(200));
    // What a fit pays: the Recorder beside the loggers and the progress bar, which share its
    // snapshot of each event. Three counting observers stand in for them.
    const auto three_observers = [&](events::EventBus& bus, events::ObserverPool& pool,
                                     std::vector<events::Subscription>&) {
      for (int o = 0; o < 3; ++o) {
        pool.attach(bus, std::make_shared<Counting>(),
                    events::ObserverOptions().capacity(static_cast<size_t>(events_count)));
      }
    };
    const Percentiles three =
        publish_cost(events_count / 4, three_observers, 10, std::chrono::microseconds(200));
    const Percentiles three_and_recorder = publish_cost(
        events_count / 4,
        [&](events::EventBus& bus, events::ObserverPool& pool,
            std::vector<events::Subscription>& keep) {
          three_observers(bus, pool, keep);
          pool.attach(bus,
                      std::make_shared<trainbus::record::Recorder>(
                          trainbus::record::RecorderOptions().path(recording).overwrite(true)),
                      events::ObserverOptions().capacity(static_cast<size_t>(events_count)));
        },
        10, std::chrono::microseconds(200));
    std::remove(recording.c_str());
    three_median.push_back(three.median);
    three_p99.push_back(three.p99);
    beside_median.push_back(three_and_recorder.median);
    beside_p99.push_back(three_and_recorder.p99);
    added_by_recorder.push_back(three_and_recorder.median - three.median);
    recorder_median.push_back(recorded.median);
    recorder_p99.push_back(recorded.p99);
    paced_median.push_back(paced.median);
    paced_p99.push_back(paced.p99);
    none_median.push_back(none.median);
    none_p99.push_back(none.p99);
    sync_median.push_back(sync.median);
    sync_p99.push_back(sync.p99);
    async_median.push_back(async.median);
    async_p99.push_back(async.p99);
  }
  auto med = [](const std::vector<double>& v) { return trainbus::bench::median(v); };
  std::printf(
      "Training-thread cost of publishing one TrainBatchEnd (5 metrics, no tensors), ns; median "
      "over %d "
      "repetitions of %lld publishes each\n\n",
      reps, static_cast<long long>(events_count));
  std::printf("| subscriber | median | p99 | goal |\n|---|---:|---:|---|\n");
  std::printf("| none (the event is not even built) | %.0f | %.0f | |\n", med(none_median),
              med(none_p99));
  std::printf("| synchronous no-op function | %.0f | %.0f | |\n", med(sync_median), med(sync_p99));
  std::printf("| asynchronous observer, back to back | %.0f | %.0f | median < 2000 |\n",
              med(async_median), med(async_p99));
  std::printf(
      "| asynchronous observer, 10 per 200 us of other work (a step) | %.0f | %.0f | median < 2000 "
      "|\n",
      med(paced_median), med(paced_p99));
  std::printf("| Recorder (events.tbrec), 10 per 200 us of other work | %.0f | %.0f | |\n",
              med(recorder_median), med(recorder_p99));
  std::printf(
      "| three async observers (the loggers and progress bar of a fit), paced | %.0f | %.0f | |\n",
      med(three_median), med(three_p99));
  std::printf("| the same three and the Recorder, paced | %.0f | %.0f | |\n", med(beside_median),
              med(beside_p99));
  std::printf(
      "| what the Recorder adds beside them (median of the per-repetition differences) | %.0f | | "
      "< "
      "1000 |\n\n",
      med(added_by_recorder));

  std::printf(
      "Observer pool throughput (2 threads): events handled per second by all observers together, "
      "from "
      "queues filled beforehand (the publisher's own cost is the table above)\n\n");
  std::printf("| observers | events handled | handled per second |\n|---:|---:|---:|\n");
  for (int observers : {1, 4, 16}) {
    std::vector<double> rates;
    for (int rep = 0; rep < reps; ++rep) {
      events::EventBus bus;
      events::ObserverPool pool(2);
      std::promise<void> release;
      ThreadHolder::holding = 0;
      const std::shared_future<void> released = release.get_future().share();
      for (int t = 0; t < 2; ++t) pool.attach(bus, std::make_shared<ThreadHolder>(released));
      for (int o = 0; o < observers; ++o) {
        pool.attach(bus, std::make_shared<Counting>(),
                    events::ObserverOptions().capacity(static_cast<size_t>(events_count)));
      }
      bus.publish(events::FitStart{});
      pool.kick();
      while (ThreadHolder::holding < 2) std::this_thread::yield();  // both pool threads held
      for (int64_t i = 0; i < events_count; ++i) bus.publish(make_event(i));
      const auto start = Clock::now();
      release.set_value();
      pool.drain();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      rates.push_back(static_cast<double>(events_count) * observers / seconds);
    }
    std::printf("| %d | %lld | %.2f M |\n", observers,
                static_cast<long long>(events_count) * observers, med(rates) / 1e6);
  }
  return 0;
}
