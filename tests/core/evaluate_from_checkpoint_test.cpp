// Checkpoints after fit, as Lightning ports need them: validate/test/predict with ckpt_path
// "best", "last" or a path, and load_from_checkpoint building a module from its saved
// hyper-parameters.
#include <memory>

#include "callbacks/model_checkpoint.h"
#include "core/load_from_checkpoint.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::TempDir;

namespace {

// A BoringModule whose layer width is a hyper-parameter, as a Lightning module's __init__ args.
class WideBoring : public testing::BoringModule {
 public:
  explicit WideBoring(const StateDict& hparams) {
    StateDict saved = hparams;
    if (!saved.contains("note")) saved.insert("note", "built from hparams");
    save_hyperparameters(saved);
    built_from_hparams = true;
  }
  WideBoring() : WideBoring(StateDict()) { built_from_hparams = false; }
  bool built_from_hparams = false;
};

bool same_weights(Module& a, Module& b) {
  const auto pa = a.parameters();
  const auto pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    if (!pa[i].equal(pb[i])) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("validate and test with ckpt_path best or last evaluate that checkpoint's weights",
          "[core][checkpoint][evaluate]") {
  TempDir dir;
  auto checkpoints = std::make_shared<callbacks::ModelCheckpoint>(
      callbacks::ModelCheckpointOptions()
          .dirpath(dir.file("ckpt"))
          .monitor("val_loss")
          .save_top_k(1)
          .save_last(callbacks::ModelCheckpointOptions::SaveLast::kCopy));
  Trainer trainer(testing::trainer_options()
                      .enable_checkpointing(true)
                      .max_epochs(3)
                      .limit_train_batches(4)
                      .limit_val_batches(2),
                  {checkpoints});
  testing::BoringModule trained;
  testing::RandomDataModule data;
  trainer.fit(trained, data);
  const double best_score = checkpoints->best_model_score().value();

  // Lightning (trainer.validate(ckpt_path="best")): the best checkpoint's weights are loaded into
  // the module given, and the metrics are those weights' own.
  testing::BoringModule fresh;
  const Metrics best = trainer.validate(fresh, data, EvaluateOptions().ckpt_path("best"));
  CHECK(trainer.checkpoints().evaluated_from() == checkpoints->best_model_path());
  CHECK(best.at("val_loss") == Approx(best_score).epsilon(1e-6));

  testing::BoringModule other;
  trainer.test(other, data, EvaluateOptions().ckpt_path("last"));
  CHECK(trainer.checkpoints().evaluated_from() == checkpoints->find_last_checkpoint());
  CHECK(same_weights(other, trained));  // last.ckpt holds the final weights

  // Without ckpt_path: the module's weights as they are.
  testing::BoringModule untouched;
  trainer.validate(untouched, data);
  CHECK(trainer.checkpoints().evaluated_from().empty());
  CHECK_FALSE(same_weights(untouched, trained));

  std::vector<at::Tensor> predictions =
      trainer.predict(untouched, data, PredictOptions().ckpt_path("last"));
  CHECK(same_weights(untouched, trained));
}

TEST_CASE("ckpt_path best without a checkpoint callback, or a missing path, is named",
          "[core][checkpoint][evaluate]") {
  TempDir dir;
  Trainer trainer(testing::trainer_options().limit_val_batches(1));
  testing::BoringModule module;
  testing::RandomDataModule data;
  CHECK_THROWS_WITH(trainer.validate(module, data, EvaluateOptions().ckpt_path("best")),
                    Catch::Contains("ckpt_path=\"best\" needs a checkpoint callback"));
  CHECK_THROWS_WITH(trainer.test(module, data, EvaluateOptions().ckpt_path(dir.file("nope.ckpt"))),
                    Catch::Contains("nope.ckpt"));
}

TEST_CASE("load_from_checkpoint builds the module from its saved hyper-parameters and weights",
          "[core][checkpoint][evaluate]") {
  TempDir dir;
  StateDict hparams;
  hparams.insert("width", int64_t{32});
  WideBoring trained(hparams);
  Trainer trainer(
      testing::trainer_options().max_epochs(1).limit_train_batches(3).limit_val_batches(0));
  testing::RandomDataModule data;
  trainer.fit(trained, data);
  const std::string path = dir.file("final.ckpt");
  // A module attached to a finished fit is saved through a validate run (the module is attached).
  class SaveAtValidationEnd : public Callback {
   public:
    explicit SaveAtValidationEnd(std::string path) : path_(std::move(path)) {}
    void on_validation_end(Trainer& trainer, Module&) override { trainer.save_checkpoint(path_); }
    std::string path_;
  };
  Trainer saver(testing::trainer_options().limit_val_batches(1),
                {std::make_shared<SaveAtValidationEnd>(path)});
  saver.validate(trained, data);

  // Lightning: cls(**checkpoint["hyper_parameters"]), then the state dict.
  std::shared_ptr<WideBoring> loaded = load_from_checkpoint<WideBoring>(path);
  CHECK(loaded->built_from_hparams);
  CHECK(loaded->hparams().at("width").toInt() == 32);
  CHECK(loaded->hparams().at("note").toStringRef() == "built from hparams");
  CHECK(same_weights(*loaded, trained));
  CHECK_FALSE(loaded->is_training());  // ready to evaluate

  // A module the weights do not fit is named with the checkpoint.
  class Wider : public Module {
   public:
    Wider() { register_module("layer", torch::nn::Linear(64, 2)); }
    StepOutput training_step(const Batch&, int64_t) override { return {}; }
    OptimizerConfig configure_optimizers() override { return {}; }
  };
  CHECK_THROWS_WITH(load_from_checkpoint<Wider>(path),
                    Catch::Contains(path) && Catch::Contains("does not fit") &&
                        Catch::Contains("layer.weight has shape [2, 32] in the checkpoint, "
                                        "[2, 64] in the module"));

  // Lightning's strict=False: a module with a new head takes the weights that match by name and
  // keeps the head as built (fine-tuning); strict (the default) names the head.
  class WithHead : public WideBoring {
   public:
    explicit WithHead(const StateDict& hparams) : WideBoring(hparams) {
      head = register_module("head", torch::nn::Linear(2, 3));
    }
    torch::nn::Linear head{nullptr};
  };
  CHECK_THROWS_WITH(
      load_from_checkpoint<WithHead>(path),
      Catch::Contains("Missing key(s) in state_dict: \"head.bias\", \"head.weight\""));
  std::shared_ptr<WithHead> fine_tuned =
      load_from_checkpoint<WithHead>(path, LoadFromCheckpointOptions().strict(false));
  CHECK(fine_tuned->layer->weight.equal(trained.layer->weight));
  CHECK(fine_tuned->head->weight.sizes() == c10::IntArrayRef({3, 2}));

  // Lightning's **kwargs: hyper-parameters over the saved ones, before the module is built;
  // map_location: where it lands.
  StateDict overrides;
  overrides.insert("note", "given when loading");
  std::shared_ptr<WideBoring> overridden = load_from_checkpoint<WideBoring>(
      path, LoadFromCheckpointOptions().hparams(overrides).map_location(c10::Device("cpu")));
  CHECK(overridden->hparams().at("note").toStringRef() == "given when loading");
  CHECK(overridden->hparams().at("width").toInt() == 32);
  CHECK(overridden->device() == c10::Device("cpu"));
  CHECK(same_weights(*overridden, trained));
}
