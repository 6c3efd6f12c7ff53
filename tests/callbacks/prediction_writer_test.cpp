// BasePredictionWriter: Lightning's write intervals, predictions written without being kept, and
// the errors for a bad interval or a hook not overridden.
#include "callbacks/prediction_writer.h"

#include <memory>
#include <string>
#include <vector>

#include "tests/support/catch.h"

#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// Notes what it is asked to write.
class NotingWriter : public BasePredictionWriter {
 public:
  using BasePredictionWriter::BasePredictionWriter;
  void write_on_batch_end(Trainer&, Module&, const at::Tensor& prediction, const Batch&,
                          int64_t batch_idx) override {
    batches.push_back(batch_idx);
    rows += prediction.size(0);
  }
  void write_on_epoch_end(Trainer&, Module&, const std::vector<at::Tensor>& predictions) override {
    epochs.push_back(predictions.size());
  }
  std::vector<int64_t> batches;
  int64_t rows = 0;
  std::vector<std::size_t> epochs;
};

class BatchOnly : public BasePredictionWriter {
 public:
  using BasePredictionWriter::BasePredictionWriter;
};

}  // namespace

TEST_CASE("BasePredictionWriter writes at its interval", "[callbacks][prediction_writer]") {
  BoringModule module;
  RandomDataModule data(8, 2);  // 4 batches of 2
  SECTION("batch, without keeping the predictions") {
    auto writer = std::make_shared<NotingWriter>("batch");
    Trainer trainer(testing::trainer_options(), {writer});
    const auto kept = trainer.predict(module, data, PredictOptions().return_predictions(false));
    CHECK(kept.empty());
    CHECK(writer->batches == std::vector<int64_t>{0, 1, 2, 3});
    CHECK(writer->rows == 8);
    CHECK(writer->epochs.empty());
  }
  SECTION("epoch, with every prediction") {
    auto writer = std::make_shared<NotingWriter>(WriteInterval::kEpoch);
    Trainer trainer(testing::trainer_options(), {writer});
    CHECK(trainer.predict(module, data).size() == 4);
    CHECK(writer->batches.empty());
    CHECK(writer->epochs == std::vector<std::size_t>{4});
    CHECK(trainer.predictions().empty());  // handed to the caller, not kept
  }
  SECTION("batch_and_epoch: the epoch writer gets them all, also when none is returned") {
    auto writer = std::make_shared<NotingWriter>("batch_and_epoch");
    Trainer trainer(testing::trainer_options(), {writer});
    CHECK(trainer.predict(module, data, PredictOptions().return_predictions(false)).empty());
    CHECK(writer->batches.size() == 4);
    CHECK(writer->epochs == std::vector<std::size_t>{4});
    CHECK(trainer.predictions().empty());
  }
  SECTION("a predict that fails keeps nothing") {
    auto writer = std::make_shared<NotingWriter>("epoch");
    auto failing = std::make_shared<BatchOnly>(WriteInterval::kBatch);  // no write_on_batch_end
    Trainer trainer(testing::trainer_options(), {writer, failing});
    CHECK_THROWS(trainer.predict(module, data));
    CHECK(trainer.predictions().empty());
  }
}

TEST_CASE("BasePredictionWriter refuses a bad interval and a hook it needs but lacks",
          "[callbacks][prediction_writer]") {
  CHECK_THROWS_WITH(NotingWriter("step"),
                    Contains("`write_interval` should be one of batch, epoch, batch_and_epoch") &&
                        Contains("'step'"));
  BoringModule module;
  RandomDataModule data(4, 2);
  Trainer trainer(testing::trainer_options(), {std::make_shared<BatchOnly>(WriteInterval::kBatch)});
  CHECK_THROWS_WITH(trainer.predict(module, data),
                    Contains("BatchOnly") && Contains("does not override write_on_batch_end"));
}
