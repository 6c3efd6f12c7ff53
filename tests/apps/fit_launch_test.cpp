// `trainbus fit --nproc-per-node N`: the launcher's flags, when the fit command becomes the
// launcher, and the command line its ranks run (the launcher itself: tests/distributed).
#include "apps/fit_launch.h"

#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <catch2/catch.hpp>

#include "apps/fit_command.h"
#include "apps/fit_config.h"
#include "base/errors.h"
#include "tests/apps/parse_fit.h"
#include "tests/support/scoped_environment.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::apps;
using trainbus::testing::parse_fit;
using trainbus::testing::ScopedEnvironment;
using trainbus::testing::TempDir;

TEST_CASE("The launcher's flags set the launch options", "[launch]") {
  const FitArguments defaults = parse_fit({});
  CHECK(defaults.launch.nproc_per_node() == 1);
  CHECK(defaults.launch.nnodes() == 1);
  CHECK(defaults.launch.node_rank() == 0);
  CHECK(defaults.launch.master_addr() == "127.0.0.1");
  CHECK(defaults.launch.master_port() == 29500);

  const FitArguments args = parse_fit({"--nproc-per-node", "4", "--nnodes=2", "--node-rank", "1",
                                       "--master-addr", "node0", "--master-port", "29444"});
  CHECK(args.launch.nproc_per_node() == 4);
  CHECK(args.launch.nnodes() == 2);
  CHECK(args.launch.node_rank() == 1);
  CHECK(args.launch.master_addr() == "node0");
  CHECK(args.launch.master_port() == 29444);
  CHECK_NOTHROW(args.launch.validate());

  CHECK_THROWS_AS(parse_fit({"--nproc-per-node", "0"}), CLI::ValidationError);
  CHECK_THROWS_AS(parse_fit({"--master-port", "70000"}), CLI::ValidationError);
  CHECK_THROWS_WITH(parse_fit({"--nnodes", "2", "--node-rank", "2"}).launch.validate(),
                    Catch::StartsWith("--node-rank must be in [0, --nnodes=2), got 2"));
}

TEST_CASE("trainbus fit launches when it takes more than one process and is not a rank",
          "[launch]") {
  ScopedEnvironment environment;
  environment.unset(distributed::kLaunchedVariable).set("RANK", "1").set("WORLD_SIZE", "2");
  CHECK_FALSE(fit_launches_ranks(distributed::LaunchOptions()));
  // A RANK of the user's (or torchrun's) does not make this process a rank of the launcher's.
  CHECK(fit_launches_ranks(distributed::LaunchOptions().nproc_per_node(2)));
  CHECK(fit_launches_ranks(distributed::LaunchOptions().nnodes(2)));
  environment.set(distributed::kLaunchedVariable, "1");
  CHECK_FALSE(fit_launches_ranks(distributed::LaunchOptions().nproc_per_node(2)));
}

TEST_CASE("The ranks run the command line without the launcher's flags", "[launch]") {
  CHECK(without_launch_flags({"fit", "--nproc-per-node", "2", "--max-epochs", "3", "--nnodes=2",
                              "--node-rank", "1", "--master-addr=node0", "--master-port", "1234",
                              "--out", "runs"}) ==
        std::vector<std::string>{"fit", "--max-epochs", "3", "--out", "runs"});
  // Longer flags that begin like one of them stay.
  CHECK(without_launch_flags({"fit", "--nnodes-extra", "x", "--config", "run.yaml"}) ==
        std::vector<std::string>{"fit", "--nnodes-extra", "x", "--config", "run.yaml"});
}

TEST_CASE("A config file sets the launcher's flags under trainbus", "[launch][config]") {
  const FitArguments args = parse_fit({"--nproc-per-node", "2", "--master-port", "29333"});
  const std::string printed = effective_config(args);
  CHECK_THAT(printed, Catch::Contains("trainbus:\n") &&
                          Catch::Contains("  nproc_per_node: 2\n  nnodes: 1\n  node_rank: 0\n"
                                          "  master_addr: '127.0.0.1'\n  master_port: 29333\n"));
  TempDir dir;
  std::ofstream(dir.file("run.yaml")) << "trainbus:\n  nproc_per_node: 4\n  master_addr: node0\n";
  const FitArguments read = parse_fit(config_file_arguments(dir.file("run.yaml")));
  CHECK(read.launch.nproc_per_node() == 4);
  CHECK(read.launch.master_addr() == "node0");
  CHECK(read.launch.bind_cpus());  // not in the file: the default
  SECTION("--no-cpu-binding, and cpu_binding: false") {
    const FitArguments unbound = parse_fit({"--no-cpu-binding"});
    CHECK_FALSE(unbound.launch.bind_cpus());
    CHECK_THAT(effective_config(unbound), Catch::Contains("  cpu_binding: false\n"));
    std::ofstream(dir.file("unbound.yaml")) << "trainbus:\n  cpu_binding: false\n";
    CHECK_FALSE(parse_fit(config_file_arguments(dir.file("unbound.yaml"))).launch.bind_cpus());
  }
}

TEST_CASE("trainbus fit --record-every-rank is a flag, off by default", "[launch]") {
  // Where each rank's recording goes: record::recording_path_of_rank (tests/record).
  CHECK(parse_fit({"fit", "--record-every-rank"}).record_every_rank);
  CHECK_FALSE(parse_fit({"fit"}).record_every_rank);
}

TEST_CASE("trainbus fit --log-every-rank is a flag, off by default", "[launch]") {
  // Where each rank's logs go: observers::rank_files_dir (tests/observers).
  CHECK(parse_fit({"--log-every-rank"}).log_every_rank);
  CHECK_FALSE(parse_fit({}).log_every_rank);
  CHECK_FALSE(parse_fit({"--log-every-rank=false"}).log_every_rank);
}

TEST_CASE("trainbus fit --log-every-rank and --record-every-rank read back from --print-config",
          "[launch][config]") {
  TempDir dir;
  const FitArguments defaults = parse_fit({});
  CHECK_THAT(effective_config(defaults), Catch::Contains("  log_every_rank: false\n") &&
                                             Catch::Contains("  record_every_rank: false\n"));
  const FitArguments args = parse_fit({"--log-every-rank", "--record-every-rank"});
  const std::string printed = effective_config(args);
  CHECK_THAT(printed, Catch::Contains("trainbus:\n") &&
                          Catch::Contains("  log_every_rank: true\n") &&
                          Catch::Contains("  record_every_rank: true\n"));
  std::ofstream(dir.file("printed.yaml")) << printed;
  const FitArguments read = parse_fit({"--config", dir.file("printed.yaml")});
  CHECK(read.log_every_rank);
  CHECK(read.record_every_rank);
  CHECK(effective_config(read) == printed);
  // Written by hand, and a flag after the file overrides it.
  std::ofstream(dir.file("run.yaml")) << "trainbus:\n  log_every_rank: yes\n";
  CHECK(parse_fit({"--config", dir.file("run.yaml")}).log_every_rank);
  CHECK_FALSE(
      parse_fit({"--config", dir.file("run.yaml"), "--log-every-rank=false"}).log_every_rank);
}
