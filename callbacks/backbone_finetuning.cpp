#include "callbacks/backbone_finetuning.h"

#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <utility>

#include <torch/optim/optimizer.h>

#include "base/errors.h"
#include "core/module.h"

namespace trainbus::callbacks {

BackboneFinetuning::BackboneFinetuning(BackboneFinetuningOptions options)
    : options_(std::move(options)) {
  TRAINBUS_CHECK(options_.unfreeze_backbone_at_epoch() >= 0,
                 "BackboneFinetuning: unfreeze_backbone_at_epoch must be >= 0, got ",
                 options_.unfreeze_backbone_at_epoch());
  TRAINBUS_CHECK(static_cast<bool>(options_.lambda_func()),
                 "BackboneFinetuning: lambda_func is empty; give a function of the epoch");
  TRAINBUS_CHECK(options_.backbone_initial_ratio_lr() > 0,
                 "BackboneFinetuning: backbone_initial_ratio_lr must be > 0, got ",
                 options_.backbone_initial_ratio_lr());
  TRAINBUS_CHECK(!options_.backbone_initial_lr() || *options_.backbone_initial_lr() > 0,
                 "BackboneFinetuning: backbone_initial_lr must be > 0, got ",
                 options_.backbone_initial_lr().value_or(0));
  TRAINBUS_CHECK(!options_.backbone().empty(),
                 "BackboneFinetuning: backbone (the submodule's name) is empty");
}

torch::nn::Module& BackboneFinetuning::find_backbone(Module& module, const std::string& path) {
  torch::nn::Module* current = &module;
  std::string walked;
  std::istringstream parts(path);
  for (std::string part; std::getline(parts, part, '.');) {
    std::string have;
    torch::nn::Module* next = nullptr;
    for (const auto& child : current->named_children()) {
      if (child.key() == part) next = child.value().get();
      have += (have.empty() ? "" : ", ") + child.key();
    }
    TRAINBUS_CHECK(next != nullptr, "BackboneFinetuning: the module", walked.empty() ? "" : " `",
                   walked, walked.empty() ? "" : "`", " has no submodule `", part,
                   "` (it has: ", have.empty() ? "none" : have,
                   "); register the backbone as `register_module(\"backbone\", ...)` or name "
                   "yours with the backbone option (a dotted path reaches into a submodule)");
    walked += (walked.empty() ? "" : ".") + part;
    current = next;
  }
  return *current;
}

void BackboneFinetuning::on_fit_start(Trainer& trainer, Module& module) {
  find_backbone(module, options_.backbone());  // Lightning's check: fails clearly before training
  BaseFinetuning::on_fit_start(trainer, module);
}

void BackboneFinetuning::setup(Trainer& trainer, Module& module, Stage stage) {
  if (stage == Stage::kFit) previous_backbone_lr_.reset();  // a resume's comes from its state
  BaseFinetuning::setup(trainer, module, stage);
}

void BackboneFinetuning::freeze_before_training(Module& module) {
  // As Lightning's (freeze with its default train_bn): the backbone's BatchNorm layers stay
  // trainable until the unfreeze whatever train_bn says; train_bn decides whether they join the
  // backbone's param group then.
  freeze(find_backbone(module, options_.backbone()));
}

void BackboneFinetuning::finetune_function(Module& module, int64_t epoch,
                                           torch::optim::Optimizer& optimizer) {
  const double current_lr = optimizer.param_groups().at(0).options().get_lr();
  if (epoch == options_.unfreeze_backbone_at_epoch()) {
    const double initial_backbone_lr =
        options_.backbone_initial_lr().value_or(current_lr * options_.backbone_initial_ratio_lr());
    previous_backbone_lr_ = initial_backbone_lr;
    unfreeze_and_add_param_group(find_backbone(module, options_.backbone()), optimizer,
                                 initial_backbone_lr, options_.initial_denom_lr(),
                                 options_.train_bn());
    if (options_.verbose()) print_lrs(current_lr, initial_backbone_lr);
  } else if (epoch > options_.unfreeze_backbone_at_epoch()) {
    TRAINBUS_CHECK(previous_backbone_lr_.has_value(), "BackboneFinetuning: epoch ", epoch,
                   " is past unfreeze_backbone_at_epoch (", options_.unfreeze_backbone_at_epoch(),
                   ") but the backbone was never unfrozen: the run resumed from a checkpoint "
                   "without this callback's state; resume from one saved with it, or unfreeze "
                   "at a later epoch");
    double next_backbone_lr = options_.lambda_func()(epoch + 1) * *previous_backbone_lr_;
    if (options_.should_align() && next_backbone_lr > current_lr) next_backbone_lr = current_lr;
    optimizer.param_groups().back().options().set_lr(next_backbone_lr);
    previous_backbone_lr_ = next_backbone_lr;
    if (options_.verbose()) print_lrs(current_lr, next_backbone_lr);
  }
}

void BackboneFinetuning::print_lrs(double current_lr, double backbone_lr) const {
  const auto rounded = [&](double lr) {
    const double scale = std::pow(10.0, options_.rounding());
    return std::round(lr * scale) / scale;
  };
  std::cout << "Current lr: " << std::setprecision(options_.rounding()) << rounded(current_lr)
            << ", Backbone lr: " << rounded(backbone_lr) << std::endl;
}

StateDict BackboneFinetuning::state_dict() const {
  StateDict state = BaseFinetuning::state_dict();
  state.insert("previous_backbone_lr",
               previous_backbone_lr_ ? c10::IValue(*previous_backbone_lr_) : c10::IValue());
  return state;
}

void BackboneFinetuning::load_state_dict(const StateDict& state) {
  TRAINBUS_CHECK(state.contains("previous_backbone_lr"),
                 "BackboneFinetuning: the checkpoint's state has no `previous_backbone_lr`; it was "
                 "not saved by BackboneFinetuning");
  const c10::IValue& previous = state.at("previous_backbone_lr");
  previous_backbone_lr_ = previous.isNone() ? std::nullopt : std::optional(previous.toDouble());
  BaseFinetuning::load_state_dict(state);
}

}  // namespace trainbus::callbacks
