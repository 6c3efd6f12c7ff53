// ModelSummary and RichModelSummary: Lightning's rows by max_depth, counts, sizes and table text;
// printed at fit start; added by the Trainer unless disabled or given.
#include "callbacks/model_summary.h"

#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include "tests/support/catch.h"

#include "callbacks/rich_model_summary.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// Lightning's docstring model: net = Sequential(Linear(256, 512), BatchNorm1d(512)), plus a
/// frozen head and a parameter of the root's own.
class DocModel : public BoringModule {
 public:
  DocModel() {
    net = register_module(
        "net", torch::nn::Sequential(torch::nn::Linear(256, 512), torch::nn::BatchNorm1d(512)));
    head = register_module("head", torch::nn::Linear(512, 10));
    for (auto& parameter : head->parameters()) parameter.set_requires_grad(false);
    scale = register_parameter("scale", torch::ones({3}));
  }
  torch::nn::Sequential net{nullptr};
  torch::nn::Linear head{nullptr};
  at::Tensor scale;
};

}  // namespace

TEST_CASE("human_readable_count abbreviates as Lightning's", "[callbacks][model_summary]") {
  CHECK(human_readable_count(0) == "0  ");
  CHECK(human_readable_count(123) == "123  ");
  CHECK(human_readable_count(1234) == "1.2 K");
  CHECK(human_readable_count(132096) == "132 K");
  CHECK(human_readable_count(2000000) == "2.0 M");
  CHECK(human_readable_count(3000000000) == "3.0 B");
  CHECK(human_readable_count(400000000000000) == "400 T");
  CHECK(human_readable_count(5000000000000000) == "5,000 T");
}

TEST_CASE("summarize lists the layers to max_depth with Lightning's counts",
          "[callbacks][model_summary]") {
  DocModel model;
  model.head->eval();
  const ModelSummaryData top = summarize(model, 1);
  REQUIRE(top.layers.size() == 3);  // layer (BoringModule's), net, head: the root's children
  CHECK(top.layers[1].name == "net");
  CHECK(top.layers[1].type == "Sequential");
  CHECK(top.layers[1].params == 256 * 512 + 512 + 2 * 512);  // 132 K, as Lightning's docstring
  CHECK(human_readable_count(top.layers[1].params) == "132 K");
  CHECK(top.layers[2].type == "Linear");
  CHECK_FALSE(top.layers[2].training);
  CHECK(top.total_params == 66 + 132608 + 5130 + 3);
  CHECK(top.trainable_params == top.total_params - 5130);
  CHECK(top.model_size_mb == Approx(top.total_params * 4 / 1e6));
  CHECK(top.modules_in_train_mode == 4);  // layer, net, net.0, net.1
  CHECK(top.modules_in_eval_mode == 1);
  CHECK(top.leftover_params() == 3);

  const ModelSummaryData all = summarize(model, -1);
  REQUIRE(all.layers.size() == 5);
  CHECK(all.layers[2].name == "net.0");
  CHECK(all.layers[3].name == "net.1");
  CHECK(all.layers[3].type == "BatchNorm1d");
  CHECK(summarize(model, 2).layers.size() == 5);
  CHECK(summarize(model, 0).layers.empty());
  CHECK(summarize(model, 0).total_params == top.total_params);
  CHECK_THROWS_WITH(summarize(model, -2), Contains("max_depth can be -1, 0 or > 0, got -2"));
}

TEST_CASE("summarize counts a shared submodule and tied weights once, as Python does",
          "[callbacks][model_summary]") {
  BoringModule model;
  auto shared = torch::nn::Linear(32, 32);
  model.register_module("encoder", shared);
  model.register_module("decoder", shared);  // the same module under a second name
  const ModelSummaryData summary = summarize(model, -1);
  REQUIRE(summary.layers.size() == 2);  // layer, encoder; decoder is encoder
  CHECK(summary.layers[1].name == "encoder");
  CHECK(summary.total_params == 66 + 32 * 32 + 32);
  CHECK(summary.modules_in_train_mode == 2);

  class Bare : public BoringModule {};
  Bare bare;
  bare.register_parameter("alone", torch::zeros({5}, torch::kFloat64));
  const ModelSummaryData doubles = summarize(bare);
  CHECK(doubles.leftover_params() == 5);
  CHECK(doubles.model_size_mb == Approx((66 * 4 + 5 * 8) / 1e6));  // each at its dtype's size

  ModelSummaryData big;
  big.model_size_mb = 1234.5678;
  CHECK_THAT(big.to_string(), Contains("1,234.568 Total estimated model params size (MB)"));
}

TEST_CASE("The summary table reads as Lightning's", "[callbacks][model_summary]") {
  BoringModule model;
  CHECK(summarize(model).to_string() ==
        "  | Name  | Type   | Params | Mode \n"
        "-----------------------------------------\n"
        "0 | layer | Linear | 66     | train\n"
        "-----------------------------------------\n"
        "66        Trainable params\n"
        "0         Non-trainable params\n"
        "66        Total params\n"
        "0.000     Total estimated model params size (MB)\n"
        "1         Modules in train mode\n"
        "0         Modules in eval mode");
  DocModel doc;
  CHECK_THAT(summarize(doc).to_string(),
             Contains("  | other params | n/a        | 3      | n/a  "));
}

TEST_CASE("RichModelSummary draws rich's box table", "[callbacks][model_summary]") {
  BoringModule model;
  CHECK(RichModelSummary::render(summarize(model), "bold magenta", false) ==
        "┏━━━┳━━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━━┓\n"
        "┃   ┃ Name  ┃ Type   ┃ Params ┃ Mode  ┃\n"
        "┡━━━╇━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━┩\n"
        "│ 0 │ layer │ Linear │     66 │ train │\n"
        "└───┴───────┴────────┴────────┴───────┘\n"
        "Trainable params: 66        \n"
        "Non-trainable params: 0         \n"
        "Total params: 66        \n"
        "Total estimated model params size (MB): 0         \n"
        "Modules in train mode: 1         \n"
        "Modules in eval mode: 0         \n");
  const std::string styled = RichModelSummary::render(summarize(model), "bold magenta", true);
  CHECK_THAT(styled, Contains("\x1b[1;35mName \x1b[0m"));
  CHECK_THAT(styled, Contains("\x1b[1mTrainable params\x1b[0m: 66"));
  CHECK_THROWS_WITH(RichModelSummary(RichModelSummaryOptions().header_style("bold pink")),
                    Contains("unknown word 'pink'"));
}

TEST_CASE("ModelSummary prints at fit start, the Trainer adds one unless told not to",
          "[callbacks][model_summary]") {
  std::ostringstream printed;
  auto summary = std::make_shared<ModelSummary>(ModelSummaryOptions().out(&printed));
  BoringModule module;
  RandomDataModule data(4, 1);
  {
    Trainer trainer(testing::trainer_options().max_epochs(1), {summary});
    CHECK(trainer.find_callbacks<ModelSummary>().size() == 1);  // the given one, no default
    trainer.fit(module, data);
  }
  CHECK_THAT(printed.str(), Contains("0 | layer | Linear | 66     | train"));
  REQUIRE(summary->last_summary().has_value());
  CHECK(summary->last_summary()->total_params == 66);

  CHECK(Trainer(testing::trainer_options()).find_callbacks<ModelSummary>().size() == 1);
  CHECK(Trainer(testing::trainer_options().enable_model_summary(false))
            .find_callbacks<ModelSummary>()
            .empty());
  auto rich = std::make_shared<RichModelSummary>();
  CHECK(Trainer(testing::trainer_options(), {rich}).find_callbacks<ModelSummary>().size() == 1);

  std::ostringstream silent;
  auto none = std::make_shared<ModelSummary>(ModelSummaryOptions().max_depth(0).out(&silent));
  Trainer trainer(testing::trainer_options().max_epochs(1), {none});
  trainer.fit(module, data);
  CHECK(silent.str().empty());
}

namespace {

/// Lightning's docstring model with forward (net only: BoringModule's layer and the frozen head are
/// not used) and an example input of 10 rows.
class DocModelWithForward : public DocModel {
 public:
  DocModelWithForward() {
    set_example_input_array(torch::zeros({10, 256}),
                            [this](const at::Tensor& input) { return forward(input); });
  }
  at::Tensor forward(const at::Tensor& input) { return net->forward(input); }
};

/// Layers registered one by one (no Sequential, after BoringModule's `layer`), forward their
/// composition.
class Chain : public BoringModule {
 public:
  Chain() {
    fc1 = register_module("fc1", torch::nn::Linear(32, 16));
    act = register_module("act", torch::nn::ReLU());
    fc2 = register_module("fc2", torch::nn::Linear(16, 2));
    set_example_input_array(torch::ones({4, 32}),
                            [this](const at::Tensor& input) { return forward(input); });
  }
  virtual at::Tensor forward(const at::Tensor& input) {
    return fc2->forward(act->forward(fc1->forward(input)));
  }
  torch::nn::Linear fc1{nullptr};
  torch::nn::ReLU act{nullptr};
  torch::nn::Linear fc2{nullptr};
};

/// Chain's layers, but forward doubles their output: no prefix of them computes it.
class Doubled : public Chain {
 public:
  at::Tensor forward(const at::Tensor& input) override { return 2 * Chain::forward(input); }
};

/// A layer that leaves its input as it is (Dropout in eval mode) last in the chain: the run must
/// not end at the ReLU before it, whose output is forward's too.
class EndsInDropout : public BoringModule {
 public:
  EndsInDropout() {
    fc = register_module("fc", torch::nn::Linear(32, 16));
    act = register_module("act", torch::nn::ReLU());
    drop = register_module("drop", torch::nn::Dropout(0.5));
    set_example_input_array(torch::ones({4, 32}),
                            [this](const at::Tensor& input) { return forward(input); });
  }
  at::Tensor forward(const at::Tensor& input) {
    return drop->forward(act->forward(fc->forward(input)));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::ReLU act{nullptr};
  torch::nn::Dropout drop{nullptr};
};

/// A module whose own forward returns two tensors (a VAE's mean and log-variance): it compiles,
/// and its summary sizes come from the function it gives.
class TwoOutputs : public BoringModule {
 public:
  TwoOutputs() {
    set_example_input_array(torch::zeros({1, 32}),
                            [this](const at::Tensor& x) { return std::get<0>(forward(x)); });
  }
  std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x) {
    const at::Tensor y = layer->forward(x);
    return {y, y.exp()};
  }
};

}  // namespace

TEST_CASE("With example_input_array the summary has Lightning's In and Out sizes",
          "[callbacks][model_summary]") {
  DocModelWithForward model;
  model.head->eval();
  SECTION("max_depth 1: net sized; BoringModule's layer and the head, unused by forward, are ?") {
    ModelSummaryData summary = summarize(model, 1);
    summary.set_sizes(layer_sizes(model));
    REQUIRE(summary.layers.size() == 3);
    CHECK(summary.layers[0].in_size == "?");
    CHECK(summary.layers[1].in_size == "[10, 256]");
    CHECK(summary.layers[1].out_size == "[10, 512]");
    CHECK(summary.layers[2].in_size == "?");
    CHECK(summary.layers[2].out_size == "?");
    // Lightning's table: the two columns after Mode; "n/a" in the other-params row.
    const std::string table = summary.to_string();
    CHECK_THAT(table, Contains("| Mode  | In sizes  | Out sizes\n"));
    CHECK_THAT(table, Contains("| train | [10, 256] | [10, 512]\n"));
    CHECK_THAT(table, Contains("| eval  | ?         | ?        \n"));
    CHECK_THAT(table, Contains("| n/a   | n/a       | n/a      \n"));
  }
  SECTION("max_depth -1: the Sequential's layers too") {
    ModelSummaryData summary = summarize(model, -1);
    summary.set_sizes(layer_sizes(model));
    REQUIRE(summary.layers.size() == 5);
    CHECK(summary.layers[2].name == "net.0");
    CHECK(summary.layers[2].in_size == "[10, 256]");
    CHECK(summary.layers[2].out_size == "[10, 512]");
    CHECK(summary.layers[3].name == "net.1");
    CHECK(summary.layers[3].in_size == "[10, 512]");
    CHECK(summary.layers[3].out_size == "[10, 512]");
  }
  // The modes are back as they were, and no gradient was recorded.
  CHECK(model.is_training());
  CHECK(model.net->is_training());
  CHECK_FALSE(model.head->is_training());
  for (const auto& parameter : model.parameters()) CHECK_FALSE(parameter.grad().defined());
}

TEST_CASE("In and Out sizes of layers registered one by one, and ? where forward is not a chain",
          "[callbacks][model_summary]") {
  Chain chain;
  const std::map<std::string, LayerSizes> sizes = layer_sizes(chain);
  CHECK(sizes.at("fc1").in_size == "[4, 32]");
  CHECK(sizes.at("fc1").out_size == "[4, 16]");
  CHECK(sizes.at("act").out_size == "[4, 16]");
  CHECK(sizes.at("fc2").out_size == "[4, 2]");
  CHECK(sizes.count("layer") == 0);  // BoringModule's, registered first, not in forward

  Doubled doubled;
  CHECK(layer_sizes(doubled).empty());
  ModelSummaryData summary = summarize(doubled, 1);
  summary.set_sizes(layer_sizes(doubled));
  CHECK(summary.has_sizes);
  CHECK(summary.layers[0].in_size == "?");

  EndsInDropout ends_in_dropout;
  const std::map<std::string, LayerSizes> through_dropout = layer_sizes(ends_in_dropout);
  REQUIRE(through_dropout.count("drop") == 1);
  CHECK(through_dropout.at("drop").in_size == "[4, 16]");
  CHECK(through_dropout.at("drop").out_size == "[4, 16]");

  BoringModule without_example;
  CHECK(layer_sizes(without_example).empty());
  CHECK_THROWS_WITH(without_example.set_example_input_array(torch::zeros({1, 32}), {}),
                    Contains("an example input needs the function that computes"));
  TwoOutputs two_outputs;
  const auto two_sizes = layer_sizes(two_outputs);
  REQUIRE(two_sizes.count("layer") == 1);
  CHECK(two_sizes.at("layer").in_size == "[1, 32]");
}

TEST_CASE("ModelSummary prints the sizes at fit start", "[callbacks][model_summary]") {
  std::ostringstream out;
  Chain module;
  Trainer trainer(trainer_options().max_epochs(1).limit_train_batches(1).limit_val_batches(0),
                  {std::make_shared<ModelSummary>(ModelSummaryOptions().out(&out))});
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK_THAT(out.str(), Contains("| In sizes | Out sizes") && Contains("| [4, 32]  | [4, 16]"));
}

TEST_CASE("ModelSummary says why the sizes are unknown when no chain computes forward",
          "[callbacks][model_summary]") {
  std::ostringstream out;
  Doubled module;
  Trainer trainer(trainer_options().max_epochs(1).limit_train_batches(1).limit_val_batches(0),
                  {std::make_shared<ModelSummary>(ModelSummaryOptions().out(&out))});
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK_THAT(out.str(), Contains("| In sizes | Out sizes") &&
                            Contains("In sizes and Out sizes are unknown (?): no run of the "
                                     "module's children"));

  std::ostringstream chain_out;
  Chain chain;
  Trainer chain_trainer(trainer_options().max_epochs(1).limit_train_batches(1).limit_val_batches(0),
                        {std::make_shared<ModelSummary>(ModelSummaryOptions().out(&chain_out))});
  chain_trainer.fit(chain, data);
  CHECK_THAT(chain_out.str(), !Contains("are unknown"));
}
