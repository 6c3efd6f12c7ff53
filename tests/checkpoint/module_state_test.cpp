// The part `model` written from a checkpoint's state_dict is laid out exactly as
// torch::nn::Module::save lays the module out, so that Module::load (and trainbus versions that
// load it so) read it: an archive per serializable child, empty ones (ReLU, Flatten) included.
#include <sstream>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "base/errors.h"
#include "checkpoint/module_state.h"
#include "tests/support/catch.h"

using namespace trainbus;
using namespace trainbus::checkpoint;

namespace module_state_test {

/// Parameterless children at several depths, and buffers (BatchNorm's running statistics).
struct Net : torch::nn::Module {
  Net() {
    net = register_module(
        "net",
        torch::nn::Sequential(torch::nn::Linear(4, 3), torch::nn::ReLU(), torch::nn::BatchNorm1d(3),
                              torch::nn::Dropout(0.1), torch::nn::Linear(3, 2)));
    act = register_module("act", torch::nn::ReLU());
    head = register_module("head", torch::nn::Linear(2, 1));
  }
  torch::nn::Sequential net{nullptr};
  torch::nn::ReLU act{nullptr};
  torch::nn::Linear head{nullptr};
};

torch::serialize::InputArchive reread(torch::serialize::OutputArchive& archive) {
  std::ostringstream bytes;
  archive.save_to(bytes);
  std::istringstream in_bytes(bytes.str());
  torch::serialize::InputArchive in;
  in.load_from(in_bytes);
  return in;
}

// Every entry of `archive` in order, nested archives by their dotted path, each with its kind
// (tensors with their shape and requires_grad), as the archive's pickled module lays them out.
void layout(torch::serialize::InputArchive& archive, const std::string& prefix,
            std::vector<std::string>& out) {
  for (const std::string& key : archive.keys()) {
    torch::serialize::InputArchive child;
    if (archive.try_read(key, child)) {
      out.push_back(prefix + key + "/");
      layout(child, prefix + key + ".", out);
      continue;
    }
    c10::IValue value;
    archive.read(key, value);
    std::ostringstream entry;
    entry << prefix << key;
    if (value.isTensor())
      entry << " " << value.toTensor().sizes() << " grad=" << value.toTensor().requires_grad();
    out.push_back(entry.str());
  }
}

std::vector<std::string> layout(torch::serialize::OutputArchive& archive) {
  torch::serialize::InputArchive in = reread(archive);
  std::vector<std::string> out;
  layout(in, "", out);
  return out;
}

}  // namespace module_state_test

using namespace module_state_test;

TEST_CASE("The part `model` is Module::save's layout, empty child archives included",
          "[checkpoint][module_state]") {
  Net saved;
  torch::serialize::OutputArchive by_libtorch;
  saved.save(by_libtorch);
  torch::serialize::OutputArchive by_state;
  write_module_state(module_state_dict(saved), saved, by_state);
  const std::vector<std::string> expected = layout(by_libtorch);
  CHECK(layout(by_state) == expected);
  CHECK(expected.size() == 19);  // the walk saw the whole module

  // Module::load reads it (main's trainbus resumes with it).
  Net loaded;
  torch::serialize::InputArchive in = reread(by_state);
  REQUIRE_NOTHROW(loaded.load(in));
  CHECK(loaded.head->weight.equal(saved.head->weight));
  CHECK(loaded.net[2]->named_buffers()["running_var"].equal(
      saved.net[2]->named_buffers()["running_var"]));
}

TEST_CASE("A state_dict that does not fit changes none of the module's weights",
          "[checkpoint][module_state]") {
  Net source;
  StateDict state = module_state_dict(source);
  state.insert("net.4.weight", at::zeros({7, 3}));  // checked after head.* by name
  Net target;
  const at::Tensor before = target.head->weight.clone();
  CHECK_THROWS_WITH(load_module_state(target, state, "ckpt"),
                    Catch::Contains("net.4.weight") && Catch::Contains("[7, 3]"));
  CHECK(target.head->weight.equal(before));

  state.insert("net.4.weight", std::string("not a tensor"));
  CHECK_THROWS_WITH(load_module_state(target, state, "ckpt"), Catch::Contains("not a tensor"));
  CHECK(target.head->weight.equal(before));
}
