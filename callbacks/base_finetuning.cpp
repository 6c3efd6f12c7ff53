#include "callbacks/base_finetuning.h"

#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

#include <torch/optim/optimizer.h>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "callbacks/detail/batch_norm.h"
#include "core/trainer.h"

namespace trainbus::callbacks {

namespace {

// The BatchNorm options of `module`, or null when it is no BatchNorm.
torch::nn::BatchNormOptions* batch_norm_options(torch::nn::Module& module) {
  torch::nn::BatchNormOptions* options = nullptr;
  detail::visit_batch_norm(module, [&](auto& layer) { options = &layer.options; });
  return options;
}

// The momentum a frozen BatchNorm had, until it is made trainable again. Keyed by address and
// checked against a weak reference where the module is shared-owned, so that a new module at a
// freed one's address never inherits its momentum.
class FrozenMomenta {
 public:
  static FrozenMomenta& instance() {
    static FrozenMomenta momenta;
    return momenta;
  }
  void remember(torch::nn::Module& module, c10::optional<double> momentum) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = entries_.find(&module);
    if (found != entries_.end() && belongs_to(found->second, module)) return;  // frozen twice
    entries_[&module] = {owner_of(module), owner_of(module).lock() != nullptr, momentum};
  }
  std::optional<c10::optional<double>> take(torch::nn::Module& module) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = entries_.find(&module);
    if (found == entries_.end()) return std::nullopt;
    Entry entry = std::move(found->second);
    entries_.erase(found);
    if (!belongs_to(entry, module)) return std::nullopt;  // a freed module's, at the same address
    return entry.momentum;
  }

 private:
  struct Entry {
    std::weak_ptr<torch::nn::Module> owner;
    bool owned = false;  // whether `owner` was set: a module on the stack has none to check
    c10::optional<double> momentum;
  };
  static bool belongs_to(const Entry& entry, const torch::nn::Module& module) {
    if (!entry.owned) return true;
    const auto owner = entry.owner.lock();
    return owner != nullptr && owner.get() == &module;
  }
  static std::weak_ptr<torch::nn::Module> owner_of(torch::nn::Module& module) {
    try {
      return module.shared_from_this();
    } catch (const std::bad_weak_ptr&) {
      return {};
    }
  }
  std::mutex mutex_;
  std::unordered_map<const torch::nn::Module*, Entry> entries_;
};

bool contains_tensor(const std::set<const void*>& impls, const at::Tensor& tensor) {
  return impls.count(tensor.unsafeGetTensorImpl()) > 0;
}

// The parameters in any param group of `optimizer`, by identity.
std::set<const void*> params_in(const torch::optim::Optimizer& optimizer) {
  std::set<const void*> impls;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& param : group.params()) impls.insert(param.unsafeGetTensorImpl());
  }
  return impls;
}

}  // namespace

std::vector<torch::nn::Module*> BaseFinetuning::flatten_modules(const Modules& modules) {
  std::vector<torch::nn::Module*> out;
  std::set<const torch::nn::Module*> seen;  // a module shared by two parents is listed once
  const auto consider = [&](torch::nn::Module& module) {
    const bool leaf = module.children().empty();
    const bool own_parameters = !module.named_parameters(/*recurse=*/false).is_empty();
    if ((leaf || own_parameters) && seen.insert(&module).second) out.push_back(&module);
  };
  for (torch::nn::Module* module : modules) {
    consider(*module);
    for (const auto& descendant : module->modules(/*include_self=*/false)) consider(*descendant);
  }
  return out;
}

std::vector<at::Tensor> BaseFinetuning::filter_params(const Modules& modules, bool train_bn,
                                                      bool requires_grad) {
  std::vector<at::Tensor> params;
  for (torch::nn::Module* module : flatten_modules(modules)) {
    if (batch_norm_options(*module) != nullptr && !train_bn) continue;
    for (const auto& param : module->parameters(/*recurse=*/false)) {
      if (param.requires_grad() == requires_grad) params.push_back(param);
    }
  }
  return params;
}

void BaseFinetuning::make_trainable(const Modules& modules) {
  for (torch::nn::Module* module : flatten_modules(modules)) {
    if (auto* options = batch_norm_options(*module)) {
      if (auto momentum = FrozenMomenta::instance().take(*module)) options->momentum(*momentum);
    }
    for (auto& param : module->parameters(/*recurse=*/false)) param.set_requires_grad(true);
  }
}

void BaseFinetuning::freeze_module(torch::nn::Module& module) {
  if (auto* options = batch_norm_options(module)) {
    // PyTorch turns track_running_stats off; LibTorch's BatchNorm would still update its
    // statistics then (and use the batch's in eval), so a momentum of 0 keeps them instead.
    FrozenMomenta::instance().remember(module, options->momentum());
    options->momentum(0.0);
  }
  for (auto& param : module.parameters(/*recurse=*/false)) param.set_requires_grad(false);
}

void BaseFinetuning::freeze(const Modules& modules, bool train_bn) {
  for (torch::nn::Module* module : flatten_modules(modules)) {
    if (batch_norm_options(*module) != nullptr && train_bn) {
      make_trainable(*module);
    } else {
      freeze_module(*module);
    }
  }
}

std::vector<at::Tensor> BaseFinetuning::filter_on_optimizer(
    const torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& params) {
  // By identity: Lightning compares values (torch.equal), which also drops a parameter that merely
  // equals one in the optimizer (two zero-initialised biases).
  const std::set<const void*> present = params_in(optimizer);
  std::vector<at::Tensor> out;
  std::size_t removed = 0;
  for (const auto& param : params) {
    if (contains_tensor(present, param)) {
      ++removed;
    } else {
      out.push_back(param);
    }
  }
  if (removed > 0) {
    warn(::trainbus::detail::concat(
        "BaseFinetuning: ", removed,
        " of the parameters to unfreeze already are in a param group of the optimizer and are "
        "skipped. Hint: give the optimizer only the parameters that require grad in "
        "configure_optimizers (those frozen before training are then left out, and join it "
        "here as their own group)"));
  }
  return out;
}

void BaseFinetuning::unfreeze_and_add_param_group(const Modules& modules,
                                                  torch::optim::Optimizer& optimizer,
                                                  std::optional<double> lr, double initial_denom_lr,
                                                  bool train_bn) {
  TRAINBUS_CHECK(!optimizer.param_groups().empty(),
                 "BaseFinetuning::unfreeze_and_add_param_group: the optimizer has no param group "
                 "to take the learning rate from");
  const double params_lr = lr ? *lr : optimizer.param_groups()[0].options().get_lr();
  const double denom_lr = lr ? 1.0 : initial_denom_lr;
  TRAINBUS_CHECK(denom_lr > 0, "BaseFinetuning: initial_denom_lr must be > 0, got ", denom_lr);
  make_trainable(modules);
  // BatchNorm layers train_bn kept trainable all along are in the optimizer already: left out
  // without the warning filter_on_optimizer gives (Lightning warns about them too).
  const std::set<const void*> in_optimizer = params_in(optimizer);
  std::vector<at::Tensor> candidates;
  for (torch::nn::Module* module : flatten_modules(modules)) {
    const bool batch_norm = batch_norm_options(*module) != nullptr;
    if (batch_norm && !train_bn) continue;
    for (const auto& param : module->parameters(/*recurse=*/false)) {
      if (!param.requires_grad()) continue;
      if (batch_norm && contains_tensor(in_optimizer, param)) continue;
      candidates.push_back(param);
    }
  }
  std::vector<at::Tensor> params = filter_on_optimizer(optimizer, candidates);
  if (params.empty()) return;
  // The optimizer's defaults for the rest, as PyTorch's add_param_group fills them.
  optimizer.add_param_group(torch::optim::OptimizerParamGroup(std::move(params)));
  optimizer.param_groups().back().options().set_lr(params_lr / denom_lr);
}

// ---- state ----

StateDict BaseFinetuning::state_dict() const {
  StateDict metadata;
  for (const auto& [optimizer_idx, groups] : internal_optimizer_metadata_) {
    StateDict per_group;
    for (std::size_t i = 0; i < groups.size(); ++i) {
      StateDict group;
      c10::List<std::string> names;
      for (const auto& name : groups[i].params) names.push_back(name);
      group.insert("params", names);
      group.insert("added", groups[i].added);
      per_group.insert(std::to_string(i), group);
    }
    metadata.insert(std::to_string(optimizer_idx), per_group);
  }
  StateDict state;
  state.insert("internal_optimizer_metadata", metadata);
  state.insert("last_finetuned_epoch", last_finetuned_epoch_);
  return state;
}

void BaseFinetuning::load_state_dict(const StateDict& state) {
  TRAINBUS_CHECK(state.contains("internal_optimizer_metadata"),
                 "BaseFinetuning: the checkpoint's state has no `internal_optimizer_metadata`; it "
                 "was not saved by a finetuning callback");
  internal_optimizer_metadata_.clear();
  const StateDict metadata = state.dict_at("internal_optimizer_metadata");
  for (const auto& [optimizer_key, groups_value] : metadata) {
    const StateDict groups = StateDict::from_ivalue(groups_value, optimizer_key);
    std::vector<GroupRecord> records(groups.size());
    for (const auto& [group_key, group_value] : groups) {
      const std::size_t index = std::stoul(group_key);
      TRAINBUS_CHECK(index < records.size(), "BaseFinetuning: param group ", group_key,
                     " of optimizer ", optimizer_key, " is out of order in the checkpoint");
      const StateDict group = StateDict::from_ivalue(group_value, group_key);
      for (const auto& name : group.at("params").toList()) {
        records[index].params.push_back(name.get().toStringRef());
      }
      records[index].added = group.contains("added") && group.at("added").toBool();
    }
    internal_optimizer_metadata_[std::stoll(optimizer_key)] = std::move(records);
  }
  last_finetuned_epoch_ =
      state.contains("last_finetuned_epoch") ? state.at("last_finetuned_epoch").toInt() : -1;
  restarting_ = true;
}

// ---- hooks ----

void BaseFinetuning::setup(Trainer& trainer, Module& module, Stage stage) {
  // A fit starts its own records; a resumed one's come from the checkpoint, loaded after setup.
  if (stage == Stage::kFit) {
    internal_optimizer_metadata_.clear();
    last_finetuned_epoch_ = -1;
    restarting_ = false;
  }
  freeze_before_training(module);
}

void BaseFinetuning::on_fit_start(Trainer& trainer, Module& module) {
  if (restarting_) {
    restore_param_groups(trainer, module);
    restarting_ = false;
  }
}

void BaseFinetuning::on_train_epoch_start(Trainer& trainer, Module& module) {
  // Resumed within an epoch whose start already ran: its changes are in the restored state.
  if (trainer.current_epoch() <= last_finetuned_epoch_) return;
  const auto& optimizers = trainer.optimizers();
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    const std::size_t groups_before = optimizers[i]->param_groups().size();
    finetune_function(module, trainer.current_epoch(), *optimizers[i]);
    store(module, static_cast<int64_t>(i), groups_before, *optimizers[i]);
  }
  last_finetuned_epoch_ = trainer.current_epoch();
}

void BaseFinetuning::store(Module& module, int64_t optimizer_idx, std::size_t groups_before,
                           const torch::optim::Optimizer& optimizer) {
  std::unordered_map<const void*, std::string> names;
  for (const auto& item : module.named_parameters()) {
    names.emplace(item.value().unsafeGetTensorImpl(), item.key());
  }
  const auto record_of = [&](const torch::optim::OptimizerParamGroup& group, bool added) {
    GroupRecord record;
    record.added = added;
    for (const auto& param : group.params()) {
      auto found = names.find(param.unsafeGetTensorImpl());
      TRAINBUS_CHECK(found != names.end(),
                     "BaseFinetuning: a parameter in a param group of optimizer ", optimizer_idx,
                     " is not a parameter of the module; the finetuning callback can only "
                     "record (and restore on resume) groups of the module's own parameters");
      record.params.push_back(found->second);
    }
    return record;
  };
  const auto& groups = optimizer.param_groups();
  auto [entry, fresh] = internal_optimizer_metadata_.try_emplace(optimizer_idx);
  std::vector<GroupRecord>& records = entry->second;
  if (fresh) {
    for (std::size_t i = 0; i < groups.size(); ++i) {
      records.push_back(record_of(groups[i], i >= groups_before));
    }
  } else if (groups.size() != groups_before) {
    // New groups the finetune_function added (Lightning records only those, keeping the rest).
    for (std::size_t i = groups_before; i < groups.size(); ++i) {
      records.push_back(record_of(groups[i], true));
    }
  }
}

void BaseFinetuning::restore_param_groups(Trainer& trainer, Module& module) {
  std::unordered_map<std::string, at::Tensor> by_name;
  for (const auto& item : module.named_parameters()) by_name.emplace(item.key(), item.value());
  const auto& optimizers = trainer.optimizers();
  for (const auto& [optimizer_idx, records] : internal_optimizer_metadata_) {
    TRAINBUS_CHECK(
        optimizer_idx >= 0 && static_cast<std::size_t>(optimizer_idx) < optimizers.size(),
        "BaseFinetuning: the checkpoint holds param groups of optimizer ", optimizer_idx,
        " but configure_optimizers() returned ", optimizers.size());
    torch::optim::Optimizer& optimizer = *optimizers[static_cast<std::size_t>(optimizer_idx)];
    TRAINBUS_CHECK(!optimizer.param_groups().empty(), "BaseFinetuning: optimizer ", optimizer_idx,
                   " has no param group");
    std::vector<torch::optim::OptimizerParamGroup> rebuilt;
    for (std::size_t i = 0; i < records.size(); ++i) {
      std::vector<at::Tensor> params;
      for (const auto& name : records[i].params) {
        auto found = by_name.find(name);
        TRAINBUS_CHECK(found != by_name.end(), "BaseFinetuning: the checkpoint's param group ", i,
                       " of optimizer ", optimizer_idx, " holds `", name,
                       "`, which the module has no parameter of; resume with the module the "
                       "checkpoint was saved from");
        // Unfrozen by finetune_function, it trains again (Lightning leaves it frozen here); one of
        // the module's own groups keeps what setup's freeze_before_training made of it.
        if (records[i].added) found->second.set_requires_grad(true);
        params.push_back(found->second);
      }
      // Options of the right type; the Trainer loads the saved ones (lr included) into them next.
      const auto& like = optimizer.param_groups()[std::min(i, optimizer.param_groups().size() - 1)];
      rebuilt.emplace_back(std::move(params), like.options().clone());
    }
    optimizer.param_groups().clear();
    for (auto& group : rebuilt) optimizer.param_groups().push_back(group);
  }
  // BatchNorm layers whose parameters are trainable again track their statistics again.
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    torch::nn::Module& child = *item.value();
    if (batch_norm_options(child) == nullptr) continue;
    const auto own = child.parameters(/*recurse=*/false);
    if (!own.empty() && own.front().requires_grad()) make_trainable(child);
  }
}

}  // namespace trainbus::callbacks
