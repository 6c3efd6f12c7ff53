// Every torch test case starts from the same draw of LibTorch's default generator. LibTorch seeds
// it at random in each process, so a test that draws its module or data without a seed of its
// own passed or failed by the draw (two did so in CI). Seeded here, a test case sees one fixed
// draw wherever it runs, alone or after others. Linked into the torch test binaries as an object:
// from a static library the listener, which nothing references, would be dropped.
#include <torch/utils.h>

// The listener base class is part of Catch2's external interfaces.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

namespace {

class SeedEachTestCase : public Catch::TestEventListenerBase {
 public:
  using Catch::TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    Catch::TestEventListenerBase::testCaseStarting(info);
    torch::manual_seed(0);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SeedEachTestCase)
