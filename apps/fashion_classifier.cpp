#include "apps/fashion_classifier.h"

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/optim/adam.h>
#include <torch/optim/schedulers/step_lr.h>

#include "base/errors.h"

namespace trainbus::apps {

namespace nn = torch::nn;

Architecture parse_architecture(const std::string& name) {
  if (name == "mlp") return Architecture::kMlp;
  if (name == "cnn") return Architecture::kCnn;
  throw MisconfigurationError("unknown model \"" + name + "\": expected \"mlp\" or \"cnn\"");
}

FashionClassifier::FashionClassifier(ClassifierOptions options) : options_(options) {
  TRAINBUS_CHECK(options_.lr > 0.0, "learning rate must be > 0, got ", options_.lr);
  TRAINBUS_CHECK(options_.dropout >= 0.0 && options_.dropout < 1.0,
                 "dropout must be in [0, 1), got ", options_.dropout);
  if (options_.architecture == Architecture::kMlp) {
    net_ = nn::Sequential(nn::Flatten(), nn::Linear(784, 256), nn::ReLU(),
                          nn::Dropout(options_.dropout), nn::Linear(256, 128), nn::ReLU(),
                          nn::Dropout(options_.dropout), nn::Linear(128, 10));
  } else {
    net_ = nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 32, 3).padding(1)), nn::ReLU(),
                          nn::MaxPool2d(2), nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1)),
                          nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                          nn::Dropout(options_.dropout), nn::Linear(64 * 7 * 7, 128), nn::ReLU(),
                          nn::Dropout(options_.dropout), nn::Linear(128, 10));
  }
  register_module("net", net_);
  // One image, for the model summary's In/Out sizes (Lightning's example_input_array).
  set_example_input_array(torch::zeros({1, 1, 28, 28}),
                          [this](const at::Tensor& images) { return forward(images); });
  StateDict hparams;
  hparams.insert("model", options_.architecture == Architecture::kMlp ? "mlp" : "cnn");
  hparams.insert("lr", options_.lr);
  hparams.insert("weight_decay", options_.weight_decay);
  hparams.insert("dropout", options_.dropout);
  hparams.insert("lr_step_epochs", options_.lr_step_epochs);
  hparams.insert("lr_gamma", options_.lr_gamma);
  save_hyperparameters(hparams);
}

ClassifierOptions classifier_options_from(const StateDict& hparams) {
  ClassifierOptions options;
  if (hparams.contains("model"))
    options.architecture = parse_architecture(hparams.at("model").toStringRef());
  if (hparams.contains("lr")) options.lr = hparams.at("lr").toDouble();
  if (hparams.contains("weight_decay"))
    options.weight_decay = hparams.at("weight_decay").toDouble();
  if (hparams.contains("dropout")) options.dropout = hparams.at("dropout").toDouble();
  if (hparams.contains("lr_step_epochs"))
    options.lr_step_epochs = hparams.at("lr_step_epochs").toInt();
  if (hparams.contains("lr_gamma")) options.lr_gamma = hparams.at("lr_gamma").toDouble();
  return options;
}

FashionClassifier::FashionClassifier(const StateDict& hparams)
    : FashionClassifier(classifier_options_from(hparams)) {}

at::Tensor FashionClassifier::forward(const at::Tensor& images) { return net_->forward(images); }

StepOutput FashionClassifier::training_step(const Batch& batch, int64_t batch_idx) {
  const at::Tensor logits = forward(batch.data);
  const at::Tensor loss = nn::functional::cross_entropy(logits, batch.target);
  const at::Tensor accuracy = logits.argmax(1).eq(batch.target).to(at::kFloat).mean();
  log("train_loss", loss.detach(), LogOptions().on_step(true).on_epoch(true).prog_bar(true));
  log("train_acc", accuracy, LogOptions().on_step(true).on_epoch(true).prog_bar(true));
  return loss;
}

StepOutput FashionClassifier::evaluate(const Batch& batch, const std::string& prefix) {
  const at::Tensor logits = forward(batch.data);
  const at::Tensor loss = nn::functional::cross_entropy(logits, batch.target);
  const at::Tensor accuracy = logits.argmax(1).eq(batch.target).to(at::kFloat).mean();
  log(prefix + "_loss", loss, LogOptions().on_step(false).on_epoch(true).prog_bar(true));
  log(prefix + "_acc", accuracy, LogOptions().on_step(false).on_epoch(true).prog_bar(true));
  return {{"loss", loss}, {"acc", accuracy}};
}

StepOutput FashionClassifier::validation_step(const Batch& batch, int64_t batch_idx) {
  return evaluate(batch, "val");
}

StepOutput FashionClassifier::test_step(const Batch& batch, int64_t batch_idx) {
  return evaluate(batch, "test");
}

at::Tensor FashionClassifier::predict_step(const Batch& batch, int64_t batch_idx) {
  return forward(batch.data).softmax(1);
}

OptimizerConfig FashionClassifier::configure_optimizers() {
  // Only what requires grad, as Lightning asks: a finetuning callback freezes layers before this
  // and adds them back as a param group of their own when it unfreezes them.
  std::vector<at::Tensor> trainable;
  for (const at::Tensor& parameter : parameters()) {
    if (parameter.requires_grad()) trainable.push_back(parameter);
  }
  // The lr from the hyper-parameters, as Lightning modules read self.hparams.lr: the learning
  // rate finder's update_attr writes its suggestion there.
  const double lr = hparams().at("lr").toDouble();
  auto adam = std::make_shared<torch::optim::Adam>(
      trainable, torch::optim::AdamOptions(lr).weight_decay(options_.weight_decay));
  if (options_.lr_step_epochs <= 0) return adam;
  SchedulerConfig scheduler;
  scheduler.scheduler = std::make_shared<torch::optim::StepLR>(
      *adam, static_cast<unsigned>(options_.lr_step_epochs), options_.lr_gamma);
  scheduler.interval = SchedulerInterval::kEpoch;
  return OptimizerConfig(adam, scheduler);
}

}  // namespace trainbus::apps
