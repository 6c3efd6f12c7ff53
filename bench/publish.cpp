// What publishing one event costs the training thread, in ns, with 0, 1, 5 and 20 synchronous
// subscribers (each a no-op that bumps a counter), beside a bare Boost.Signals2 signal with the
// same slots. Each cell is the median of several repetitions of many publishes.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/signals2/signal.hpp>

#include "bench/stats.h"
#include "events/event_bus.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace events = trainbus::events;

std::atomic<uint64_t> delivered{0};

template <class Publish>
double ns_per_call(Publish&& publish, int64_t iterations) {
  const auto start = Clock::now();
  for (int64_t i = 0; i < iterations; ++i) publish(i);
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() /
         static_cast<double>(iterations);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trainbus benchmark: event publish cost"};
  int64_t iterations = 2'000'000;
  int reps = 7;
  app.add_option("--iterations", iterations, "Publishes per repetition")
      ->check(CLI::Range(int64_t{1000}, int64_t{1'000'000'000}));
  app.add_option("--reps", reps, "Repetitions per cell")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  std::printf(
      "Publish cost on the training thread, ns per event (median of %d x %lld publishes)\n\n", reps,
      static_cast<long long>(iterations));
  std::printf(
      "| subscribers | events::EventBus::publish | events::EventBus::publish_lazy | bare Signals2 "
      "signal | goal |\n");
  std::printf("|---:|---:|---:|---:|---|\n");
  for (int subscribers : {0, 1, 5, 20}) {
    trainbus::events::EventBus bus;
    boost::signals2::signal<void(const events::TrainBatchEnd&)> bare;
    std::vector<trainbus::events::Subscription> subscriptions;
    for (int s = 0; s < subscribers; ++s) {
      auto count = [](const events::TrainBatchEnd&) {
        delivered.fetch_add(1, std::memory_order_relaxed);
      };
      subscriptions.push_back(bus.subscribe<events::TrainBatchEnd>(count));
      bare.connect(count);
    }
    events::TrainBatchEnd event;
    event.loss = 0.5;
    std::vector<double> publish, lazy, signal;
    for (int rep = 0; rep < reps; ++rep) {
      publish.push_back(ns_per_call(
          [&](int64_t i) {
            event.batch.batch_idx = i;
            bus.publish(event);
          },
          iterations));
      lazy.push_back(ns_per_call(
          [&](int64_t i) {
            bus.publish_lazy<events::TrainBatchEnd>([&] {
              events::TrainBatchEnd built;
              built.batch.batch_idx = i;
              return built;
            });
          },
          iterations));
      signal.push_back(ns_per_call(
          [&](int64_t i) {
            event.batch.batch_idx = i;
            bare(event);
          },
          iterations));
    }
    const char* goal = subscribers == 0 ? "< 50" : subscribers == 5 ? "< 300" : "";
    using trainbus::bench::median;
    std::printf("| %d | %.1f | %.1f | %.1f | %s |\n", subscribers, median(publish), median(lazy),
                median(signal), goal);
  }
  std::printf("\n(%llu slot calls made)\n", static_cast<unsigned long long>(delivered.load()));
  return 0;
}
