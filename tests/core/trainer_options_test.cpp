// Bad Trainer options fail when the Trainer is built, naming the option and the fix.
#include "tests/support/catch.h"

#include <torch/cuda.h>

#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

void expect_refused(void (*mutate)(TrainerOptions&), const std::string& message) {
  TrainerOptions options;
  mutate(options);
  CHECK_THROWS_AS(Trainer(options), MisconfigurationError);
  CHECK_THROWS_WITH(Trainer(options), Contains(message));
}

}  // namespace

TEST_CASE("Trainer refuses bad options, naming them", "[core][options]") {
  expect_refused([](TrainerOptions& o) { o.max_epochs(-2); }, "`max_epochs` must be >= -1");
  expect_refused([](TrainerOptions& o) { o.max_steps(-5); }, "`max_steps` must be >= -1");
  expect_refused([](TrainerOptions& o) { o.min_epochs(-1); }, "`min_epochs` must be >= 0");
  expect_refused([](TrainerOptions& o) { o.limit_train_batches(1.5); },
                 "`limit_train_batches` as a fraction must be in [0.0, 1.0]");
  expect_refused([](TrainerOptions& o) { o.limit_val_batches(-3); },
                 "`limit_val_batches` must be >= 0 batches");
  expect_refused([](TrainerOptions& o) { o.check_val_every_n_epoch(0); },
                 "`check_val_every_n_epoch` must be >= 1");
  expect_refused([](TrainerOptions& o) { o.val_check_interval(0.0); },
                 "`val_check_interval` as a fraction");
  expect_refused([](TrainerOptions& o) { o.val_check_interval(0); },
                 "`val_check_interval` must be >= 1 batch");
  expect_refused(
      [](TrainerOptions& o) {
        o.check_val_every_n_epoch().reset();
        o.val_check_interval(0.5);
      },
      "must be an integer number of batches when `check_val_every_n_epoch` is unset");
  expect_refused([](TrainerOptions& o) { o.num_sanity_val_steps(-2); },
                 "`num_sanity_val_steps` must be >= -1");
  expect_refused([](TrainerOptions& o) { o.accumulate_grad_batches(0); },
                 "`accumulate_grad_batches` must be >= 1");
  expect_refused([](TrainerOptions& o) { o.gradient_clip_val(-1.0); },
                 "`gradient_clip_val` must be >= 0");
  expect_refused([](TrainerOptions& o) { o.log_every_n_steps(0); },
                 "`log_every_n_steps` must be >= 1");
  expect_refused([](TrainerOptions& o) { o.observer_kick_interval(std::chrono::microseconds(0)); },
                 "`observer_kick_interval` must be positive and at most 1 s");
  expect_refused([](TrainerOptions& o) { o.observer_kick_interval(std::chrono::seconds(2)); },
                 "got 2000000 us");
  expect_refused([](TrainerOptions& o) { o.observer_stall_timeout(std::chrono::milliseconds(-1)); },
                 "`observer_stall_timeout` must be positive, got -1 ms");
}

TEST_CASE("BatchLimit reads integers as batches and floating-point values as fractions",
          "[core][options]") {
  CHECK(BatchLimit(1).apply(100, "x") == 1);
  CHECK(BatchLimit(1.0).apply(100, "x") == 100);
  CHECK(BatchLimit(0.25).apply(100, "x") == 25);
  CHECK(BatchLimit(500).apply(100, "x") == 100);
  CHECK(BatchLimit(0).apply(100, "x") == 0);
  CHECK_THROWS_WITH(BatchLimit(0.001).apply(100, "limit_val_batches"),
                    Contains("0.001 * 100 batches < 1; increase `limit_val_batches`"));
}

TEST_CASE("A device this LibTorch cannot use is refused at the start of a run", "[core][options]") {
  // One past the last CUDA device: cuda:0 on a CPU-only LibTorch, cuda:N on a machine with N.
  const auto count =
      static_cast<int>(torch::cuda::is_available() ? torch::cuda::device_count() : 0);
  TrainerOptions options = testing::trainer_options();
  options.device(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(count)));
  Trainer trainer(options);
  BoringModule module;
  RandomDataModule data;
  const std::string expected =
      count == 0 ? "device `cuda:0` requested, but this LibTorch has no usable CUDA"
                 : "requested, but this machine has " + std::to_string(count) + " CUDA device(s)";
  CHECK_THROWS_WITH(trainer.fit(module, data), Contains(expected));
}

TEST_CASE("fit trains on the device it is given, CUDA where LibTorch has it", "[core][options]") {
  // On this CPU-only LibTorch the device is the CPU; with CUDA it is cuda:0. Either way the
  // weights live there and change.
  const c10::Device device =
      torch::cuda::is_available() ? c10::Device("cuda:0") : c10::Device("cpu");
  TrainerOptions options = testing::trainer_options();
  options.device(device);
  options.max_epochs(1);
  options.limit_train_batches(4);
  options.limit_val_batches(0);
  Trainer trainer(options);
  BoringModule module;
  const at::Tensor before = module.layer->weight.detach().clone();
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(module.layer->weight.device() == device);
  CHECK_FALSE(module.layer->weight.detach().cpu().equal(before));
  CHECK(trainer.global_step() == 4);
}
