#pragma once
/// FashionClassifier: the models `trainbus fit` trains on Fashion-MNIST (MLP and 2-conv CNN).

#include <cstdint>
#include <string>

#include <torch/nn/modules/container/sequential.h>

#include "core/module.h"

namespace trainbus::apps {

enum class Architecture {
  kMlp,  ///< 784-256-128-10 with ReLU and dropout
  kCnn,  ///< conv(32)-pool-conv(64)-pool-fc(128)-fc(10) with ReLU and dropout
};

/// Parses "mlp" or "cnn"; throws MisconfigurationError naming the accepted values.
Architecture parse_architecture(const std::string& name);

struct ClassifierOptions;
/// The options saved hyper-parameters stand for (FashionClassifier's own names).
ClassifierOptions classifier_options_from(const StateDict& hparams);

struct ClassifierOptions {
  Architecture architecture = Architecture::kMlp;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double dropout = 0.2;
  /// Multiply the learning rate by `lr_gamma` every `lr_step_epochs` epochs (StepLR); 0: constant.
  int64_t lr_step_epochs = 0;
  double lr_gamma = 0.5;
};

/// Cross-entropy classifier with Adam. Logs train_loss/train_acc (step and epoch), val_loss/val_acc
/// and test_loss/test_acc (epoch means); predict_step returns class probabilities.
class FashionClassifier : public Module {
 public:
  explicit FashionClassifier(ClassifierOptions options = {});
  /// From the hyper-parameters it saves (model, lr, weight_decay, dropout, lr_step_epochs,
  /// lr_gamma), as load_from_checkpoint builds it; a missing one keeps its default.
  explicit FashionClassifier(const StateDict& hparams);

  at::Tensor forward(const at::Tensor& images);
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override;
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override;
  StepOutput test_step(const Batch& batch, int64_t batch_idx) override;
  at::Tensor predict_step(const Batch& batch, int64_t batch_idx) override;
  OptimizerConfig configure_optimizers() override;

  const ClassifierOptions& options() const noexcept { return options_; }

 private:
  StepOutput evaluate(const Batch& batch, const std::string& prefix);

  ClassifierOptions options_;
  torch::nn::Sequential net_{nullptr};
};

}  // namespace trainbus::apps
