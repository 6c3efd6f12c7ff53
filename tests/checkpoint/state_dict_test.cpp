// StateDict::deep_copy: what an asynchronous checkpoint keeps of a callback's state.
#include <ATen/Functions.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>

#include "checkpoint/state_dict.h"
#include "tests/support/catch.h"

using namespace trainbus;

TEST_CASE("A deep copy shares no tensor, list or dict with the state, at any depth",
          "[checkpoint]") {
  at::Tensor shared = at::zeros({4});
  c10::List<at::Tensor> tensors({shared, at::ones({2})});
  c10::Dict<std::string, at::Tensor> nested;
  nested.insert("weights", at::zeros({3}));
  StateDict state;
  state.insert("a", shared);
  state.insert("b", shared);  // the same tensor twice
  state.insert("tensors", tensors);
  state.insert("nested", nested);
  state.insert("count", int64_t{7});

  const StateDict copy = state.deep_copy();
  shared.fill_(1);
  tensors.set(1, at::full({2}, 5.0));
  nested.insert_or_assign("weights", at::full({3}, 9.0));

  CHECK(copy.at("a").toTensor().sum().item<double>() == 0.0);
  CHECK(copy.at("a").toTensor().is_same(copy.at("b").toTensor()));  // still one tensor
  const auto copied_tensors = copy.at("tensors").toTensorList();
  CHECK(copied_tensors.get(0).sum().item<double>() == 0.0);
  CHECK(copied_tensors.get(1).sum().item<double>() == 2.0);
  CHECK(copy.at("nested").toGenericDict().at("weights").toTensor().sum().item<double>() == 0.0);
  CHECK(copy.at("count").toInt() == 7);
  CHECK(copy.at("a").toTensor().device().is_cpu());
}

TEST_CASE("insert_at changes a nested entry in place, dict_at gives a copy", "[checkpoint]") {
  // Lightning's checkpoint["optimizer_states"][0]["state"][0]["exp_avg"] = t.
  StateDict first;
  first.insert("exp_avg", at::ones({2}));
  first.insert("step", int64_t{3});
  StateDict states;
  states.insert("0", first);
  StateDict optimizer;
  optimizer.insert("state", states);

  optimizer.dict_at("state").dict_at("0").insert("step", int64_t{9});  // a copy: no effect
  CHECK(optimizer.dict_at("state").dict_at("0").at("step").toInt() == 3);

  optimizer.insert_at({"state", "0", "exp_avg"}, at::zeros({2}));
  optimizer.insert_at({"state", "0", "step"}, int64_t{4});
  const StateDict changed = optimizer.dict_at("state").dict_at("0");
  CHECK(changed.at("exp_avg").toTensor().equal(at::zeros({2})));
  CHECK(changed.at("step").toInt() == 4);

  CHECK_THROWS_WITH(optimizer.insert_at({"state", "7", "step"}, int64_t{1}),
                    Catch::Contains("no entry `7`"));
  CHECK_THROWS_WITH(optimizer.insert_at({"state", "0", "step", "x"}, int64_t{1}),
                    Catch::Contains("step"));
  CHECK_THROWS_AS(optimizer.insert_at({}, int64_t{1}), std::invalid_argument);
}
