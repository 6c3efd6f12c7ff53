#include "core/learning_rates.h"

#include <optional>
#include <string>
#include <tuple>

#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

namespace trainbus {
namespace {

std::string class_name(const torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return "AdamW";
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return "Adam";
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return "SGD";
  if (dynamic_cast<const torch::optim::RMSprop*>(&optimizer)) return "RMSprop";
  if (dynamic_cast<const torch::optim::Adagrad*>(&optimizer)) return "Adagrad";
  if (dynamic_cast<const torch::optim::LBFGS*>(&optimizer)) return "LBFGS";
  return "Optimizer";
}

std::optional<double> momentum(const torch::optim::OptimizerOptions& options) {
  if (auto* adamw = dynamic_cast<const torch::optim::AdamWOptions*>(&options))
    return std::get<0>(adamw->betas());
  if (auto* adam = dynamic_cast<const torch::optim::AdamOptions*>(&options))
    return std::get<0>(adam->betas());
  if (auto* sgd = dynamic_cast<const torch::optim::SGDOptions*>(&options)) return sgd->momentum();
  if (auto* rmsprop = dynamic_cast<const torch::optim::RMSpropOptions*>(&options))
    return rmsprop->momentum();
  return std::nullopt;
}

std::optional<double> weight_decay(const torch::optim::OptimizerOptions& options) {
  if (auto* adamw = dynamic_cast<const torch::optim::AdamWOptions*>(&options))
    return adamw->weight_decay();
  if (auto* adam = dynamic_cast<const torch::optim::AdamOptions*>(&options))
    return adam->weight_decay();
  if (auto* sgd = dynamic_cast<const torch::optim::SGDOptions*>(&options))
    return sgd->weight_decay();
  if (auto* rmsprop = dynamic_cast<const torch::optim::RMSpropOptions*>(&options))
    return rmsprop->weight_decay();
  if (auto* adagrad = dynamic_cast<const torch::optim::AdagradOptions*>(&options))
    return adagrad->weight_decay();
  return std::nullopt;
}

}  // namespace

Metrics learning_rates(const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers,
                       std::size_t index) {
  // The recording keeps a momentum only where the optimizer has one.
  OptimizerStatsOptions options;
  options.momentum = has_momentum(*optimizers.at(index));
  return optimizer_stats(optimizers, index, options);
}

Metrics optimizer_stats(const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers,
                        std::size_t index, const OptimizerStatsOptions& options) {
  const torch::optim::Optimizer& optimizer = *optimizers.at(index);
  const std::string type = class_name(optimizer);
  std::string name = options.name;
  if (name.empty()) {
    name = "lr-" + type;
    int same_before = 0;  // Lightning: "lr-Adam", "lr-Adam-1", ... for optimizers of one class
    for (std::size_t i = 0; i < index; ++i) same_before += class_name(*optimizers[i]) == type;
    if (same_before > 0) name += "-" + std::to_string(same_before);
  }

  Metrics values;
  const auto& groups = optimizer.param_groups();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const std::string group_name = groups.size() > 1 ? name + "/pg" + std::to_string(g + 1) : name;
    const torch::optim::OptimizerOptions& group_options = groups[g].options();
    try {
      values[group_name] = group_options.get_lr();
    } catch (const c10::Error&) {
      continue;  // options of the user's own optimizer without get_lr(): nothing to report
    }
    if (options.momentum) values[group_name + "-momentum"] = momentum(group_options).value_or(0.0);
    if (options.weight_decay) {
      values[group_name + "-weight_decay"] = weight_decay(group_options).value_or(0.0);
    }
  }
  return values;
}

std::string optimizer_class_name(const torch::optim::Optimizer& optimizer) {
  return class_name(optimizer);
}

bool has_momentum(const torch::optim::Optimizer& optimizer) {
  for (const auto& group : optimizer.param_groups()) {
    if (momentum(group.options()).has_value()) return true;
  }
  return false;
}

}  // namespace trainbus
