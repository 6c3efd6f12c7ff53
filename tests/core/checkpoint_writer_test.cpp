// CheckpointWriter: which pending save a newer one replaces, and which it waits for.
#include <filesystem>
#include <future>
#include <thread>

#include <torch/nn/modules/linear.h>

#include "core/checkpoint_io.h"
#include "core/checkpoint_writer.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::testing;
namespace fs = std::filesystem;

namespace {

CheckpointJob job(const std::string& path, const std::string& group) {
  CheckpointJob job;
  job.path = path;
  job.snapshot = std::make_unique<CheckpointSnapshot>();
  snapshot_module(*torch::nn::Linear(8, 4), /*copy_tensors=*/true, *job.snapshot);
  add_trainer_part(*job.snapshot);
  job.replace_group = group;
  return job;
}

}  // namespace

TEST_CASE("A pending save is replaced only by a newer save of its group; others wait for it to start",
          "[core][checkpoint][async]") {
  TempDir dir;
  CheckpointWriter writer;
  // The first save stays in flight until released, so the next ones queue behind it.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  CheckpointJob first = job(dir.file("first"), "");
  first.after_commit = [released](const std::string&) { released.wait(); };
  CHECK_FALSE(writer.submit(std::move(first)).has_value());

  CHECK_FALSE(writer.submit(job(dir.file("latest-1"), "latest")).has_value());
  // Same group: replaces the pending one at once.
  CHECK(writer.submit(job(dir.file("latest-2"), "latest")) == dir.file("latest-1"));
  // Another group: waits until latest-2 has started, and replaces nothing.
  auto other = std::async(std::launch::async, [&] { return writer.submit(job(dir.file("top-k"), "")); });
  while (writer.stats().waited == 0) std::this_thread::yield();  // it is waiting now
  release.set_value();
  CHECK_FALSE(other.get().has_value());
  writer.wait();

  const CheckpointWriterStats stats = writer.stats();
  CHECK(stats.submitted == 4);
  CHECK(stats.replaced == 1);
  CHECK(stats.waited == 1);
  CHECK(stats.written == 3);
  CHECK(stats.bytes_held == 0);
  CHECK(stats.peak_bytes_held == 2 * (8 * 4 + 4) * sizeof(float));  // never more than two snapshots
  CHECK_FALSE(fs::exists(dir.file("latest-1")));
  for (const char* name : {"first", "latest-2", "top-k"}) CHECK_NOTHROW(read_checkpoint(dir.file(name)));
}
