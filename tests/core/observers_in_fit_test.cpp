// Asynchronous observers in real runs: drained before every run returns, failures raised through
// on_exception as events::ObserverError, tensors only as snapshots.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/tensor_ref.h"
#include "core/trainer.h"
#include "tests/support/catch.h"
#include "tests/support/plays_rank.h"
#include "tests/support/recording.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace {

/// Counts training batches slowly: each takes 2 ms, far longer than a BoringModule step.
class SlowCounter : public events::Observer {
 public:
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>().add<events::Exception>().add<events::FitEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd&) override {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(2));  // the observer is slow, not the test
    ++batches;
  }
  void on_exception(const events::Exception& event) override { exception = event.message; }
  void on_fit_end(const events::FitEnd&) override { fit_ended = true; }
  int batches = 0;
  std::string exception;
  bool fit_ended = false;
};

class FailsAtBatch : public events::Observer {
 public:
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd& event) override {
    if (event.batch.batch_idx == 1) throw std::runtime_error("cannot reach the metrics server");
  }
};

TrainerOptions small(int64_t batches = 6) {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_train_batches(batches);
  options.limit_val_batches(0);
  return options;
}

}  // namespace

TEST_CASE("fit returns only after slow observers handled every event", "[core][observers]") {
  Trainer trainer(small(20));
  auto slow = std::make_shared<SlowCounter>();
  trainer.add_observer(slow);
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(slow->batches == 20);
  CHECK(slow->fit_ended);
}

TEST_CASE("A failing observer leaves fit as an ObserverError naming it, through on_exception",
          "[core][observers]") {
  auto log = std::make_shared<HookLog>();
  Trainer trainer(small(50), {std::make_shared<RecordingCallback>(log)});
  trainer.add_observer(std::make_shared<FailsAtBatch>());
  BoringModule module;
  RandomDataModule data;
  CHECK_THROWS_MATCHES(trainer.fit(module, data), events::ObserverError,
                       Catch::Matchers::Message(
                           "observer `(anonymous namespace)::FailsAtBatch` failed: cannot reach "
                           "the metrics server"));
  CHECK(log->back() ==
        "Callback.on_exception:observer `(anonymous namespace)::FailsAtBatch` failed: cannot reach "
        "the metrics server");
}

TEST_CASE("When fit leaves by an exception, observers still get everything, the Exception included",
          "[core][observers]") {
  class FailingStep : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      if (batch_idx == 4) throw std::runtime_error("NaN in batch 4");
      return BoringModule::training_step(batch, batch_idx);
    }
  };
  Trainer trainer(small(10));
  auto slow = std::make_shared<SlowCounter>();
  trainer.add_observer(slow);
  FailingStep module;
  RandomDataModule data;
  CHECK_THROWS_WITH(trainer.fit(module, data), "NaN in batch 4");
  CHECK(slow->batches == 4);
  CHECK(slow->exception == "NaN in batch 4");
  CHECK_FALSE(slow->fit_ended);
}

TEST_CASE("Observers that want tensors get CPU copies the trainer cannot change",
          "[core][observers]") {
  class Outputs : public events::Observer {
   public:
    bool wants_tensors() const override { return true; }
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>().add<events::BeforeBackward>();
    }
    void on_before_backward(const events::BeforeBackward& event) override {
      losses.push_back(tensor_of(event.loss));
    }
    void on_train_batch_end(const events::TrainBatchEnd& event) override {
      const StepOutput* outputs = step_output_of(event.outputs);
      REQUIRE(outputs != nullptr);
      REQUIRE(outputs->loss().defined());
      CHECK(outputs->loss().item<double>() == Approx(event.loss));
      CHECK_FALSE(outputs->loss().requires_grad());
    }
    std::vector<at::Tensor> losses;
  };
  class NoTensors : public events::Observer {
   public:
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd& event) override {
      empty = empty && !event.outputs.has_value();
    }
    bool empty = true;
  };
  Trainer trainer(small(5));
  auto outputs = std::make_shared<Outputs>();
  auto none = std::make_shared<NoTensors>();
  trainer.add_observer(outputs);
  trainer.add_observer(none);
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  REQUIRE(outputs->losses.size() == 5);
  CHECK(outputs->losses[0].device().is_cpu());
  CHECK(none->empty);
}

TEST_CASE("A dropping observer's losses are counted in its stats", "[core][observers]") {
  class Blocked : public events::Observer {
   public:
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::TrainBatchEnd>();
    }
    void on_train_batch_end(const events::TrainBatchEnd&) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  Trainer trainer(small(30));
  trainer.add_observer(std::make_shared<Blocked>(), events::ObserverOptions().capacity(1).when_full(
                                                        events::ObserverOptions::WhenFull::kDrop));
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  const events::ObserverStats stats = trainer.observer_pool()->stats()[0];
  CHECK(stats.dropped > 0);
  CHECK(stats.delivered + stats.dropped == 30);
}

namespace {

/// Blocks in its first on_train_batch_end until the test opens the gate (its state outlives it:
/// the pool thread may still run the hook after the test's trainer is gone).
struct Gate {
  std::mutex mutex;
  std::condition_variable changed;
  bool open = false;
  void wait() {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      open = true;
    }
    changed.notify_all();
  }
};

class StuckObserver : public events::Observer {
 public:
  explicit StuckObserver(std::shared_ptr<Gate> gate) : gate_(std::move(gate)) {}
  std::string name() const override { return "stuck-uploader"; }
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd&) override { gate_->wait(); }

 private:
  std::shared_ptr<Gate> gate_;
};

TrainerOptions with_short_observer_timeout() {
  TrainerOptions options = small(5);
  options.observer_stall_timeout(std::chrono::milliseconds(100));
  return options;
}

}  // namespace

TEST_CASE("A stuck observer makes fit fail with an error naming it, instead of hanging",
          "[core][observers]") {
  auto gate = std::make_shared<Gate>();
  {
    Trainer trainer(with_short_observer_timeout());
    trainer.add_observer(std::make_shared<StuckObserver>(gate));
    BoringModule module;
    RandomDataModule data;
    CHECK_THROWS_MATCHES(trainer.fit(module, data), events::ObserverError,
                         Catch::Matchers::Predicate<events::ObserverError>(
                             [](const events::ObserverError& e) {
                               return e.observer() == "stuck-uploader" &&
                                      std::string(e.what()).find(
                                          "handled none of its 5 waiting events for 100 ms") !=
                                          std::string::npos;
                             },
                             "names the stuck observer and the timeout"));
  }  // the Trainer's destructor gives up on it too, after the same timeout
  gate->release();
}

TEST_CASE("A stuck observer does not hold back the exception that ends fit", "[core][observers]") {
  class FailingStep : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      if (batch_idx == 2) throw std::runtime_error("NaN in batch 2");
      return BoringModule::training_step(batch, batch_idx);
    }
  };
  auto gate = std::make_shared<Gate>();
  {
    Trainer trainer(with_short_observer_timeout());
    trainer.add_observer(std::make_shared<StuckObserver>(gate));
    FailingStep module;
    RandomDataModule data;
    CHECK_THROWS_WITH(trainer.fit(module, data), "NaN in batch 2");
  }
  gate->release();
}

namespace {

/// What Setup and FitStart told an observer about its process, as "<stage or fit_start> <global
/// rank> <local rank> <world size>".
class RankSeen : public events::Observer {
 public:
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::Setup>().add<events::FitStart>();
  }
  void setup(const events::Setup& event) override {
    note(std::string(to_string(event.stage)), event.global_rank, event.local_rank,
         event.world_size);
  }
  void on_fit_start(const events::FitStart& event) override {
    note("fit_start", event.global_rank, event.local_rank, event.world_size);
  }
  std::vector<std::string> seen;  // read once the run returned: it drained the observers

 private:
  void note(const std::string& what, int64_t global_rank, int64_t local_rank, int64_t world_size) {
    seen.push_back(what + " " + std::to_string(global_rank) + " " + std::to_string(local_rank) +
                   " " + std::to_string(world_size));
  }
};

}  // namespace

TEST_CASE("An observer on every rank learns its rank and the world size from Setup and FitStart",
          "[core][observers]") {
  const auto [world, rank, local] = GENERATE(table<int, int, int>({{2, 1, 1}, {4, 3, 1}}));
  INFO("rank " << rank << " of " << world << ", local rank " << local);
  TrainerOptions options = small(3);
  options.enable_checkpointing(false).enable_model_summary(false).num_sanity_val_steps(0);
  options.strategy(std::make_shared<PlaysRank>(world, rank, local));
  Trainer trainer(options);
  REQUIRE(trainer.global_rank() == rank);
  auto observer = std::make_shared<RankSeen>();
  trainer.add_observer(observer, events::ObserverOptions().every_rank(true));
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  trainer.validate(module, data);
  trainer.test(module, data);
  trainer.predict(module, data);
  const std::string place =
      " " + std::to_string(rank) + " " + std::to_string(local) + " " + std::to_string(world);
  CHECK(observer->seen == std::vector<std::string>{"fit" + place, "fit_start" + place,
                                                   "validate" + place, "test" + place,
                                                   "predict" + place});
}
