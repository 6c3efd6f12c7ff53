#pragma once
/// `trainbus validate|test|predict --ckpt best|last|PATH`: the Fashion-MNIST classifier rebuilt
/// from a checkpoint `trainbus fit` wrote (load_from_checkpoint, from its saved hyper-parameters),
/// evaluated with Lightning's results table, or its predictions written.

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "base/stage.h"
#include "data/fashion_mnist.h"

namespace CLI {
class App;
}

namespace trainbus::apps {

/// Everything the three commands take; the defaults are `trainbus fit`'s.
struct EvaluateArguments {
  /// A checkpoint directory, "best" (the best by val_acc that fit's ModelCheckpoint knew at its
  /// newest save in `out`/checkpoints) or "last" (the newest complete one there).
  std::string ckpt = "best";
  std::string out = "trainbus_logs";
  std::string data = data::kFashionMnistDir;
  int64_t batch_size = 1000;
  int64_t val_size = 5000;
  std::string limit_batches = "1.0";  ///< a count or a fraction of the loader
  std::string device = "cpu";
  /// predict: write "index,class,probability" rows here; empty: print a summary only.
  std::string predictions;
};

/// The three subcommands, bound to one EvaluateArguments.
struct EvaluateCommands {
  CLI::App* validate = nullptr;
  CLI::App* test = nullptr;
  CLI::App* predict = nullptr;
};

EvaluateCommands add_evaluate_commands(CLI::App& app, EvaluateArguments& args);

/// The checkpoint `ckpt` names: itself, or "best" / "last" in `out`/checkpoints. Throws
/// CheckpointError saying what was looked for where.
std::string resolve_fit_checkpoint(const std::string& ckpt, const std::string& out);

/// Runs `stage` (kValidate, kTest or kPredict) and prints to `out`; returns the metrics.
Metrics run_evaluate_command(Stage stage, const EvaluateArguments& args, std::ostream& out);

/// Lightning's results table (trainer._evaluation_loop._print_results without rich): a rule, the
/// "Validate metric" / "DataLoader 0" header, one row per metric, a rule; `width` columns.
std::string results_table(Stage stage, const Metrics& metrics, int width = 80);
/// The table of several dataloaders' results (Trainer::evaluation_results()): one "DataLoader i"
/// column each, the names without their `/dataloader_idx_<i>` suffix, " " where a loader has no
/// value; columns that do not fit in `width` go into further tables, as Lightning's. Empty when
/// nothing was logged.
std::string results_table(Stage stage, const std::vector<Metrics>& per_dataloader, int width = 80);

}  // namespace trainbus::apps
