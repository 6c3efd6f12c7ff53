// SnapshotBuffers: what a snapshot copies into, and the buffers prepared for it ahead of a save.
#include <thread>
#include <vector>

#include <ATen/Functions.h>
#include <torch/utils.h>

#include "core/checkpoint_snapshot.h"
#include "tests/support/catch.h"

using namespace trainbus;

namespace {

std::vector<at::Tensor> sources() {
  torch::manual_seed(3);
  return {at::rand({1000}), at::rand({10, 10}), at::rand({7}, at::kDouble), at::rand({1000})};
}

std::vector<SnapshotBuffers::Layout> layouts_of(const std::vector<at::Tensor>& tensors) {
  std::vector<SnapshotBuffers::Layout> layouts;
  for (const auto& tensor : tensors) layouts.push_back(SnapshotBuffers::layout_of(tensor));
  return layouts;
}

std::size_t bytes_of(const std::vector<at::Tensor>& tensors) {
  std::size_t bytes = 0;
  for (const auto& tensor : tensors) bytes += tensor.nbytes();
  return bytes;
}

}  // namespace

TEST_CASE("A snapshot taken while its buffers are prepared waits for them and copies exactly",
          "[core][checkpoint][async]") {
  const std::vector<at::Tensor> live = sources();
  SnapshotBuffers buffers;
  REQUIRE(buffers.request_prepare(layouts_of({live[0]})));
  // A newer request before the queued run starts is folded into it: one run, the newest layouts.
  CHECK_FALSE(buffers.request_prepare(layouts_of(live)));
  // The preparation runs beside the snapshot, as on the writer's second thread; copy_of waits for
  // each buffer to be handed back, so no copy goes to new memory, whichever thread is faster.
  std::thread preparer([&] { buffers.prepare(); });
  std::vector<at::Tensor> copies;
  for (const auto& tensor : live) copies.push_back(buffers.copy_of(tensor));
  preparer.join();

  CHECK(buffers.fresh_copies() == 0);
  for (size_t i = 0; i < live.size(); ++i) {
    CHECK(copies[i].data_ptr() != live[i].data_ptr());
    CHECK(at::equal(copies[i], live[i]));
  }
  CHECK(buffers.bytes() == 0);  // all four taken by the snapshot
  CHECK(buffers.request_prepare(layouts_of(live)));  // the run has ended: a new request needs a new run
}

TEST_CASE("Prepared buffers replace the kept ones: what the next snapshot needs, never two sets",
          "[core][checkpoint][async]") {
  const std::vector<at::Tensor> live = sources();
  SnapshotBuffers buffers;
  std::vector<at::Tensor> first;
  for (const auto& tensor : live) first.push_back(buffers.copy_of(tensor));
  CHECK(buffers.fresh_copies() == live.size());  // nothing kept or prepared yet
  const std::vector<void*> first_memory = {first[0].data_ptr(), first[1].data_ptr()};
  buffers.give_back(std::move(first));
  CHECK(buffers.bytes() == bytes_of(live));

  SECTION("a preparation reuses kept buffers of the layouts asked for and drops the others") {
    REQUIRE(buffers.request_prepare(layouts_of({live[1]})));
    buffers.prepare();
    CHECK(buffers.bytes() == live[1].nbytes());
    const at::Tensor copy = buffers.copy_of(live[1]);
    CHECK(copy.data_ptr() == first_memory[1]);  // the kept buffer, not new memory
    CHECK(at::equal(copy, live[1]));
  }
  SECTION("a snapshot given back while buffers are prepared is dropped") {
    std::vector<at::Tensor> second;
    for (const auto& tensor : live) second.push_back(buffers.copy_of(tensor));
    REQUIRE(buffers.request_prepare(layouts_of(live)));
    buffers.give_back(std::move(second));
    CHECK(buffers.bytes() == 0);  // the kept ones went into `second`, and `second` is not kept
    buffers.prepare();
    CHECK(buffers.bytes() == bytes_of(live));
  }
}
