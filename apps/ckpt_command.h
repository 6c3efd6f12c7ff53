#pragma once
/// `trainbus ckpt inspect PATH`: what a checkpoint holds and whether it is intact.

#include <ostream>
#include <string>

namespace CLI {
class App;
}

namespace trainbus::apps {

/// Adds `ckpt` and its `inspect` subcommand to `app`, bound to `path`.
CLI::App* add_ckpt_command(CLI::App& app, std::string& path);

/// Prints the manifest, progress, callback states and validity of `path`; returns the exit code
/// (0 valid, 1 missing or damaged).
int run_ckpt_inspect(const std::string& path, std::ostream& out);

}  // namespace trainbus::apps
