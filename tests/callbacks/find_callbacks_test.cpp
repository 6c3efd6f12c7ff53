// Lightning's trainer.checkpoint_callback(s) and early_stopping_callback(s): a callback (or the
// code after fit) finds the built-in ones among the trainer's callbacks, in the trainer's order.
#include <memory>
#include <string>

#include "tests/support/catch.h"

#include "callbacks/early_stopping.h"
#include "callbacks/lambda_callback.h"
#include "callbacks/model_checkpoint.h"
#include "callbacks/on_exception_checkpoint.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;

TEST_CASE("A callback finds the trainer's checkpoint and early-stopping callbacks",
          "[callbacks][find]") {
  TempDir dir;
  auto on_exception = std::make_shared<OnExceptionCheckpoint>(dir.path().string());
  auto best = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath((dir.path() / "best").string()).monitor("val_loss"));
  auto every = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath((dir.path() / "every").string()));
  auto early = std::make_shared<EarlyStopping>(EarlyStoppingOptions().monitor("val_loss"));
  std::string best_seen_at_train_end;
  auto reader =
      std::make_shared<LambdaCallback>(LambdaHooks().on_train_end([&](Trainer& trainer, Module&) {
        REQUIRE(checkpoint_callback(trainer) == best.get());
        best_seen_at_train_end = checkpoint_callback(trainer)->best_model_path();
      }));

  Trainer trainer(testing::trainer_options().enable_checkpointing(true).max_epochs(2),
                  {on_exception, best, reader, every, early});
  // OnExceptionCheckpoint is a checkpoint callback but not a ModelCheckpoint (as Lightning's).
  CHECK(checkpoint_callbacks(trainer) == std::vector<ModelCheckpoint*>{best.get(), every.get()});
  CHECK(early_stopping_callback(trainer) == early.get());
  CHECK(early_stopping_callbacks(trainer) == std::vector<EarlyStopping*>{early.get()});
  CHECK(trainer.find_callback<CheckpointCallback>() == on_exception.get());
  CHECK(trainer.find_callbacks<CheckpointCallback>().size() == 3);

  BoringModule module;
  RandomDataModule data(4, 1);
  trainer.fit(module, data);
  CHECK_FALSE(best_seen_at_train_end.empty());
  CHECK(best_seen_at_train_end == best->best_model_path());

  Trainer plain(testing::trainer_options());
  CHECK(checkpoint_callback(plain) == nullptr);
  CHECK(early_stopping_callback(plain) == nullptr);
  CHECK(checkpoint_callbacks(plain).empty());
}
