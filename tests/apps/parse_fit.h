#pragma once
// The fit command's arguments after `trainbus fit ARGS`, with --config files expanded, as main()
// parses them: for the tests of the fit command's flags.

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/fit_command.h"
#include "apps/fit_config.h"

namespace trainbus::testing {

inline apps::FitArguments parse_fit(std::vector<std::string> args) {
  args.insert(args.begin(), "fit");
  std::vector<std::string> expanded = apps::expand_config_files(args);
  expanded.insert(expanded.begin(), "trainbus");
  std::vector<char*> argv;
  for (std::string& argument : expanded) argv.push_back(argument.data());
  CLI::App app;
  apps::FitArguments parsed;
  apps::add_fit_command(app, parsed);
  app.parse(static_cast<int>(argv.size()), argv.data());
  return parsed;
}

}  // namespace trainbus::testing
