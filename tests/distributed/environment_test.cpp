// DistributedEnvironment from torchrun's variables: one process without them, every field from a
// full set, and an error naming the variable for each bad or missing one.
#include "distributed/environment.h"

#include <string>

#include <catch2/catch.hpp>

#include "base/errors.h"
#include "tests/support/scoped_environment.h"

using namespace trainbus;
using namespace trainbus::distributed;
using trainbus::testing::ScopedEnvironment;

namespace {

const char* const kVariables[] = {"RANK",       "WORLD_SIZE",  "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                  "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"};

// Every torchrun variable unset for the test, whatever the shell running it has.
void clear(ScopedEnvironment& environment) {
  for (const char* name : kVariables) environment.unset(name);
}

// A job of 4 ranks on 2 machines, as torchrun describes rank 3 (node 1, local rank 1).
void set_rank_3_of_4(ScopedEnvironment& environment) {
  environment.set("RANK", "3")
      .set("WORLD_SIZE", "4")
      .set("LOCAL_RANK", "1")
      .set("LOCAL_WORLD_SIZE", "2")
      .set("GROUP_RANK", "1")
      .set("MASTER_ADDR", "10.0.0.1")
      .set("MASTER_PORT", "29400");
}

std::string error_of_environment() {
  try {
    environment_from_variables();
  } catch (const MisconfigurationError& error) {
    return error.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("Without torchrun's variables the job is one process", "[distributed]") {
  ScopedEnvironment environment;
  clear(environment);
  const DistributedEnvironment one = environment_from_variables();
  CHECK(one.rank == 0);
  CHECK(one.world_size == 1);
  CHECK(one.local_rank == 0);
  CHECK(one.local_world_size == 1);
  CHECK(one.node_rank == 0);
  CHECK_FALSE(one.distributed());

  SECTION("WORLD_SIZE=1 is one process too, whatever else is set") {
    environment.set("WORLD_SIZE", "1").set("RANK", "7");
    CHECK_FALSE(environment_from_variables().distributed());
    CHECK(environment_from_variables().rank == 0);
  }
  SECTION("an empty variable counts as unset") {
    environment.set("WORLD_SIZE", "");
    CHECK(environment_from_variables().world_size == 1);
  }
}

TEST_CASE("A full torchrun set gives every field", "[distributed]") {
  ScopedEnvironment environment;
  clear(environment);
  set_rank_3_of_4(environment);
  const DistributedEnvironment rank = environment_from_variables();
  CHECK(rank.rank == 3);
  CHECK(rank.world_size == 4);
  CHECK(rank.local_rank == 1);
  CHECK(rank.local_world_size == 2);
  CHECK(rank.node_rank == 1);
  CHECK(rank.master_addr == "10.0.0.1");
  CHECK(rank.master_port == 29400);
  CHECK(rank.distributed());
  CHECK(rank.describe() == "rank 3/4 (local 1/2, node 1) via 10.0.0.1:29400");
  // How every distributed error starts.
  CHECK(rank.rank_message("all-reduce failed") == "rank 3 of 4: all-reduce failed");

  SECTION("LOCAL_WORLD_SIZE, LOCAL_RANK and GROUP_RANK default to one machine") {
    environment.unset("LOCAL_WORLD_SIZE").unset("LOCAL_RANK").unset("GROUP_RANK");
    const DistributedEnvironment alone = environment_from_variables();
    CHECK(alone.local_world_size == 4);
    CHECK(alone.local_rank == 3);
    CHECK(alone.node_rank == 0);
  }
  SECTION("environment_variables and export_environment_variables write what is read back") {
    DistributedEnvironment written;
    written.rank = 5;
    written.world_size = 8;
    written.local_rank = 1;
    written.local_world_size = 4;
    written.node_rank = 1;
    written.master_addr = "node0";
    written.master_port = 1234;
    CHECK(environment_variables(written).size() == 7);
    export_environment_variables(written);
    const DistributedEnvironment read = environment_from_variables();
    CHECK(read.describe() == written.describe());
  }
}

TEST_CASE("A bad or missing variable is named in the error", "[distributed]") {
  ScopedEnvironment environment;
  clear(environment);
  set_rank_3_of_4(environment);
  struct Case {
    const char* name;
    const char* value;  // nullptr: unset
    const char* expected;
  };
  const Case cases[] = {
      {"WORLD_SIZE", "four", "WORLD_SIZE='four' is not a number"},
      {"WORLD_SIZE", "0", "WORLD_SIZE='0' is not a number in [1, "},
      {"RANK", "4", "RANK='4' is not a number in [0, 3]"},
      {"RANK", "-1", "RANK='-1' is not a number in [0, 3]"},
      {"RANK", "1x", "RANK='1x' is not a number"},
      {"RANK", nullptr, "WORLD_SIZE=4 but RANK is not set"},
      {"MASTER_ADDR", nullptr, "WORLD_SIZE=4 but MASTER_ADDR is not set"},
      {"MASTER_PORT", nullptr, "WORLD_SIZE=4 but MASTER_PORT is not set"},
      {"MASTER_PORT", "0", "MASTER_PORT='0' is not a number in [1, 65535]"},
      {"MASTER_PORT", "65536", "MASTER_PORT='65536' is not a number in [1, 65535]"},
      {"LOCAL_WORLD_SIZE", "5", "LOCAL_WORLD_SIZE='5' is not a number in [1, 4]"},
      {"LOCAL_RANK", "2", "LOCAL_RANK='2' is not a number in [0, 1]"},
      {"GROUP_RANK", "-1", "GROUP_RANK='-1' is not a number in [0, "},
      {"GROUP_RANK", "one", "GROUP_RANK='one' is not a number"},
  };
  for (const Case& bad : cases) {
    ScopedEnvironment changed;
    if (bad.value != nullptr) {
      changed.set(bad.name, bad.value);
    } else {
      changed.unset(bad.name);
    }
    INFO(bad.name << "=" << (bad.value != nullptr ? bad.value : "(unset)"));
    CHECK_THAT(error_of_environment(), Catch::Contains(bad.expected));
  }
  // Each value is out of range only with the others: the set itself is fine.
  CHECK(error_of_environment() == "no error");
}
