#include "apps/ckpt_command.h"

#include <CLI/CLI.hpp>

#include "checkpoint/format.h"

namespace trainbus::apps {

CLI::App* add_ckpt_command(CLI::App& app, std::string& path) {
  CLI::App* ckpt = app.add_subcommand("ckpt", "Work with checkpoints");
  ckpt->require_subcommand(1);
  CLI::App* inspect = ckpt->add_subcommand("inspect",
                                           "Print a checkpoint's manifest, progress and callback "
                                           "states, and check every part's size and CRC32C");
  inspect
      ->add_option("path", path, "Checkpoint directory (e.g. trainbus_logs/checkpoints/last.ckpt)")
      ->required();
  return inspect;
}

int run_ckpt_inspect(const std::string& path, std::ostream& out) {
  const checkpoint::CheckpointReport report = checkpoint::inspect_checkpoint(path);
  out << report.text << std::flush;
  return report.valid ? 0 : 1;
}

}  // namespace trainbus::apps
