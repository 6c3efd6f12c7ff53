#include "events/event_bus.h"

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

using trainbus::events::EventBus;
using trainbus::events::Subscription;
namespace events = trainbus::events;

TEST_CASE("A subscriber receives the events of its type, with their fields", "[events]") {
  events::EventBus bus;
  std::vector<int64_t> epochs;
  events::Subscription subscription = bus.subscribe<events::TrainEpochEnd>(
      [&](const events::TrainEpochEnd& e) { epochs.push_back(e.progress.epoch); });

  bus.publish(events::TrainEpochEnd{{3, 30}, {{"loss", 0.5}}});
  bus.publish(events::TrainEpochStart{{4, 30}});  // another type: not delivered
  bus.publish(events::TrainEpochEnd{{4, 40}, {}});

  CHECK(epochs == std::vector<int64_t>{3, 4});
}

TEST_CASE("Dropping or disconnecting a Subscription stops delivery", "[events]") {
  events::EventBus bus;
  int calls = 0;
  {
    events::Subscription scoped =
        bus.subscribe<events::FitStart>([&](const events::FitStart&) { ++calls; });
    bus.publish(events::FitStart{});
    REQUIRE(bus.has_subscribers<events::FitStart>());
  }
  bus.publish(events::FitStart{});
  CHECK(calls == 1);
  CHECK_FALSE(bus.has_subscribers<events::FitStart>());

  events::Subscription explicit_one =
      bus.subscribe<events::FitStart>([&](const events::FitStart&) { ++calls; });
  explicit_one.disconnect();
  explicit_one.disconnect();  // twice is harmless
  bus.publish(events::FitStart{});
  CHECK(calls == 1);
  CHECK_FALSE(explicit_one.connected());
  CHECK_FALSE(bus.has_subscribers<events::FitStart>());
}

TEST_CASE("A moved Subscription keeps the slot connected exactly once", "[events]") {
  events::EventBus bus;
  int calls = 0;
  events::Subscription first =
      bus.subscribe<events::FitEnd>([&](const events::FitEnd&) { ++calls; });
  events::Subscription second = std::move(first);
  events::Subscription third;
  third = std::move(second);
  bus.publish(events::FitEnd{});
  CHECK(calls == 1);
  CHECK(third.connected());
  third = events::Subscription();  // assigning over a live subscription disconnects it
  CHECK_FALSE(bus.has_subscribers<events::FitEnd>());
}

TEST_CASE("publish_lazy builds the event only when someone listens", "[events]") {
  events::EventBus bus;
  int built = 0;
  auto make = [&] {
    ++built;
    return events::TrainBatchEnd{};
  };
  bus.publish_lazy<events::TrainBatchEnd>(make);
  CHECK(built == 0);

  int delivered = 0;
  events::Subscription s =
      bus.subscribe<events::TrainBatchEnd>([&](const events::TrainBatchEnd&) { ++delivered; });
  bus.publish_lazy<events::TrainBatchEnd>(make);
  CHECK(built == 1);
  CHECK(delivered == 1);
}

TEST_CASE("A sole keeper takes over the event publish_lazy built, others copy", "[events]") {
  events::EventBus bus;
  std::vector<std::string> calls;
  std::vector<const events::TrainEpochEnd*> slot_saw;
  events::Subscription slot = bus.subscribe<events::TrainEpochEnd>([&](const auto& event) {
    calls.push_back("slot " + std::to_string(event.metrics.at("loss")));
    slot_saw.push_back(&event);
  });
  std::vector<std::shared_ptr<events::TrainEpochEnd>> kept;
  auto keeper = [&](const std::string& name) {
    return
        [&, name](const events::TrainEpochEnd& event, std::shared_ptr<events::TrainEpochEnd> sole) {
          calls.push_back(name + (sole ? " sole" : " copy"));
          if (sole) {
            CHECK(sole.get() == &event);
            sole->metrics["loss"] = -1.0;  // it may change what it owns: nobody reads it after
          }
          kept.push_back(sole);
        };
  };
  const auto make = [] { return events::TrainEpochEnd{{1, 10}, {{"loss", 0.5}}}; };
  {
    events::Subscription first = bus.keep<events::TrainEpochEnd>(keeper("first"));
    bus.publish_lazy<events::TrainEpochEnd>(make);
    bus.publish(make());  // not built by the bus: the keeper copies
    // Keepers run after every slot, even one subscribed after them.
    events::Subscription late = bus.subscribe<events::TrainEpochEnd>(
        [&](const events::TrainEpochEnd&) { calls.push_back("late slot"); });
    bus.publish_lazy<events::TrainEpochEnd>(make);
  }
  CHECK(calls == std::vector<std::string>{"slot 0.500000", "first sole", "slot 0.500000",
                                          "first copy", "slot 0.500000", "late slot",
                                          "first sole"});
  REQUIRE(kept.size() == 3);
  CHECK(kept[0]->metrics.at("loss") == -1.0);  // the keeper's own, changed after the slot read it
  CHECK(kept[0].get() == slot_saw[0]);         // the very event the slot saw: not copied

  calls.clear();
  events::Subscription first = bus.keep<events::TrainEpochEnd>(keeper("first"));
  events::Subscription second = bus.keep<events::TrainEpochEnd>(keeper("second"));
  bus.publish_lazy<events::TrainEpochEnd>(make);
  CHECK(calls == std::vector<std::string>{"slot 0.500000", "first copy", "second copy"});
  second.disconnect();
  calls.clear();
  bus.publish_lazy<events::TrainEpochEnd>(make);
  CHECK(calls == std::vector<std::string>{"slot 0.500000", "first sole"});
  first.disconnect();
  slot.disconnect();
  CHECK_FALSE(bus.has_subscribers<events::TrainEpochEnd>());
}

TEST_CASE("Keepers disconnected during a publish are skipped, the one left gets the event",
          "[events]") {
  events::EventBus bus;
  std::vector<std::string> calls;
  events::Subscription first, second;
  auto keeper = [&](const std::string& name) {
    return [&calls, name](const events::FitEnd&, std::shared_ptr<events::FitEnd> sole) {
      calls.push_back(name + (sole ? " sole" : " copy"));
    };
  };
  first = bus.keep<events::FitEnd>(keeper("first"));
  second = bus.keep<events::FitEnd>(keeper("second"));
  // A slot (they run before keepers) drops the first keeper: the second is then the only one.
  events::Subscription slot =
      bus.subscribe<events::FitEnd>([&](const events::FitEnd&) { first.disconnect(); });
  bus.publish_lazy<events::FitEnd>([] { return events::FitEnd{}; });
  CHECK(calls == std::vector<std::string>{"second sole"});
  slot.disconnect();

  // A keeper that drops the keeper after it: that one is not called any more.
  calls.clear();
  events::Subscription third = bus.keep<events::FitEnd>(keeper("third"));
  events::Subscription dropper =
      bus.keep<events::FitEnd>([&](const events::FitEnd&, std::shared_ptr<events::FitEnd>) {
        calls.push_back("dropper");
        third.disconnect();
      });
  // Reordered: second, third, dropper. The dropper runs last, so third still runs this time.
  bus.publish_lazy<events::FitEnd>([] { return events::FitEnd{}; });
  CHECK(calls == std::vector<std::string>{"second copy", "third copy", "dropper"});
  calls.clear();
  bus.publish_lazy<events::FitEnd>([] { return events::FitEnd{}; });
  CHECK(calls == std::vector<std::string>{"second copy", "dropper"});
  CHECK_FALSE(third.connected());
  CHECK(second.connected());
}

TEST_CASE("Keepers coming and going on another thread never make a slot miss an event",
          "[events]") {
  events::EventBus bus;
  std::atomic<int64_t> seen{0};
  events::Subscription slot =
      bus.subscribe<events::TrainBatchEnd>([&](const events::TrainBatchEnd&) { ++seen; });
  std::atomic<bool> done{false};
  std::atomic<int64_t> kept{0};
  std::thread churn([&] {
    while (!done.load()) {
      events::Subscription keeper = bus.keep<events::TrainBatchEnd>(
          [&](const events::TrainBatchEnd&, std::shared_ptr<events::TrainBatchEnd>) { ++kept; });
    }
  });
  constexpr int64_t kEvents = 200000;
  for (int64_t i = 0; i < kEvents; ++i) {
    bus.publish_lazy<events::TrainBatchEnd>([] { return events::TrainBatchEnd{}; });
  }
  done = true;
  churn.join();
  CHECK(seen.load() == kEvents);
}

TEST_CASE("Groups run in ascending order, ungrouped slots after them in subscription order",
          "[events]") {
  events::EventBus bus;
  std::string order;
  auto record = [&](char c) { return [&order, c](const events::TrainStart&) { order += c; }; };
  events::Subscription u1 = bus.subscribe<events::TrainStart>(record('u'));
  events::Subscription g5 = bus.subscribe<events::TrainStart>(5, record('5'));
  events::Subscription u2 = bus.subscribe<events::TrainStart>(record('v'));
  events::Subscription g1 = bus.subscribe<events::TrainStart>(1, record('1'));
  bus.publish(events::TrainStart{});
  CHECK(order == "15uv");
}

TEST_CASE("An exception thrown by a slot propagates out of publish", "[events]") {
  events::EventBus bus;
  events::Subscription s =
      bus.subscribe<events::Setup>([](const events::Setup&) { throw std::runtime_error("boom"); });
  CHECK_THROWS_WITH(bus.publish(events::Setup{}), "boom");
}

TEST_CASE("A Subscription may outlive its bus", "[events]") {
  events::Subscription survivor;
  {
    events::EventBus bus;
    survivor = bus.subscribe<events::Teardown>([](const events::Teardown&) {});
  }
  survivor.disconnect();
  CHECK_FALSE(survivor.connected());
}

TEST_CASE("A slot may subscribe and publish from inside a publish", "[events]") {
  events::EventBus bus;
  std::vector<events::Subscription> added;
  int inner = 0;
  events::Subscription outer =
      bus.subscribe<events::TrainEpochStart>([&](const events::TrainEpochStart&) {
        added.push_back(
            bus.subscribe<events::TrainEpochEnd>([&](const events::TrainEpochEnd&) { ++inner; }));
        bus.publish(events::TrainEpochEnd{});
      });
  bus.publish(events::TrainEpochStart{});
  CHECK(inner == 1);
}

TEST_CASE("Concurrent publishers and subscribers lose nothing and race on nothing",
          "[events][threads]") {
  // Run under ThreadSanitizer by scripts/test.sh. Waits on joins, never on sleeps.
  for (int publishers : {1, 2, 4}) {
    events::EventBus bus;
    std::atomic<int64_t> steady_count{0};
    events::Subscription steady =
        bus.subscribe<events::TrainBatchEnd>([&](const events::TrainBatchEnd&) {
          steady_count.fetch_add(1, std::memory_order_relaxed);
        });
    constexpr int kEventsPerPublisher = 2000;
    std::atomic<bool> publishing{true};

    std::thread churn([&] {
      // Subscribes and disconnects while the publishers run.
      std::atomic<int64_t> transient{0};
      while (publishing.load()) {
        events::Subscription s =
            bus.subscribe<events::TrainBatchEnd>([&](const events::TrainBatchEnd&) {
              transient.fetch_add(1, std::memory_order_relaxed);
            });
        events::Subscription other =
            bus.subscribe<events::TrainBatchStart>([](const events::TrainBatchStart&) {});
      }
    });
    std::vector<std::thread> threads;
    for (int p = 0; p < publishers; ++p) {
      threads.emplace_back([&] {
        for (int i = 0; i < kEventsPerPublisher; ++i) {
          bus.publish(events::TrainBatchEnd{{0, i}, {i, 1, 0}});
        }
      });
    }
    for (auto& t : threads) t.join();
    publishing = false;
    churn.join();

    CHECK(steady_count.load() == int64_t{publishers} * kEventsPerPublisher);
    CHECK_FALSE(bus.has_subscribers<events::TrainBatchStart>());
  }
}
