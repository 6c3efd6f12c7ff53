#include "apps/evaluate_command.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include "apps/fashion_classifier.h"
#include "apps/fit_command.h"
#include "base/errors.h"
#include "base/python_format.h"
#include "checkpoint/format.h"
#include "core/load_from_checkpoint.h"
#include "core/trainer.h"

namespace trainbus::apps {
namespace {

CLI::App* add_command(CLI::App& app, const std::string& name, const std::string& description,
                      EvaluateArguments& args) {
  CLI::App* command = app.add_subcommand(name, description);
  command
      ->add_option("--ckpt", args.ckpt,
                   "A checkpoint directory, or best (the best by val_acc that `trainbus fit` "
                   "kept in --out/checkpoints) or last (the newest complete one there)")
      ->capture_default_str();
  command->add_option("--out", args.out, "The run directory `trainbus fit` wrote (its --out)")
      ->capture_default_str();
  command->add_option("--data", args.data, "Fashion-MNIST directory")->capture_default_str();
  command->add_option("--batch-size", args.batch_size, "Evaluation batch size")
      ->check(CLI::Range(int64_t{1}, int64_t{60000}))
      ->capture_default_str();
  command
      ->add_option("--val-size", args.val_size,
                   "Training images held out for validation, as in the fit")
      ->check(CLI::Range(int64_t{0}, int64_t{59999}))
      ->capture_default_str();
  command->add_option("--limit-batches", args.limit_batches, "Batches: a count or a fraction")
      ->capture_default_str();
  command->add_option("--device", args.device, "cpu, or cuda[:N] where LibTorch has CUDA")
      ->capture_default_str();
  return command;
}

int terminal_columns() {
  // Lightning's shutil.get_terminal_size(fallback=(120, 30)).
  winsize size{};
  if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0)
    return size.ws_col;
  return 120;
}

// Python's "{:^N}": centred, the odd space on the right.
std::string centred(const std::string& text, std::size_t width) {
  if (text.size() >= width) return text;
  const std::size_t left = (width - text.size()) / 2;
  return std::string(left, ' ') + text + std::string(width - text.size() - left, ' ');
}

std::string rstrip(std::string text) {
  text.erase(text.find_last_not_of(' ') + 1);
  return text;
}

}  // namespace

EvaluateCommands add_evaluate_commands(CLI::App& app, EvaluateArguments& args) {
  EvaluateCommands commands;
  commands.validate = add_command(
      app, "validate",
      "Validate a checkpoint of `trainbus fit` on the held-out images (Lightning's results table)",
      args);
  commands.test = add_command(
      app, "test", "Test a checkpoint of `trainbus fit` on the 10 000 test images", args);
  commands.predict = add_command(
      app, "predict", "Predict the test images' classes with a checkpoint of `trainbus fit`", args);
  commands.predict
      ->add_option("--predictions", args.predictions,
                   "Write one row per image (index,class,probability) to this CSV file")
      ->capture_default_str();
  return commands;
}

std::string resolve_fit_checkpoint(const std::string& ckpt, const std::string& out) {
  if (ckpt != "best" && ckpt != "last") return ckpt;
  callbacks::ModelCheckpoint finder(fit_checkpoint_options(out));
  const std::string last = finder.find_last_checkpoint();
  TRAINBUS_CHECK_AS(CheckpointError, !last.empty(), "--ckpt ", ckpt, ": no complete checkpoint in ",
                    fit_checkpoint_options(out).dirpath(), "; train with `trainbus fit --out ", out,
                    "` first, or give --ckpt a checkpoint directory");
  if (ckpt == "last") return last;
  // The best one is what the fit's ModelCheckpoint knew at its newest save.
  const checkpoint::LoadedCheckpoint newest = checkpoint::read_checkpoint(last);
  const auto state = newest.data.callbacks.find(finder.state_key());
  TRAINBUS_CHECK_AS(CheckpointError, state != newest.data.callbacks.end(), "--ckpt best: ", last,
                    " has no state of ", finder.state_key(), "; give --ckpt last or a path");
  finder.load_state_dict(state->second);
  TRAINBUS_CHECK_AS(CheckpointError, !finder.best_model_path().empty(), "--ckpt best: ", last,
                    " knows no best checkpoint yet; give --ckpt last or a path");
  // The path is as the fit saw it (relative to its working directory); in the run directory
  // given here when it is not found there (another working directory, a moved run).
  const std::filesystem::path best = finder.best_model_path();
  if (!std::filesystem::exists(best)) {
    const std::filesystem::path here =
        std::filesystem::path(fit_checkpoint_options(out).dirpath()) / best.filename();
    if (std::filesystem::exists(here)) return here.string();
  }
  return best.string();
}

std::string results_table(Stage stage, const Metrics& metrics, int width) {
  return results_table(stage, std::vector<Metrics>{metrics}, width);
}

std::string results_table(Stage stage, const std::vector<Metrics>& per_dataloader, int width) {
  // Lightning's _EvaluationLoop._print_results, as printed without rich: the names without their
  // `/dataloader_idx_<i>` suffix, sorted, one column per dataloader (" " where one has none).
  std::vector<std::map<std::string, double>> results;
  std::set<std::string> names;
  for (const Metrics& metrics : per_dataloader) {
    std::map<std::string, double>& result = results.emplace_back();
    for (const auto& [name, value] : metrics) {
      const std::string plain = name.substr(0, name.find("/dataloader_idx_"));
      result[plain] = value;
      names.insert(plain);
    }
  }
  if (names.empty()) return {};
  std::vector<std::string> headers;
  for (std::size_t i = 0; i < results.size(); ++i)
    headers.push_back(detail::concat("DataLoader ", i));
  std::size_t column = headers.back().size();
  for (const std::string& name : names) column = std::max(column, name.size());
  column =
      std::min<std::size_t>(std::max<std::size_t>(column, 25), static_cast<std::size_t>(width / 2));
  // As many dataloader columns per table as fit beside the names: int((width - max_length) /
  // max_length) in Lightning; further ones go into further tables.
  const std::size_t per_table = std::max<std::size_t>(
      1, (static_cast<std::size_t>(width) - std::min<std::size_t>(column, width)) / column);
  std::string title(to_string(stage));
  title[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(title[0])));
  std::string bar;
  for (int i = 0; i < width; ++i) bar += "\u2500";
  std::ostringstream out;
  for (std::size_t first = 0; first < results.size(); first += per_table) {
    const std::size_t last = std::min(results.size(), first + per_table);
    std::string header = centred(title + " metric", column);
    for (std::size_t i = first; i < last; ++i) header += centred(headers[i], column);
    out << bar << '\n' << rstrip(header) << '\n' << bar << '\n';
    for (const std::string& name : names) {
      std::string row = centred(name, column);
      for (std::size_t i = first; i < last; ++i) {
        const auto value = results[i].find(name);
        row += centred(value == results[i].end() ? " " : python_format(value->second, ""), column);
      }
      out << rstrip(row) << '\n';
    }
    out << bar << '\n';
  }
  return out.str();
}

Metrics run_evaluate_command(Stage stage, const EvaluateArguments& args, std::ostream& out) {
  const std::string path = resolve_fit_checkpoint(args.ckpt, args.out);
  // The model as the fit built it, from the hyper-parameters the checkpoint saved.
  std::shared_ptr<FashionClassifier> model = load_from_checkpoint<FashionClassifier>(path);
  out << "trainbus " << to_string(stage) << ": " << path << " ("
      << model->hparams().at("model").toStringRef() << ")" << std::endl;

  TrainerOptions options;
  // It prints its own results table; and validate, test and predict save no checkpoints.
  options.enable_model_summary(false).enable_progress_bar(false).enable_checkpointing(false);
  const BatchLimit limit = parse_batch_limit(args.limit_batches, "--limit-batches");
  options.limit_val_batches(limit).limit_test_batches(limit).limit_predict_batches(limit);
  options.device(parse_device(args.device, "--device"));
  Trainer trainer(options);
  data::FashionMnistDataModule data(data::FashionMnistOptions()
                                        .root(args.data)
                                        .eval_batch_size(args.batch_size)
                                        .val_size(args.val_size));
  if (stage == Stage::kPredict) {
    const std::vector<at::Tensor> probabilities = trainer.predict(*model, data);
    int64_t images = 0;
    std::vector<int64_t> per_class(10, 0);
    std::ofstream csv;
    if (!args.predictions.empty()) {
      csv.open(args.predictions, std::ios::trunc);
      if (!csv) throw std::runtime_error(args.predictions + ": cannot write the predictions");
      csv << "index,class,probability\n";
    }
    for (const at::Tensor& batch : probabilities) {
      const auto [best, classes] = batch.max(1);
      for (int64_t i = 0; i < batch.size(0); ++i, ++images) {
        const int64_t predicted = classes[i].item<int64_t>();
        ++per_class.at(static_cast<std::size_t>(predicted));
        if (csv.is_open())
          csv << images << ',' << predicted << ',' << python_format(best[i].item<double>(), "")
              << '\n';
      }
    }
    out << "predicted " << images << " images; per class:";
    for (int64_t count : per_class) out << ' ' << count;
    out << '\n';
    if (csv.is_open()) out << "predictions: " << args.predictions << '\n';
    return {};
  }
  const Metrics metrics =
      stage == Stage::kValidate ? trainer.validate(*model, data) : trainer.test(*model, data);
  out << results_table(stage, trainer.evaluation_results(), terminal_columns()) << std::flush;
  return metrics;
}

}  // namespace trainbus::apps
