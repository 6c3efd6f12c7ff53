#pragma once
/// DataModule: where the trainer gets its train/val/test/predict data (Lightning's
/// LightningDataModule).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "checkpoint/state_dict.h"
#include "data/data_loader.h"
#include "events/common.h"

namespace trainbus::data {

/// Prepares data and hands out one loader per split. A split it does not have returns nullptr:
/// no val loader means no validation in fit. Called on the training thread, in Lightning's order:
/// prepare_data, setup(stage), then the loaders the stage needs, teardown(stage) at the end.
class DataModule {
 public:
  virtual ~DataModule() = default;

  /// Download/convert once per machine. Runs before setup().
  virtual void prepare_data() {}
  /// Build datasets for `stage`; may be called once per stage.
  virtual void setup(Stage stage) { (void)stage; }
  /// Release what setup() built; only after a successful run (as Lightning).
  virtual void teardown(Stage stage) { (void)stage; }

  virtual std::shared_ptr<DataLoader> train_dataloader() { return nullptr; }
  virtual std::shared_ptr<DataLoader> val_dataloader() { return nullptr; }
  virtual std::shared_ptr<DataLoader> test_dataloader() { return nullptr; }
  virtual std::shared_ptr<DataLoader> predict_dataloader() { return nullptr; }

  /// State saved in checkpoints under the data module's name; empty means nothing is saved.
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& state) { (void)state; }

  /// The batch size held under `name` (Lightning's lightning_getattr(datamodule, "batch_size")),
  /// or nothing when this data module has none by that name. What the BatchSizeFinder reads.
  virtual std::optional<int64_t> batch_arg(const std::string& name) const {
    (void)name;
    return std::nullopt;
  }
  /// Sets the batch size held under `name` for the loaders built from now on (Lightning's
  /// lightning_setattr); returns false when this data module has none by that name. Throws
  /// MisconfigurationError for a value < 1.
  virtual bool set_batch_arg(const std::string& name, int64_t value) {
    (void)name;
    (void)value;
    return false;
  }
};

/// A DataModule over loaders built elsewhere, for `trainer.fit(module, LoaderDataModule{train,
/// val})`.
class LoaderDataModule : public DataModule {
 public:
  explicit LoaderDataModule(std::shared_ptr<DataLoader> train,
                            std::shared_ptr<DataLoader> val = nullptr,
                            std::shared_ptr<DataLoader> test = nullptr,
                            std::shared_ptr<DataLoader> predict = nullptr)
      : train_(std::move(train)),
        val_(std::move(val)),
        test_(std::move(test)),
        predict_(std::move(predict)) {}

  std::shared_ptr<DataLoader> train_dataloader() override { return train_; }
  std::shared_ptr<DataLoader> val_dataloader() override { return val_; }
  std::shared_ptr<DataLoader> test_dataloader() override { return test_; }
  std::shared_ptr<DataLoader> predict_dataloader() override { return predict_; }

 private:
  std::shared_ptr<DataLoader> train_, val_, test_, predict_;
};

}  // namespace trainbus::data

namespace trainbus {
/// What Trainer::fit takes, in the Trainer's namespace.
using data::DataModule;
}  // namespace trainbus
