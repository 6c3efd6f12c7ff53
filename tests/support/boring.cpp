#include "tests/support/boring.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

namespace trainbus::testing {

BoringModule::BoringModule() { layer = register_module("layer", torch::nn::Linear(32, 2)); }

at::Tensor BoringModule::loss(const Batch& batch) {
  const at::Tensor out = layer->forward(batch.data);
  return torch::nn::functional::mse_loss(out, torch::ones_like(out));
}

StepOutput BoringModule::training_step(const Batch& batch, int64_t batch_idx) {
  return loss(batch);
}

StepOutput BoringModule::validation_step(const Batch& batch, int64_t batch_idx) {
  at::Tensor value = loss(batch);
  log("val_loss", value);
  return {{"x", value}};
}

StepOutput BoringModule::test_step(const Batch& batch, int64_t batch_idx) {
  at::Tensor value = loss(batch);
  log("test_loss", value);
  return {{"y", value}};
}

at::Tensor BoringModule::predict_step(const Batch& batch, int64_t batch_idx) {
  return layer->forward(batch.data);
}

OptimizerConfig BoringModule::configure_optimizers() {
  return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
}

RandomDataModule::RandomDataModule(int64_t size, int64_t batch_size, bool shuffle)
    : batch_size_(batch_size), shuffle_(shuffle) {
  data_ = torch::randn({size, 32}, at::detail::createCPUGenerator(1234));
}

std::shared_ptr<DataLoader> RandomDataModule::loader(bool shuffle) const {
  return std::make_shared<data::TensorDataLoader>(
      data_, at::Tensor(),
      data::DataLoaderOptions().batch_size(batch_size_).shuffle(shuffle).drop_last(false).seed(7));
}

std::optional<int64_t> RandomDataModule::batch_arg(const std::string& name) const {
  if (name == "batch_size") return batch_size_;
  return std::nullopt;
}

bool RandomDataModule::set_batch_arg(const std::string& name, int64_t value) {
  if (name != "batch_size") return false;
  batch_size_ = value;
  return true;
}

std::shared_ptr<DataLoader> RandomDataModule::train_dataloader() { return loader(shuffle_); }
std::shared_ptr<DataLoader> RandomDataModule::val_dataloader() {
  return has_val ? loader(false) : nullptr;
}
std::shared_ptr<DataLoader> RandomDataModule::test_dataloader() { return loader(false); }
std::shared_ptr<DataLoader> RandomDataModule::predict_dataloader() { return loader(false); }

}  // namespace trainbus::testing
