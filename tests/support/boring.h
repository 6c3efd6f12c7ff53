#pragma once
// Test fixtures: Lightning's BoringModel and RandomDataset, in trainbus.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <torch/nn/modules/linear.h>

#include "core/module.h"
#include "data/data_module.h"

namespace trainbus::testing {

/// A Linear(32, 2) trained towards ones with SGD(lr=0.1): fast, deterministic, no data needed.
/// validation_step logs "val_loss" and returns {"x": loss}; test_step logs "test_loss" and
/// returns {"y": loss}; predict_step returns the layer's output.
class BoringModule : public Module {
 public:
  BoringModule();
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override;
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override;
  StepOutput test_step(const Batch& batch, int64_t batch_idx) override;
  at::Tensor predict_step(const Batch& batch, int64_t batch_idx) override;
  OptimizerConfig configure_optimizers() override;

  at::Tensor loss(const Batch& batch);
  torch::nn::Linear layer{nullptr};
};

/// `size` random samples of 32 features (seeded, so every test sees the same data) in every split.
class RandomDataModule : public DataModule {
 public:
  explicit RandomDataModule(int64_t size = 64, int64_t batch_size = 1, bool shuffle = false);
  std::shared_ptr<DataLoader> train_dataloader() override;
  std::shared_ptr<DataLoader> val_dataloader() override;
  std::shared_ptr<DataLoader> test_dataloader() override;
  std::shared_ptr<DataLoader> predict_dataloader() override;
  /// "batch_size": of every loader built from then on.
  std::optional<int64_t> batch_arg(const std::string& name) const override;
  bool set_batch_arg(const std::string& name, int64_t value) override;

  bool has_val = true;

 private:
  std::shared_ptr<DataLoader> loader(bool shuffle) const;
  at::Tensor data_;
  int64_t batch_size_;
  bool shuffle_;
};

}  // namespace trainbus::testing
