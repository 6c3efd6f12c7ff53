#pragma once
/// `trainbus fit --config run.yaml` and `trainbus fit --print-config`: the fit command's flags as a
/// YAML file laid out as LightningCLI's (seed_everything, trainer, model, data, ckpt_path), so that
/// a run can be written down, repeated and changed. Read with yaml-cpp.

#include <map>
#include <string>
#include <vector>

#include "apps/fit_command.h"

namespace trainbus::apps {

/// The fit flags the config file at `path` stands for ("--max-epochs", "3", ...), in the order of
/// the sections and keys known (see effective_config for the layout). A callback in
/// trainer.callbacks may be a spec ("early_stopping:monitor=val_loss"), `NAME: {key: value}` or
/// LightningCLI's `class_path: EarlyStopping` with `init_args`. A null value keeps the default.
/// Throws MisconfigurationError naming the file and the key for a file that cannot be read or
/// parsed, an unknown section or key (listing the valid ones) or a value of the wrong shape.
std::vector<std::string> config_file_arguments(const std::string& path);

/// Where each flag a config file set came from, for errors: "--max-epochs" -> "run.yaml:
/// trainer.max_epochs".
using ConfigOrigins = std::map<std::string, std::string>;

/// `args` (a command line without the program name) with every `--config PATH` (or
/// `--config=PATH`) of the fit command preceded by the flags its file stands for, so that flags
/// after it override the file, as LightningCLI's do; a `--callback` adds to the file's callbacks.
/// Other commands' arguments are returned as they are. Fills `origins` when given.
std::vector<std::string> expand_config_files(const std::vector<std::string>& args,
                                             ConfigOrigins* origins = nullptr);

/// The configuration `args` amount to, as YAML that --config reads back: every flag with its value
/// (null where unset), under LightningCLI's sections, and trainbus's own flags under `trainbus`.
std::string effective_config(const FitArguments& args);

}  // namespace trainbus::apps
