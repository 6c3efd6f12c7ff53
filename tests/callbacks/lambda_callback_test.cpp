// LambdaCallback: each function runs at its hook, with the hook's arguments, in the callback's
// place in the order; hooks without a function do nothing; what a function throws reaches
// on_exception.
#include "callbacks/lambda_callback.h"

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/catch.h"

#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using callbacks::LambdaCallback;
using callbacks::LambdaHooks;
using Catch::Matchers::Contains;

TEST_CASE("LambdaCallback calls each function at its hook with the hook's arguments",
          "[callbacks][lambda]") {
  std::vector<std::string> calls;
  std::vector<int64_t> batch_ends;
  std::vector<bool> losses_defined;
  auto hooks =
      LambdaHooks()
          .setup([&](Trainer&, Module&, Stage stage) {
            calls.push_back("setup:" + std::string(to_string(stage)));
          })
          .on_fit_start([&](Trainer&, Module&) { calls.push_back("on_fit_start"); })
          .on_train_epoch_end([&](Trainer& trainer, Module&) {
            calls.push_back("on_train_epoch_end:" + std::to_string(trainer.current_epoch()));
          })
          .on_train_batch_end(
              [&](Trainer&, Module&, const StepOutput& outputs, const Batch&, int64_t batch_idx) {
                CHECK(outputs.has_loss());
                batch_ends.push_back(batch_idx);
              })
          .on_before_backward([&](Trainer&, Module&, const at::Tensor& loss) {
            losses_defined.push_back(loss.defined());
          })
          .on_validation_end([&](Trainer&, Module&) { calls.push_back("on_validation_end"); })
          .on_fit_end([&](Trainer&, Module&) { calls.push_back("on_fit_end"); })
          .teardown([&](Trainer&, Module&, Stage stage) {
            calls.push_back("teardown:" + std::string(to_string(stage)));
          });
  auto callback = std::make_shared<LambdaCallback>(hooks);
  BoringModule module;
  RandomDataModule data(3, 1);
  Trainer trainer(testing::trainer_options().max_epochs(2).num_sanity_val_steps(0), {callback});
  trainer.fit(module, data);

  CHECK(calls == std::vector<std::string>{"setup:fit", "on_fit_start", "on_validation_end",
                                          "on_train_epoch_end:0", "on_validation_end",
                                          "on_train_epoch_end:1", "on_fit_end", "teardown:fit"});
  CHECK(batch_ends == std::vector<int64_t>{0, 1, 2, 0, 1, 2});
  CHECK(losses_defined == std::vector<bool>(6, true));
}

TEST_CASE("LambdaCallback with no functions changes nothing", "[callbacks][lambda]") {
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(testing::trainer_options().max_epochs(1),
                  {std::make_shared<LambdaCallback>(LambdaHooks())});
  trainer.fit(module, data);
  trainer.validate(module, data);
  trainer.test(module, data);
  CHECK(trainer.predict(module, data).size() == 4);
  CHECK(trainer.global_step() == 4);
}

TEST_CASE("What a LambdaCallback function throws reaches on_exception", "[callbacks][lambda]") {
  std::string seen;
  auto failing = std::make_shared<LambdaCallback>(
      LambdaHooks().on_train_batch_start([](Trainer&, Module&, const Batch&, int64_t batch_idx) {
        if (batch_idx == 2) throw std::runtime_error("bad batch 2");
      }));
  auto watcher = std::make_shared<LambdaCallback>(LambdaHooks().on_exception(
      [&](Trainer&, Module&, const std::exception& error) { seen = error.what(); }));
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(testing::trainer_options().max_epochs(1).num_sanity_val_steps(0),
                  {failing, watcher});
  CHECK_THROWS_WITH(trainer.fit(module, data), Contains("bad batch 2"));
  CHECK(seen == "bad batch 2");
  CHECK(trainer.global_step() == 2);
}

TEST_CASE("LambdaCallback reaches every hook of Callback", "[callbacks][lambda]") {
  // Every hook in the list gets a function that notes its name; fit (saving a checkpoint),
  // validate, test, predict, and a resumed fit that fails then fire them all.
  std::set<std::string> fired;
  LambdaHooks hooks;
#define TRAINBUS_TEST_NOTE(name, parameters, arguments) \
  hooks.name([&] TRAINBUS_LAMBDA_PREPEND parameters { fired.insert(#name); });
  TRAINBUS_LAMBDA_HOOKS(TRAINBUS_TEST_NOTE)
#undef TRAINBUS_TEST_NOTE
  std::set<std::string> listed;
#define TRAINBUS_TEST_LIST(name, parameters, arguments) listed.insert(#name);
  TRAINBUS_LAMBDA_HOOKS(TRAINBUS_TEST_LIST)
#undef TRAINBUS_TEST_LIST
  CHECK(listed.size() == 38);  // every virtual hook of core/callback.h

  TempDir dir;
  const std::string checkpoint = (dir.path() / "epoch0.ckpt").string();
  auto saver = std::make_shared<LambdaCallback>(
      LambdaHooks().on_train_epoch_end([&](Trainer& trainer, Module&) {
        if (!std::filesystem::exists(checkpoint)) trainer.save_checkpoint(checkpoint);
      }));
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(testing::trainer_options().max_epochs(1),
                  {std::make_shared<LambdaCallback>(hooks), saver});
  trainer.fit(module, data);
  trainer.validate(module, data);
  trainer.test(module, data);
  trainer.predict(module, data);
  auto failing = std::make_shared<LambdaCallback>(LambdaHooks().on_train_batch_start(
      [](Trainer&, Module&, const Batch&, int64_t) { throw std::runtime_error("stop here"); }));
  Trainer resumed(testing::trainer_options().max_epochs(2),
                  {std::make_shared<LambdaCallback>(hooks), failing});
  CHECK_THROWS_WITH(resumed.fit(module, data, FitOptions().ckpt_path(checkpoint)), "stop here");

  std::vector<std::string> missing;
  std::set_difference(listed.begin(), listed.end(), fired.begin(), fired.end(),
                      std::back_inserter(missing));
  CHECK(missing.empty());
  CAPTURE(missing);
}
