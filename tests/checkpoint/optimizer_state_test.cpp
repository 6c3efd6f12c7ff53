// Optimizer states in PyTorch's layout (what checkpoint hooks see): read field by field from
// LibTorch's own optimizers as LibTorch's serialisation would give them, written back in
// Optimizer::save's layout, and loaded into an optimizer with their param groups' options.
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <torch/nn/modules/linear.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "base/errors.h"
#include "checkpoint/optimizer_state.h"
#include "tests/support/catch.h"

using namespace trainbus;
using namespace trainbus::checkpoint;

namespace {

using MakeOptimizer = std::function<std::unique_ptr<torch::optim::Optimizer>(
    std::vector<torch::optim::OptimizerParamGroup>)>;

// Two param groups (a Linear(3, 2)'s weight, then its bias at lr 0.25), after `steps` steps on a
// fixed loss.
std::unique_ptr<torch::optim::Optimizer> stepped(torch::nn::Linear& layer,
                                                 const MakeOptimizer& make, int steps) {
  std::unique_ptr<torch::optim::Optimizer> optimizer =
      make({torch::optim::OptimizerParamGroup({layer->weight}),
            torch::optim::OptimizerParamGroup({layer->bias})});
  optimizer->param_groups()[1].options().set_lr(0.25);
  for (int i = 0; i < steps; ++i) {
    optimizer->zero_grad();
    layer->forward(at::ones({4, 3})).pow(2).sum().backward();
    optimizer->step();
  }
  return optimizer;
}

// LibTorch's own serialisation of `optimizer`, read back.
torch::serialize::InputArchive saved(torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive out;
  optimizer.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  std::istringstream in_bytes(bytes.str());
  torch::serialize::InputArchive in;
  in.load_from(in_bytes);
  return in;
}

// Deep equality, tensors by value (IValue's == asks a tensor for one truth value).
bool same(const c10::IValue& a, const c10::IValue& b) {
  if (a.isTensor() && b.isTensor()) return a.toTensor().equal(b.toTensor());
  if (a.isGenericDict() && b.isGenericDict()) {
    const auto x = a.toGenericDict();
    const auto y = b.toGenericDict();
    if (x.size() != y.size()) return false;
    for (const auto& entry : x) {
      const auto other = y.find(entry.key());
      if (other == y.end() || !same(entry.value(), other->value())) return false;
    }
    return true;
  }
  if (a.isList() && b.isList()) {
    const auto x = a.toList();
    const auto y = b.toList();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (!same(x.get(i), y.get(i))) return false;
    }
    return true;
  }
  return a == b;
}

bool same(const StateDict& a, const StateDict& b) { return same(a.to_ivalue(), b.to_ivalue()); }

}  // namespace

TEST_CASE("An optimizer's state reads as PyTorch's state_dict and loads back exactly",
          "[checkpoint][optimizer_state]") {
  const std::vector<std::pair<std::string, MakeOptimizer>> optimizers{
      {"SGD",
       [](std::vector<torch::optim::OptimizerParamGroup> p) {
         return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(0.1).momentum(0.9));
       }},
      {"Adam",
       [](std::vector<torch::optim::OptimizerParamGroup> p) {
         return std::make_unique<torch::optim::Adam>(p,
                                                     torch::optim::AdamOptions(0.01).amsgrad(true));
       }},
      {"AdamW",
       [](std::vector<torch::optim::OptimizerParamGroup> p) {
         return std::make_unique<torch::optim::AdamW>(p, torch::optim::AdamWOptions(0.01));
       }},
      {"Adagrad",
       [](std::vector<torch::optim::OptimizerParamGroup> p) {
         return std::make_unique<torch::optim::Adagrad>(p, torch::optim::AdagradOptions(0.1));
       }},
      {"RMSprop",
       [](std::vector<torch::optim::OptimizerParamGroup> p) {
         return std::make_unique<torch::optim::RMSprop>(
             p, torch::optim::RMSpropOptions(0.01).momentum(0.5).centered(true));
       }},
  };
  for (const auto& [name, make] : optimizers) {
    DYNAMIC_SECTION(name) {
      torch::nn::Linear layer(3, 2);
      std::unique_ptr<torch::optim::Optimizer> optimizer = stepped(layer, make, 3);
      const StateDict state = optimizer_state_dict(*optimizer);

      // The same as LibTorch's own serialisation gives, in PyTorch's layout.
      torch::serialize::InputArchive archive = saved(*optimizer);
      CHECK(same(state, read_optimizer_state(archive, name)));
      const auto groups = state.at("param_groups").toList();
      REQUIRE(groups.size() == 2);
      CHECK(groups.get(1).toGenericDict().at("lr").toDouble() == 0.25);
      CHECK(groups.get(1).toGenericDict().at("params").toIntList().vec() ==
            std::vector<int64_t>{1});
      CHECK(state.dict_at("state").contains("0"));
      CHECK(state.dict_at("state").contains("1"));

      // Loaded into a fresh optimizer of the same layout: the same state, options included.
      torch::nn::Linear other(3, 2);
      std::unique_ptr<torch::optim::Optimizer> fresh = stepped(other, make, 0);
      fresh->param_groups()[1].options().set_lr(1.0);
      load_optimizer_state(*fresh, state, name);
      CHECK(same(optimizer_state_dict(*fresh), state));
      CHECK(fresh->param_groups()[1].options().get_lr() == 0.25);

      // A state changed in the dict is the state loaded.
      StateDict edited = state;
      StateDict states = edited.dict_at("state");
      StateDict first = states.dict_at("0");
      for (const auto& [field, value] : StateDict(first)) {
        if (value.isTensor()) first.insert(field, at::zeros_like(value.toTensor()));
      }
      states.insert("0", first);
      edited.insert("state", states);
      load_optimizer_state(*fresh, edited, name);
      const StateDict reloaded = optimizer_state_dict(*fresh).dict_at("state").dict_at("0");
      for (const auto& [field, value] : reloaded) {
        INFO(field);
        if (value.isTensor()) CHECK(value.toTensor().abs().sum().item<double>() == 0.0);
      }
    }
  }
}

TEST_CASE("A state that does not fit the optimizer is a CheckpointError naming it",
          "[checkpoint][optimizer_state]") {
  torch::nn::Linear layer(3, 2);
  auto optimizer = std::make_unique<torch::optim::SGD>(
      std::vector<at::Tensor>{layer->weight, layer->bias}, torch::optim::SGDOptions(0.1));
  StateDict state = optimizer_state_dict(*optimizer);
  torch::nn::Linear other(3, 2);
  auto one_param = std::make_unique<torch::optim::SGD>(std::vector<at::Tensor>{other->weight},
                                                       torch::optim::SGDOptions(0.1));
  CHECK_THROWS_AS(load_optimizer_state(*one_param, state, "checkpoint.optimizer_states[0]"),
                  CheckpointError);
  CHECK_THROWS_WITH(load_optimizer_state(*one_param, state, "checkpoint.optimizer_states[0]"),
                    Catch::Contains("checkpoint.optimizer_states[0]"));
  StateDict no_groups = state;
  no_groups.erase("param_groups");
  CHECK_THROWS_WITH(load_optimizer_state(*optimizer, no_groups, "checkpoint.optimizer_states[0]"),
                    Catch::Contains("has no list \"param_groups\""));
}

TEST_CASE("A loaded state goes to its parameter's dtype (and device), a wrong shape is refused",
          "[checkpoint][optimizer_state]") {
  // As PyTorch's Optimizer.load_state_dict: floating point state follows its parameter (a
  // checkpoint written from CPU copies, resumed on CUDA; here a float32 state, float64 model).
  const auto adam = [](std::vector<torch::optim::OptimizerParamGroup> p) {
    return std::make_unique<torch::optim::Adam>(p, torch::optim::AdamOptions(0.01));
  };
  torch::nn::Linear single(3, 2);
  const StateDict state = optimizer_state_dict(*stepped(single, adam, 2));
  torch::nn::Linear wide(3, 2);
  wide->to(at::kDouble);
  std::unique_ptr<torch::optim::Optimizer> fresh = stepped(wide, adam, 0);
  load_optimizer_state(*fresh, state, "checkpoint.optimizer_states[0]");
  const StateDict loaded = optimizer_state_dict(*fresh).dict_at("state").dict_at("0");
  CHECK(loaded.at("exp_avg").toTensor().scalar_type() == at::kDouble);
  CHECK(loaded.at("exp_avg_sq").toTensor().scalar_type() == at::kDouble);
  CHECK(loaded.at("exp_avg")
            .toTensor()
            .to(at::kFloat)
            .equal(state.dict_at("state").dict_at("0").at("exp_avg").toTensor()));

  // A hook that put a tensor of another shape: refused before anything is loaded, naming it.
  StateDict edited = state;
  StateDict states = edited.dict_at("state");
  StateDict second = states.dict_at("1");
  second.insert("exp_avg", at::zeros({5}));
  states.insert("1", second);
  edited.insert("state", states);
  torch::nn::Linear other(3, 2);
  std::unique_ptr<torch::optim::Optimizer> target = stepped(other, adam, 0);
  CHECK_THROWS_AS(load_optimizer_state(*target, edited, "checkpoint.optimizer_states[0]"),
                  CheckpointError);
  CHECK_THROWS_WITH(load_optimizer_state(*target, edited, "checkpoint.optimizer_states[0]"),
                    Catch::Contains("checkpoint.optimizer_states[0]") &&
                        Catch::Contains("exp_avg") && Catch::Contains("[5]") &&
                        Catch::Contains("[2]"));
  CHECK(target->state().empty());
}
