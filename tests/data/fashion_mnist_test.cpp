// Fashion-MNIST from Debian's dataset-fashion-mnist, and a short real fit on a slice of it.
#include "data/fashion_mnist.h"

#include "tests/support/catch.h"
#include "tests/support/trainer_options.h"

#include "apps/fashion_classifier.h"
#include "core/trainer.h"

using namespace trainbus;

TEST_CASE("read_fashion_mnist reads Debian's files", "[data][fashion]") {
  const data::FashionMnistSplit test =
      data::read_fashion_mnist(data::kFashionMnistDir, /*train=*/false);
  CHECK(test.images.sizes() == at::IntArrayRef({10000, 1, 28, 28}));
  CHECK(test.labels.sizes() == at::IntArrayRef({10000}));
  CHECK(test.labels.min().item<int64_t>() == 0);
  CHECK(test.labels.max().item<int64_t>() == 9);
  // The test split is balanced: 1000 images per class.
  CHECK(test.labels.bincount().eq(1000).all().item<bool>());
}

TEST_CASE("The data module splits 55000/5000 and normalises the pixels", "[data][fashion]") {
  data::FashionMnistDataModule data;
  data.setup(Stage::kFit);
  auto train = data.train_dataloader();
  auto val = data.val_dataloader();
  CHECK(train->num_samples() == 55000);
  CHECK(val->num_samples() == 5000);
  const Batch batch = val->batch(0);
  CHECK(batch.data.sizes() == at::IntArrayRef({1000, 1, 28, 28}));
  CHECK(std::abs(batch.data.mean().item<double>()) < 0.1);  // normalised with the training mean
}

TEST_CASE("The data module's batch sizes can be changed by name, as the BatchSizeFinder does",
          "[data][fashion]") {
  data::FashionMnistDataModule data;
  data.setup(Stage::kFit);
  CHECK(data.batch_arg("batch_size") == 64);
  CHECK(data.batch_arg("eval_batch_size") == 1000);
  CHECK_FALSE(data.batch_arg("bs").has_value());
  REQUIRE(data.set_batch_arg("batch_size", 500));
  REQUIRE(data.set_batch_arg("eval_batch_size", 2500));
  CHECK(data.train_dataloader()->num_batches() == 110);  // 55000 / 500
  CHECK(data.val_dataloader()->num_batches() == 2);      // 5000 / 2500
  CHECK_FALSE(data.set_batch_arg("bs", 8));
  CHECK_THROWS_WITH(data.set_batch_arg("batch_size", 0),
                    Catch::Matchers::Contains("batch_size must be >= 1, got 0"));
}

TEST_CASE("A short fit on a slice of Fashion-MNIST learns", "[data][fashion]") {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_train_batches(200);
  options.limit_val_batches(2);
  options.limit_test_batches(3);
  options.seed(0);
  Trainer trainer(options);
  apps::FashionClassifier model;
  data::FashionMnistDataModule data;
  trainer.fit(model, data);
  CHECK(trainer.global_step() == 200);
  CHECK(trainer.callback_metrics().at("val_acc") > 0.7);
  const Metrics tested = trainer.test(model, data);
  CHECK(tested.at("test_acc") > 0.7);
  CHECK(tested.at("test_loss") < 0.9);
}
