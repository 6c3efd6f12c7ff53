// An optimizer that holds a tensor twice (tied weights, which LibTorch's parameters() lists under
// each name) is named when configure_optimizers returns, as PyTorch's Optimizer warns.
#include <memory>
#include <string>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/captured_stream.h"
#include "tests/support/catch.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;

namespace {

// A Linear whose weight is also registered as the module's own "tied" parameter, as an output
// layer tied to an embedding is: one tensor, two names.
class TiedModule : public Module {
 public:
  explicit TiedModule(bool distinct_optimizer) : distinct_optimizer_(distinct_optimizer) {
    layer = register_module("layer", torch::nn::Linear(32, 2));
    register_parameter("tied", layer->weight);
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    return torch::nn::functional::mse_loss(layer->forward(batch.data),
                                           torch::ones({batch.data.size(0), 2}));
  }
  OptimizerConfig configure_optimizers() override {
    std::vector<at::Tensor> tensors = parameters();
    if (distinct_optimizer_) tensors = {layer->weight, layer->bias};
    return std::make_shared<torch::optim::SGD>(tensors, torch::optim::SGDOptions(0.1));
  }
  torch::nn::Linear layer{nullptr};

 private:
  bool distinct_optimizer_;
};

std::string warnings_of_a_fit(bool distinct_optimizer) {
  TiedModule module(distinct_optimizer);
  testing::RandomDataModule data(8, 4);
  data.has_val = false;
  Trainer trainer(testing::trainer_options().max_epochs(1).enable_model_summary(false));
  testing::CapturedStream errors(std::cerr);
  trainer.fit(module, data);
  return errors.text();
}

}  // namespace

TEST_CASE("an optimizer built from parameters() with tied weights is named, with the fix",
          "[fit]") {
  const std::string text = warnings_of_a_fit(/*distinct_optimizer=*/false);
  CHECK_THAT(text, Catch::Contains("configure_optimizers(): optimizer 0 holds the parameter "
                                   "'tied', 'layer.weight' 2 times (param groups 0, 0), so every "
                                   "step updates it 2 times"));
  CHECK_THAT(text, Catch::Contains("build the optimizer from the distinct tensors"));
  CHECK_THAT(text, !Catch::Contains("layer.bias"));
}

TEST_CASE("an optimizer built from the distinct tensors is not warned about", "[fit]") {
  CHECK_THAT(warnings_of_a_fit(/*distinct_optimizer=*/true),
             !Catch::Contains("configure_optimizers(): optimizer"));
}
