#pragma once
/// DataModule: where the trainer gets its train/val/test/predict data (Lightning's
/// LightningDataModule).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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

  /// Several validation loaders (Lightning's val_dataloader returning a list): validation runs
  /// them one after another, the steps and batch hooks get each one's `dataloader_idx`, and what
  /// is logged meanwhile is named `<name>/dataloader_idx_<i>`. By default val_dataloader(), if any.
  /// A null entry is refused (MisconfigurationError naming its index).
  virtual std::vector<std::shared_ptr<DataLoader>> val_dataloaders() {
    return one_or_none(val_dataloader());
  }
  /// Several test loaders, as val_dataloaders(); by default test_dataloader(), if any.
  virtual std::vector<std::shared_ptr<DataLoader>> test_dataloaders() {
    return one_or_none(test_dataloader());
  }

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

 protected:
  static std::vector<std::shared_ptr<DataLoader>> one_or_none(std::shared_ptr<DataLoader> loader) {
    if (!loader) return {};
    return {std::move(loader)};
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

  /// Several val loaders instead of the one given to the constructor: `LoaderDataModule(train)
  /// .with_val_dataloaders({a, b})`. The first is also val_dataloader().
  LoaderDataModule& with_val_dataloaders(std::vector<std::shared_ptr<DataLoader>> loaders) {
    vals_ = std::move(loaders);
    val_ = vals_.empty() ? nullptr : vals_.front();
    return *this;
  }
  /// Several test loaders, as with_val_dataloaders.
  LoaderDataModule& with_test_dataloaders(std::vector<std::shared_ptr<DataLoader>> loaders) {
    tests_ = std::move(loaders);
    test_ = tests_.empty() ? nullptr : tests_.front();
    return *this;
  }
  std::vector<std::shared_ptr<DataLoader>> val_dataloaders() override {
    return vals_.empty() ? one_or_none(val_) : vals_;
  }
  std::vector<std::shared_ptr<DataLoader>> test_dataloaders() override {
    return tests_.empty() ? one_or_none(test_) : tests_;
  }

 private:
  std::shared_ptr<DataLoader> train_, val_, test_, predict_;
  std::vector<std::shared_ptr<DataLoader>> vals_, tests_;
};

}  // namespace trainbus::data

namespace trainbus {
/// What Trainer::fit takes, in the Trainer's namespace.
using data::DataModule;
}  // namespace trainbus
