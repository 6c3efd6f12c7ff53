// checkpoint::SnapshotBuffers with tensors: copies land in the kept or prepared buffers and equal
// their source. (The pool's queueing is tested without LibTorch in
// tests/checkpoint/buffer_pool_test.cpp.)
#include <set>
#include <thread>
#include <vector>

#include <ATen/Functions.h>
#include <torch/utils.h>

#include "checkpoint/snapshot.h"
#include "tests/support/catch.h"

using namespace trainbus;

namespace {

std::vector<at::Tensor> sources() {
  torch::manual_seed(3);
  return {at::rand({1000}), at::rand({10, 10}), at::rand({7}, at::kDouble), at::rand({1000}),
          at::rand({10, 10}).t()};  // the last one strided: copied with copy_, not memcpy
}

std::vector<checkpoint::TensorBufferTraits::Layout> layouts_of(
    const std::vector<at::Tensor>& tensors) {
  std::vector<checkpoint::TensorBufferTraits::Layout> layouts;
  for (const auto& tensor : tensors)
    layouts.push_back(checkpoint::TensorBufferTraits::layout_of(tensor));
  return layouts;
}

}  // namespace

TEST_CASE("Snapshot copies go into prepared buffers, equal their source and share nothing with it",
          "[checkpoint][async]") {
  const std::vector<at::Tensor> live = sources();
  checkpoint::SnapshotBuffers buffers;
  REQUIRE(buffers.request_prepare(layouts_of(live)));
  std::thread preparer([&] { buffers.prepare(); });
  std::vector<at::Tensor> copies;
  for (const auto& tensor : live) copies.push_back(checkpoint::copy_into_buffer(buffers, tensor));
  preparer.join();
  CHECK(buffers.fresh_copies() == 0);
  for (size_t i = 0; i < live.size(); ++i) {
    CHECK(copies[i].data_ptr() != live[i].data_ptr());
    CHECK(at::equal(copies[i], live[i]));
  }
}

TEST_CASE("Buffers given back are reused by the next snapshot's copies", "[checkpoint][async]") {
  const std::vector<at::Tensor> live = sources();
  checkpoint::SnapshotBuffers buffers;
  std::vector<at::Tensor> first;
  for (const auto& tensor : live) first.push_back(checkpoint::copy_into_buffer(buffers, tensor));
  CHECK(buffers.fresh_copies() == live.size());
  std::set<void*> memory;
  for (const auto& copy : first) memory.insert(copy.data_ptr());
  buffers.give_back(std::move(first));
  for (size_t i = 0; i < live.size(); ++i) {
    live[i].add_(1.0);  // the second snapshot is of other values
    const at::Tensor copy = checkpoint::copy_into_buffer(buffers, live[i]);
    CHECK(at::equal(copy, live[i]));
    CHECK(memory.count(copy.data_ptr()) == 1);  // in a buffer of the first snapshot
  }
  CHECK(buffers.fresh_copies() == live.size());  // no new memory the second time
  CHECK(buffers.bytes() == 0);
}
