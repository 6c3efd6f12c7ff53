// `trainbus fit --config FILE` and `--print-config`: a YAML file laid out as LightningCLI's stands
// for the fit flags, flags after it override it, and the printed configuration reads back.
#include "apps/fit_config.h"

#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <catch2/catch.hpp>

#include "base/errors.h"
#include "tests/apps/parse_fit.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::apps;
using trainbus::testing::parse_fit;
using trainbus::testing::TempDir;

namespace {

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

TEST_CASE("A config file sets the fit flags under LightningCLI's sections", "[config]") {
  TempDir dir;
  write_file(dir.file("run.yaml"),
             "seed_everything: 7\n"
             "trainer:\n"
             "  max_epochs: 3\n"
             "  limit_train_batches: 0.25\n"
             "  accumulate_grad_batches: 2\n"
             "  deterministic: true\n"
             "  enable_checkpointing: false\n"
             "  enable_progress_bar: no\n"
             "model:\n"
             "  architecture: cnn\n"
             "  lr: 1.0e-04\n"
             "data:\n"
             "  batch_size: 128\n"
             "trainbus:\n"
             "  record: false\n"
             "ckpt_path: last\n");
  const FitArguments args = parse_fit({"--config", dir.file("run.yaml")});
  CHECK(args.seed == 7);
  CHECK(args.max_epochs == 3);
  CHECK(args.limit_train_batches == "0.25");
  CHECK(args.accumulate_grad_batches == 2);
  CHECK(args.deterministic);
  CHECK_FALSE(args.checkpoint);
  CHECK_FALSE(args.progress_bar);
  CHECK(args.model_summary);  // not in the file: the default
  CHECK(args.model == "cnn");
  CHECK(args.lr == 1e-4);
  CHECK(args.batch_size == 128);
  CHECK_FALSE(args.record);
  CHECK(args.resume == "last");
}

TEST_CASE("Flags after --config override the file, --callback adds to its callbacks", "[config]") {
  TempDir dir;
  write_file(dir.file("run.yaml"),
             "trainer:\n"
             "  max_epochs: 3\n"
             "  enable_progress_bar: false\n"
             "  callbacks:\n"
             "    - timer\n"
             "model:\n"
             "  lr: 0.01\n");
  const FitArguments args = parse_fit({"--lr", "0.5", "--config", dir.file("run.yaml"),
                                       "--max-epochs", "5", "--callback", "spike_detection"});
  CHECK(args.max_epochs == 5);  // after the file
  CHECK(args.lr == 0.01);       // before the file: the file wins, as in LightningCLI
  CHECK_FALSE(args.progress_bar);
  CHECK(args.callbacks == std::vector<std::string>{"timer", "spike_detection"});
}

TEST_CASE("Two config files are both read, the second over the first", "[config]") {
  TempDir dir;
  write_file(dir.file("a.yaml"), "trainer:\n  max_epochs: 3\nmodel:\n  lr: 0.01\n");
  write_file(dir.file("b.yaml"), "model:\n  lr: 0.02\n");
  const FitArguments args =
      parse_fit({"--config", dir.file("a.yaml"), "--config", dir.file("b.yaml")});
  CHECK(args.max_epochs == 3);
  CHECK(args.lr == 0.02);
  // A bare second path after one --config is not taken as a config (CLI11 would otherwise).
  CHECK_THROWS(parse_fit({"--config", dir.file("a.yaml"), dir.file("b.yaml")}));
}

TEST_CASE("Callbacks in a config file: a spec, NAME: {options} or class_path and init_args",
          "[config]") {
  TempDir dir;
  write_file(dir.file("run.yaml"),
             "trainer:\n"
             "  callbacks:\n"
             "    - early_stopping:monitor=val_loss,patience=3\n"
             "    - learning_rate_monitor: {logging_interval: step, log_momentum: True}\n"
             "    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
             "      init_args:\n"
             "        monitor: val_acc\n"
             "        mode: max\n"
             "    - class_path: EMAWeightAveraging\n"
             "    - gradient_accumulation_scheduler:\n"
             "        scheduling: {0: 4, 2: 1}\n"
             "    - stochastic_weight_averaging: {swa_lrs: [0.05, 0.01]}\n");
  CHECK(parse_fit({"--config", dir.file("run.yaml")}).callbacks ==
        std::vector<std::string>{"early_stopping:monitor=val_loss,patience=3",
                                 "learning_rate_monitor:logging_interval=step,log_momentum=true",
                                 "early_stopping:monitor=val_acc,mode=max", "ema_weight_averaging",
                                 "gradient_accumulation_scheduler:scheduling=0:4;2:1",
                                 "stochastic_weight_averaging:swa_lrs=0.05;0.01"});
}

TEST_CASE("The printed configuration reads back to the same configuration", "[config]") {
  TempDir dir;
  const FitArguments args =
      parse_fit({"--max-epochs", "4", "--lr", "1e-5", "--no-csv", "--gradient-clip-val", "0.5",
                 "--limit-val-batches", "10", "--max-time", "00:01:00:00", "--callback",
                 "early_stopping:monitor=val_loss,patience=3", "--callback", "timer"});
  const std::string printed = effective_config(args);
  CHECK(printed.find("  lr: 1.0e-05\n") != std::string::npos);
  CHECK(printed.find("  csv: false\n") != std::string::npos);
  CHECK(printed.find("  - class_path: EarlyStopping\n    init_args:\n      monitor: 'val_loss'\n"
                     "      patience: 3\n") != std::string::npos);
  write_file(dir.file("printed.yaml"), printed);
  const FitArguments reread = parse_fit({"--config", dir.file("printed.yaml")});
  CHECK(effective_config(reread) == printed);
  CHECK(reread.callbacks ==
        std::vector<std::string>{"early_stopping:monitor=val_loss,patience=3", "timer"});
}

TEST_CASE("A bad config file is named with the key at fault and what is valid", "[config]") {
  TempDir dir;
  auto error_of = [&](const std::string& text) {
    write_file(dir.file("bad.yaml"), text);
    try {
      config_file_arguments(dir.file("bad.yaml"));
    } catch (const MisconfigurationError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  const std::string path = dir.file("bad.yaml");
  CHECK_THAT(error_of("trainer:\n  max_epoch: 3\n"),
             Catch::Contains(path + ": unknown key 'trainer.max_epoch'") &&
                 Catch::Contains("max_epochs, max_steps"));
  CHECK_THAT(error_of("trainers: {}\n"),
             Catch::Contains("unknown key 'trainers'") && Catch::Contains("trainer, model, data"));
  CHECK_THAT(error_of("trainer:\n  deterministic: maybe\n"),
             Catch::Contains("trainer.deterministic: expected true or false, got 'maybe'"));
  CHECK_THAT(error_of("trainer:\n  max_epochs: [1, 2]\n"),
             Catch::Contains("trainer.max_epochs: expected a single value"));
  CHECK_THAT(error_of("trainer:\n  callbacks: timer\n"),
             Catch::Contains("trainer.callbacks: expected a list of callbacks"));
  CHECK_THAT(error_of("trainer: [1\n"), Catch::Contains(path + ": not valid YAML"));
  CHECK_THAT(error_of("- 1\n"), Catch::Contains("expected a mapping of sections"));
  CHECK_THAT(([&] {
               try {
                 config_file_arguments(dir.file("missing.yaml"));
               } catch (const MisconfigurationError& error) {
                 return std::string(error.what());
               }
               return std::string("no error");
             }()),
             Catch::Contains("missing.yaml: cannot read the config file"));
}
