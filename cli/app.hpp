// The `oasync` command line: parses, dispatches to one command, and is the one
// place that turns errors into "oasync: error: ..." and an exit code.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <pqxx/connection>

#include "config.hpp"

namespace oasync::cli {

// Runs the command line; returns the process exit code (see exit_code.hpp).
int run(int argc, char** argv);

// What every command gets: the global flags and the loaded configuration.
struct Context {
  std::string database_url_flag;
  std::string config_path;
  Config config;

  // Resolves flags > environment > config file and connects.
  std::unique_ptr<pqxx::connection> connect() const;
  std::string database_url() const;
};

// A command: its CLI11 subcommand and what runs when it was chosen. run()
// returns the exit code; failures are thrown as oasync::Error (an ExitError
// to choose the exit code) and reported once, by run() above.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// Each adds its subcommand(s) to `app`. Defined in cmd_*.cpp.
void add_migrate_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_topics_commands(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_sink_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_tail_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_snapshot_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_doc_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_inspect_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_verify_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_purge_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_consumers_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_grants_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_reproject_command(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_sessions_commands(CLI::App& app, Context& ctx, std::vector<Command>& out);
void add_serve_command(CLI::App& app, Context& ctx, std::vector<Command>& out);

}  // namespace oasync::cli
