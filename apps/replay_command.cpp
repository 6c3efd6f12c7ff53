#include "apps/replay_command.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/errors.h"
#include "callbacks/callback_spec.h"
#include "core/callback_order.h"
#include "core/checkpoint_callback.h"
#include "events/event_bus.h"
#include "events/observer_pool.h"
#include "observers/csv_logger.h"
#include "observers/tensorboard_logger.h"
#include "record/diff.h"
#include "record/event_codec.h"
#include "record/record_file.h"
#include "record/timeline.h"
#include "replay/replay_session.h"

namespace trainbus::apps {

namespace {

// The live run's --log-every-n-steps, so that regenerated logs have the same rows.
int64_t log_every_n_steps(const ReplayArguments& args, const record::v1::Header& header) {
  if (args.log_every_n_steps) return *args.log_every_n_steps;
  const auto flag = header.options().find("log-every-n-steps");
  if (flag != header.options().end()) {
    try {
      return std::stoll(flag->second);
    } catch (const std::exception&) {
    }
  }
  return 50;
}

void report_ending(const record::ReadSummary& summary, const std::string& path, std::ostream& err) {
  for (const std::string& problem : summary.problems) {
    err << "trainbus replay: " << path << ": " << problem << '\n';
  }
  if (summary.skipped_bytes > 0) {
    err << "trainbus replay: " << path << ": salvaged: skipped " << summary.skipped_bytes
        << " damaged bytes\n";
  }
  if (!summary.clean_end) err << "trainbus replay: " << path << ": " << summary.ending << '\n';
}

int run_info(const ReplayArguments& args, std::ostream& out, std::ostream& err) {
  record::RecordingReader reader(args.info_path, record::ReadOptions().salvage(args.salvage));
  const record::RecordingInfo info = record::summarize(reader);
  out << record::describe(info, args.info_path) << std::flush;
  if (reader.summary().skipped_bytes > 0) report_ending(reader.summary(), args.info_path, err);
  return 0;
}

// Exit codes as diff(1): 0 the same, 1 different, 2 trouble (a file missing or damaged).
int run_diff(const ReplayArguments& args, std::ostream& out, std::ostream& err) {
  try {
    const record::ReadOptions read = record::ReadOptions().salvage(args.salvage);
    record::RecordingReader a(args.diff_a, read);
    record::RecordingReader b(args.diff_b, read);
    for (const auto* reader : {&a, &b}) {
      if (const std::string caveat = record::format_caveat(reader->header()); !caveat.empty()) {
        err << "trainbus replay diff: caution: " << reader->path() << ": " << caveat << '\n';
      }
    }
    const record::DiffOptions options = record::DiffOptions().rtol(args.rtol).atol(args.atol);
    const record::DiffResult result = record::diff_recordings(a, b, options);
    out << record::describe(result, args.diff_a, args.diff_b, options) << std::flush;
    report_ending(a.summary(), args.diff_a, err);
    report_ending(b.summary(), args.diff_b, err);
    return result.first ? 1 : 0;
  } catch (const std::exception& error) {
    err << "trainbus replay diff: error: " << error.what() << std::endl;
    return 2;
  }
}

// Regenerated logs go to a directory of their own: never added to (or over) a run's logs.
void require_no_logs_in(const std::string& dir, const std::string& flag) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) return;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "metrics.csv" || name == "hparams.yaml" ||
        name.rfind("events.out.tfevents.", 0) == 0) {
      throw MisconfigurationError(flag + " " + dir + ": it already holds " + name +
                                  "; regenerated logs go to a new or empty directory");
    }
  }
}

int run_timeline(const ReplayArguments& args, std::ostream& out, std::ostream& err) {
  record::TimelineFilter filter;
  filter.from_step = args.from_step;
  filter.to_step = args.to_step;
  filter.epoch = args.epoch;
  filter.events = record::parse_event_names(args.events);
  const bool regenerate = !args.to_csv.empty() || !args.to_tensorboard.empty();

  if (!args.to_csv.empty()) require_no_logs_in(args.to_csv, "--to-csv");
  if (!args.to_tensorboard.empty()) require_no_logs_in(args.to_tensorboard, "--to-tensorboard");
  record::RecordingReader reader(args.path, record::ReadOptions().salvage(args.salvage));
  // Regenerated logs: the recorded events, published in order to the same observers a live run
  // has, with the live run's options.
  events::EventBus bus;
  std::unique_ptr<events::ObserverPool> pool;
  if (regenerate) {
    pool = std::make_unique<events::ObserverPool>(2);
    const int64_t every = log_every_n_steps(args, reader.header());
    if (!args.to_csv.empty()) {
      pool->attach(
          bus, std::make_shared<observers::CsvLogger>(
                   observers::CsvLoggerOptions().log_dir(args.to_csv).log_every_n_steps(every)));
    }
    if (!args.to_tensorboard.empty()) {
      pool->attach(
          bus, std::make_shared<observers::TensorBoardLogger>(observers::TensorBoardLoggerOptions()
                                                                  .log_dir(args.to_tensorboard)
                                                                  .log_every_n_steps(every)));
    }
  }
  record::EventDecoder decoder;
  std::optional<int64_t> first_monotonic;
  while (const record::v1::Envelope* envelope = reader.next()) {
    if (!first_monotonic) first_monotonic = envelope->monotonic_ns();
    if (regenerate) {
      decoder.publish(*envelope, bus);
      pool->check();
      continue;
    }
    if (!filter.matches(*envelope)) continue;
    out << (args.format == "jsonl" ? record::timeline_json(*envelope)
                                   : record::timeline_line(*envelope, *first_monotonic))
        << '\n';
  }
  if (pool) {
    pool->drain();
    pool->check();
    pool.reset();  // flushes and closes the logs
    if (!args.to_csv.empty()) out << "csv: " << args.to_csv << '\n';
    if (!args.to_tensorboard.empty()) out << "tensorboard: " << args.to_tensorboard << '\n';
  }
  out << std::flush;
  report_ending(reader.summary(), args.path, err);
  return 0;
}

// The live run's trainer options that callbacks' decisions depend on, from the flags `trainbus
// fit` recorded in the header (a recording made otherwise keeps the defaults).
TrainerOptions recorded_trainer_options(const record::v1::Header& header) {
  TrainerOptions options;
  const auto& flags = header.options();
  auto integer = [&](const char* flag) -> std::optional<int64_t> {
    const auto found = flags.find(flag);
    if (found == flags.end() || found->second.empty()) return std::nullopt;
    try {
      return std::stoll(found->second);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  };
  if (auto value = integer("max-epochs")) options.max_epochs(*value);
  if (auto value = integer("max-steps")) options.max_steps(*value);
  if (auto value = integer("accumulate-grad-batches")) options.accumulate_grad_batches(*value);
  if (auto found = flags.find("out"); found != flags.end()) options.default_root_dir(found->second);
  return options;
}

std::string where(const events::Progress& progress) {
  std::ostringstream text;
  text << "epoch " << progress.epoch << " step " << progress.global_step;
  return text.str();
}

std::string score_text(const replay::Decision& decision) {
  if (decision.monitor.empty() || std::isnan(decision.score)) return {};
  std::ostringstream text;
  text << "  " << decision.monitor << "=" << std::setprecision(6) << decision.score;
  return text.str();
}

// The checkpoints a run's decisions leave: saved, not removed since; with their scores.
std::vector<replay::Decision> kept(const std::vector<replay::Decision>& decisions) {
  std::vector<replay::Decision> saved;
  for (const replay::Decision& d : decisions) {
    if (d.kind == replay::Decision::Kind::kSave) {
      saved.erase(std::remove_if(saved.begin(), saved.end(),
                                 [&](const auto& s) { return s.what == d.what; }),
                  saved.end());
      saved.push_back(d);
    } else if (d.kind == replay::Decision::Kind::kRemove) {
      saved.erase(std::remove_if(saved.begin(), saved.end(),
                                 [&](const auto& s) { return s.what == d.what; }),
                  saved.end());
    }
  }
  return saved;
}

void print_run_decisions(std::ostream& out, const char* who,
                         const std::vector<replay::Decision>& decisions) {
  out << who << ":\n";
  bool stopped = false;
  for (const replay::Decision& d : decisions) {
    const char* kind = d.kind == replay::Decision::Kind::kStop   ? "stop  "
                       : d.kind == replay::Decision::Kind::kSave ? "save  "
                                                                 : "remove";
    stopped |= d.kind == replay::Decision::Kind::kStop;
    out << "  " << std::left << std::setw(20) << where(d.progress) << kind << "  " << d.what
        << score_text(d) << '\n';
  }
  if (!stopped) out << "  no stop requested\n";
  const std::vector<replay::Decision> left = kept(decisions);
  out << "  checkpoints kept at the end: " << left.size() << '\n';
  for (const replay::Decision& d : left) out << "    " << d.what << score_text(d) << '\n';
}

// The decisions of the kinds `kinds`, in a canonical order: within one event, when a background
// save landed beside a stop depends on the disk, not on the callbacks.
// A stop is compared only when one of the replayed callbacks could have asked for it: its reason
// starts with that callback's class name ("EarlyStopping: ..."), so that a live stop for another
// cause (a Timer's time limit, the user's own callback) is not taken for a difference.
std::vector<std::tuple<int64_t, int64_t, int, std::string>> comparable(
    const std::vector<replay::Decision>& decisions, const std::set<replay::Decision::Kind>& kinds,
    const std::vector<std::string>& stop_sources) {
  std::vector<std::tuple<int64_t, int64_t, int, std::string>> keys;
  for (const replay::Decision& d : decisions) {
    if (kinds.count(d.kind) == 0) continue;
    if (d.kind == replay::Decision::Kind::kStop &&
        std::none_of(stop_sources.begin(), stop_sources.end(), [&](const std::string& source) {
          return d.what.rfind(source + ": ", 0) == 0;
        })) {
      continue;
    }
    keys.emplace_back(d.progress.epoch, d.progress.global_step, static_cast<int>(d.kind), d.what);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

int run_callbacks(const ReplayArguments& args, std::ostream& out, std::ostream& err) {
  std::vector<std::shared_ptr<Callback>> callbacks;
  for (const std::string& spec : args.callbacks) {
    if (!callbacks::callback_decides(spec)) {
      throw MisconfigurationError("--callback '" + spec +
                                  "': a replay compares decisions (stops, checkpoints) and this "
                                  "callback makes none; replay early_stopping or "
                                  "model_checkpoint");
    }
    callbacks.push_back(callbacks::make_callback(spec));
  }
  record::RecordingReader reader(args.path, record::ReadOptions().salvage(args.salvage));
  if (const std::string caveat = record::format_caveat(reader.header()); !caveat.empty()) {
    err << "trainbus replay: caution: " << caveat << '\n';
  }
  // Only the callbacks given replay: no default ModelCheckpoint beside them.
  TrainerOptions options = recorded_trainer_options(reader.header());
  options.enable_checkpointing(std::any_of(
      callbacks.begin(), callbacks.end(),
      [](const auto& callback) { return callback->kind() == CallbackKind::kCheckpoint; }));
  replay::ReplaySession session(options, callbacks);
  const uint64_t replayed = session.replay(reader);
  session.finish();

  out << "replayed " << replayed << " events of " << args.path << " through";
  for (const std::string& spec : args.callbacks) out << " '" << spec << "'";
  out << "\n\n";
  print_run_decisions(out, "live run (recorded)", session.recorded_decisions());
  out << '\n';
  const std::vector<replay::Decision> decisions = session.decisions();
  print_run_decisions(out, "replayed callbacks", decisions);
  for (const auto& callback : callbacks) {
    if (const auto* saver = dynamic_cast<const CheckpointCallback*>(callback.get())) {
      out << "  best_model_path: "
          << (saver->best_model_path().empty() ? "(none)" : saver->best_model_path()) << '\n';
    }
  }
  // The first stop is the answer to "when would it have stopped"; the recording goes on past a
  // stop the live run did not make, so what the callbacks decide after it is hypothetical.
  auto first_stop = [](const std::vector<replay::Decision>& all) -> std::string {
    for (const replay::Decision& d : all) {
      if (d.kind == replay::Decision::Kind::kStop) return where(d.progress);
    }
    return "none";
  };
  out << "\nfirst stop request: live " << first_stop(session.recorded_decisions()) << "; replayed "
      << first_stop(decisions) << " (the recording ends at "
      << where({session.trainer().current_epoch(), session.trainer().global_step()}) << ")\n";
  // Compared: what the replayed callbacks can decide. Checkpoints if one saves them, stops if one
  // is not a checkpoint callback (the live run's other decisions are not theirs to reproduce).
  std::set<replay::Decision::Kind> kinds;
  std::vector<std::string> stop_sources;  // class names, without namespaces
  for (const auto& callback : callbacks) {
    if (dynamic_cast<const CheckpointCallback*>(callback.get()) != nullptr) {
      kinds.insert({replay::Decision::Kind::kSave, replay::Decision::Kind::kRemove});
    } else {
      kinds.insert(replay::Decision::Kind::kStop);
    }
    const std::string name = callback_name(*callback);
    const std::size_t scope = name.rfind("::");
    stop_sources.push_back(scope == std::string::npos ? name : name.substr(scope + 2));
  }
  const bool same = comparable(session.recorded_decisions(), kinds, stop_sources) ==
                    comparable(decisions, kinds, stop_sources);
  const std::string compared = kinds.count(replay::Decision::Kind::kStop) > 0
                                   ? (kinds.size() > 1 ? "stops and checkpoints" : "stops")
                                   : "checkpoints";
  out << (same ? "the replayed callbacks decide as the live run did (" + compared + " compared)\n"
               : "the replayed callbacks decide differently from the live run (" + compared +
                     " compared; see above)\n");
  out << std::flush;
  report_ending(reader.summary(), args.path, err);
  return same ? 0 : 1;
}

}  // namespace

ReplayCommand add_replay_command(CLI::App& app, ReplayArguments& args) {
  ReplayCommand command;
  command.replay = app.add_subcommand(
      "replay",
      "Read a recorded run (events.tbrec): print its events as a timeline, or regenerate its "
      "logs from the recording alone");
  CLI::App* replay = command.replay;
  replay->require_subcommand(0, 1);
  replay->add_option("recording", args.path,
                     "The recording, e.g. trainbus_logs/version_0/events.tbrec");
  replay->add_option("--from-step", args.from_step, "Show events from this global step on");
  replay->add_option("--to-step", args.to_step, "Show events up to this global step");
  replay->add_option("--epoch", args.epoch, "Show only events of this epoch");
  replay->add_option("--events", args.events,
                     "Show only these events, comma-separated names such as "
                     "train_epoch_end,save_checkpoint");
  replay->add_option("--format", args.format, "text (one line per event) or jsonl")
      ->check(CLI::IsMember({"text", "jsonl"}))
      ->capture_default_str();
  replay->add_flag(
      "--salvage", args.salvage,
      "Skip damaged records (and say how many bytes) instead of stopping at the first");
  CLI::Option* to_csv = replay->add_option(
      "--to-csv", args.to_csv, "Regenerate metrics.csv and hparams.yaml into this new directory");
  CLI::Option* to_tensorboard =
      replay->add_option("--to-tensorboard", args.to_tensorboard,
                         "Regenerate TensorBoard event files into this new directory");
  // Regenerated logs take every event: the timeline's filters do not apply to them.
  for (const char* filter : {"--from-step", "--to-step", "--epoch", "--events", "--format"}) {
    to_csv->excludes(filter);
    to_tensorboard->excludes(filter);
  }
  CLI::Option* callback = replay->add_option(
      "--callback", args.callbacks,
      "Replay the run through this callback and print its decisions (stops, checkpoints saved "
      "and removed; nothing is written) beside the live run's: NAME:key=value,... e.g. "
      "'early_stopping:monitor=val_loss,patience=5' or "
      "'model_checkpoint:monitor=val_acc,mode=max,save_top_k=3'. Repeatable. Exits 0 when they "
      "decide as the live run did, 1 when not. Names and keys:\n" +
          callbacks::describe_callback_specs(/*deciding_only=*/true));
  for (const char* other : {"--from-step", "--to-step", "--epoch", "--events", "--format",
                            "--to-csv", "--to-tensorboard"}) {
    callback->excludes(other);
  }
  replay
      ->add_option("--log-every-n-steps", args.log_every_n_steps,
                   "Rows of the regenerated logs (default: the recorded run's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));

  command.info = replay->add_subcommand(
      "info", "What a recording holds: header, duration, events per type, and how it ended");
  command.info->add_option("recording", args.info_path, "The recording")->required();
  command.info->add_flag("--salvage", args.salvage, "Skip damaged records instead of stopping");

  command.diff = replay->add_subcommand(
      "diff",
      "The first event where two recorded runs differ (a value beyond the tolerance, another "
      "event, one run ending first), and a summary; exits 0 when they agree, 1 when they differ, "
      "2 on an error");
  command.diff->add_option("a", args.diff_a, "The first recording")->required();
  command.diff->add_option("b", args.diff_b, "The second recording")->required();
  command.diff->add_option("--rtol", args.rtol, "Relative tolerance of numbers")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command.diff->add_option("--atol", args.atol, "Absolute tolerance of numbers")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command.diff->add_flag("--salvage", args.salvage, "Skip damaged records instead of stopping");
  return command;
}

int run_replay_command(const ReplayCommand& command, const ReplayArguments& args, std::ostream& out,
                       std::ostream& err) {
  if (command.info->parsed()) return run_info(args, out, err);
  if (command.diff->parsed()) return run_diff(args, out, err);
  if (args.path.empty()) {
    err << "trainbus replay: which recording? e.g. trainbus replay "
           "trainbus_logs/version_0/events.tbrec\n"
        << command.replay->help();
    return 2;
  }
  if (!args.callbacks.empty()) return run_callbacks(args, out, err);
  return run_timeline(args, out, err);
}

}  // namespace trainbus::apps
