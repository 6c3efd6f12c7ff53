// Batches of named tensors: the Batch type itself, batch_size_of as Lightning's
// extract_batch_size, a TensorDataLoader over named tensors, and a three-tensor batch through
// fit, validate, test, predict, the hooks, a recording and a resume from a checkpoint.
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "callbacks/model_checkpoint.h"
#include "core/trainer.h"
#include "data/batch.h"
#include "data/data_loader.h"
#include "data/data_module.h"
#include "record/event_codec.h"
#include "record/record_file.h"
#include "record/recorder.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::TempDir;

namespace {

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("Batch keeps data and target as fields and other tensors by name", "[data][batch]") {
  const at::Tensor x = torch::ones({4, 3});
  const at::Tensor y = torch::zeros({4}, torch::kLong);

  SECTION("(data, target), as LibTorch's Example") {
    const Batch batch(x, y);
    CHECK(batch.data.equal(x));
    CHECK(batch.target.equal(y));
    CHECK(batch["data"].equal(x));
    CHECK(batch.names() == Names{"data", "target"});
  }
  SECTION("a predict batch without targets has only data") {
    const Batch batch(x, at::Tensor());
    CHECK(batch.names() == Names{"data"});
    CHECK_FALSE(batch.contains("target"));
  }
  SECTION("named tensors keep their order; data and target stay undefined") {
    const Batch batch{{"image", x}, {"label", y}, {"mask", torch::ones({4, 1})}};
    CHECK(batch.names() == Names{"image", "label", "mask"});
    CHECK(batch.at("label").equal(y));
    CHECK_FALSE(batch.data.defined());
    CHECK(batch.size() == 3);
  }
  SECTION("a name that is not there names the ones that are") {
    const Batch batch{{"tokens", x}, {"lengths", y}};
    CHECK_THROWS_WITH(batch.at("label"),
                      "Batch: no tensor named `label`; this batch has `tokens`, `lengths`");
    CHECK_THROWS_AS(batch.at("label"), std::out_of_range);
  }
  SECTION("a name given twice is refused") {
    CHECK_THROWS_AS((Batch{{"image", x}, {"image", x}}), std::invalid_argument);
  }
  SECTION("set replaces in place and adds at the end; fields assigned directly come first") {
    Batch batch{{"image", x}};
    batch.set("label", y).set("image", x * 2);
    CHECK(batch.names() == Names{"image", "label"});
    CHECK(batch["image"].equal(x * 2));
    Batch fields;
    fields.target = y;
    fields.set("extra", x);
    CHECK(fields.names() == Names{"target", "extra"});
  }
  SECTION("to_device keeps the names and their order") {
    const Batch batch{{"mask", torch::ones({2})}, {"image", x}};
    const Batch moved = data::to_device(batch, c10::Device(c10::kCPU));
    CHECK(moved.names() == Names{"mask", "image"});
  }
}

TEST_CASE("batch_size_of a dict batch is the first tensor's first dimension, as Lightning's",
          "[data][batch]") {
  // Lightning's utilities/data.py extract_batch_size walks a Mapping's values in order and takes
  // the first tensor it meets: len(tensor), or 1 for a 0-dim tensor. So
  // extract_batch_size({"tokens": zeros(5, 7), "lengths": zeros(3)}) == 5 (it warns about the
  // ambiguity, and keeps the first).
  CHECK(data::batch_size_of(
            Batch{{"tokens", torch::zeros({5, 7})}, {"lengths", torch::zeros({3})}}) == 5);
  CHECK(data::batch_size_of(
            Batch{{"lengths", torch::zeros({3})}, {"tokens", torch::zeros({5, 7})}}) == 3);
  // extract_batch_size({"scale": tensor(2.0), "x": zeros(4)}) == 1: the scalar comes first.
  CHECK(data::batch_size_of(Batch{{"scale", torch::tensor(2.0)}, {"x", torch::zeros({4})}}) == 1);
  CHECK(data::batch_size_of(Batch(torch::zeros({6, 2}), torch::zeros({6}))) == 6);
  // No tensor at all: 1 (Lightning raises "We could not infer the batch_size"; trainbus sizes
  // every batch, also one nobody logs from).
  CHECK(data::batch_size_of(Batch()) == 1);
}

TEST_CASE("TensorDataLoader over named tensors gives rows of each, shuffled alike",
          "[data][batch]") {
  const at::Tensor ids = torch::arange(10);
  const at::Tensor twice = ids * 2;
  data::TensorDataLoader loader(Batch{{"ids", ids}, {"twice", twice}},
                                data::DataLoaderOptions().batch_size(4).shuffle(true).seed(7));
  CHECK(loader.num_batches() == 3);
  CHECK(loader.num_samples() == 10);
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    const Batch batch = loader.batch(i);
    CHECK(batch.names() == Names{"ids", "twice"});
    CHECK(batch["twice"].equal(batch["ids"] * 2));  // the same rows of both
  }
  CHECK_THROWS_WITH(data::TensorDataLoader(Batch{{"ids", ids}, {"short", torch::zeros({3})}},
                                           data::DataLoaderOptions()),
                    Catch::Contains("`short` has 3 samples but `ids` has 10"));
  CHECK_THROWS_WITH(data::TensorDataLoader(Batch(), data::DataLoaderOptions()),
                    Catch::Contains("has no tensors"));
}

namespace {

// Batches of "image", "label" and "mask": the mask selects the samples the loss counts.
class MaskedModule : public Module {
 public:
  MaskedModule() { layer = register_module("layer", torch::nn::Linear(8, 3)); }

  at::Tensor loss(const Batch& batch) {
    const at::Tensor per_sample = torch::nn::functional::cross_entropy(
        layer(batch["image"]), batch["label"],
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    const at::Tensor mask = batch["mask"];
    return (per_sample * mask).sum() / mask.sum().clamp_min(1);
  }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    seen_names = batch.names();
    return loss(batch);
  }
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    log("val_loss", loss(batch));
    return {};
  }
  StepOutput test_step(const Batch& batch, int64_t batch_idx) override {
    log("test_loss", loss(batch));
    return {};
  }
  at::Tensor predict_step(const Batch& batch, int64_t batch_idx) override {
    return layer(batch["image"]).argmax(1);
  }
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
  }

  torch::nn::Linear layer{nullptr};
  Names seen_names;
};

class MaskedData : public DataModule {
 public:
  MaskedData() {
    torch::manual_seed(3);
    samples_ = Batch{{"image", torch::randn({24, 8})},
                     {"label", torch::randint(0, 3, {24}, torch::kLong)},
                     {"mask", (torch::rand({24}) > 0.3).to(torch::kFloat)}};
  }
  std::shared_ptr<DataLoader> train_dataloader() override { return loader(true); }
  std::shared_ptr<DataLoader> val_dataloader() override { return loader(false); }
  std::shared_ptr<DataLoader> test_dataloader() override { return loader(false); }
  std::shared_ptr<DataLoader> predict_dataloader() override { return loader(false); }

 private:
  std::shared_ptr<DataLoader> loader(bool shuffle) const {
    return std::make_shared<data::TensorDataLoader>(
        samples_, data::DataLoaderOptions().batch_size(5).shuffle(shuffle).seed(11));
  }
  Batch samples_;
};

// The names and sizes each batch hook sees.
class BatchNames : public Callback {
 public:
  void on_train_batch_start(Trainer&, Module&, const Batch& batch, int64_t) override {
    train.push_back(batch.names());
  }
  void on_validation_batch_end(Trainer&, Module&, const StepOutput&, const Batch& batch,
                               int64_t) override {
    validation.push_back(batch.names());
  }
  void on_test_batch_start(Trainer&, Module&, const Batch& batch, int64_t) override {
    test.push_back(batch.names());
  }
  void on_predict_batch_end(Trainer&, Module&, const at::Tensor&, const Batch& batch,
                            int64_t) override {
    predict.push_back(batch.names());
  }
  std::vector<Names> train, validation, test, predict;
};

}  // namespace

TEST_CASE("A batch of three named tensors goes through fit, validate, test, predict and resume",
          "[data][batch]") {
  TempDir dir;
  const Names three{"image", "label", "mask"};
  const std::string recording = dir.file("events.tbrec");
  MaskedData data;
  auto names = std::make_shared<BatchNames>();
  auto checkpoint = std::make_shared<callbacks::ModelCheckpoint>(
      callbacks::ModelCheckpointOptions()
          .dirpath(dir.file("ckpt"))
          .save_last(callbacks::ModelCheckpointOptions::SaveLast::kCopy));
  {
    TrainerOptions options = testing::trainer_options();
    options.max_epochs(2).enable_checkpointing(true).enable_model_summary(false);
    Trainer trainer(options, {names, checkpoint});
    trainer.add_observer(
        std::make_shared<record::Recorder>(record::RecorderOptions().path(recording)));
    MaskedModule module;
    trainer.fit(module, data);
    CHECK(module.seen_names == three);
    CHECK(trainer.callback_metrics().count("val_loss") == 1);
    CHECK(trainer.validate(module, data).count("val_loss") == 1);
    CHECK(trainer.test(module, data).count("test_loss") == 1);
    const std::vector<at::Tensor> predictions = trainer.predict(module, data);
    REQUIRE(predictions.size() == 5);  // 24 samples in batches of 5
    CHECK(predictions.back().size(0) == 4);
  }
  REQUIRE_FALSE(names->train.empty());
  for (const auto& seen : {names->train, names->validation, names->test, names->predict}) {
    REQUIRE_FALSE(seen.empty());
    for (const Names& each : seen) CHECK(each == three);
  }

  // The recording keeps each batch's index and size (the first tensor's rows), not its tensors.
  record::RecordingReader reader(recording);
  record::v1::Envelope envelope;
  std::vector<int64_t> sizes;
  while (reader.next(envelope)) {
    if (record::event_name(envelope) == "train_batch_start")
      sizes.push_back(envelope.train_batch_start().batch().batch_size());
  }
  CHECK(sizes == std::vector<int64_t>{5, 5, 5, 5, 4, 5, 5, 5, 5, 4});

  // Resuming from the last checkpoint trains on the same named batches.
  {
    TrainerOptions options = testing::trainer_options();
    options.max_epochs(3).enable_checkpointing(true).enable_model_summary(false);
    auto resumed_names = std::make_shared<BatchNames>();
    Trainer trainer(options, {resumed_names,
                              std::make_shared<callbacks::ModelCheckpoint>(
                                  callbacks::ModelCheckpointOptions().dirpath(dir.file("ckpt")))});
    MaskedModule module;
    trainer.fit(module, data, FitOptions().ckpt_path(checkpoint->last_model_path()));
    CHECK(trainer.current_epoch() == 3);
    REQUIRE(resumed_names->train.size() == 5);  // the third epoch only
    for (const Names& each : resumed_names->train) CHECK(each == three);
  }
}
