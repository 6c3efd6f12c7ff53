// A minimal program against an installed trainbus: a linear model learns y = 2x + 1, with
// EarlyStopping and a bus subscriber. Exits 0 when the fit worked.
#include <cmath>
#include <iostream>

#include <torch/torch.h>

#include "callbacks/early_stopping.h"
#include "core/trainer.h"

class Line : public trainbus::Module {
 public:
  Line() { linear = register_module("linear", torch::nn::Linear(1, 1)); }

  trainbus::StepOutput training_step(const trainbus::Batch& batch, int64_t batch_idx) override {
    torch::Tensor loss = torch::mse_loss(linear->forward(batch.data), batch.target);
    log("train_loss", loss, trainbus::LogOptions().on_step(false).on_epoch(true).prog_bar(true));
    return loss;
  }
  trainbus::StepOutput validation_step(const trainbus::Batch& batch, int64_t batch_idx) override {
    torch::Tensor loss = torch::mse_loss(linear->forward(batch.data), batch.target);
    log("val_loss", loss);
    return loss;
  }
  trainbus::OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
  }

  torch::nn::Linear linear{nullptr};
};

int main() {
  torch::manual_seed(0);
  const torch::Tensor x = torch::rand({256, 1});
  const torch::Tensor y = 2 * x + 1;
  auto train = std::make_shared<trainbus::data::TensorDataLoader>(
      x, y, trainbus::data::DataLoaderOptions().batch_size(32).shuffle(true));
  auto val = std::make_shared<trainbus::data::TensorDataLoader>(
      x, y, trainbus::data::DataLoaderOptions().batch_size(256));
  trainbus::data::LoaderDataModule data(train, val);

  trainbus::Trainer trainer(
      trainbus::TrainerOptions().max_epochs(200),
      {std::make_shared<trainbus::callbacks::EarlyStopping>(
          trainbus::callbacks::EarlyStoppingOptions().monitor("val_loss").patience(5))});

  int epochs_seen = 0;
  trainbus::events::Subscription on_epoch =
      trainer.bus().subscribe<trainbus::events::TrainEpochEnd>(
          [&](const trainbus::events::TrainEpochEnd&) { ++epochs_seen; });

  Line model;
  trainer.fit(model, data);
  const double w = model.linear->weight.item<double>();
  const double b = model.linear->bias.item<double>();
  std::cout << "consumer: w=" << w << " b=" << b << " after " << epochs_seen << " epochs, val_loss "
            << trainer.callback_metrics().at("val_loss") << std::endl;
  return std::abs(w - 2.0) < 0.1 && std::abs(b - 1.0) < 0.1 &&
                 epochs_seen == trainer.current_epoch()
             ? 0
             : 1;
}
