#include "app.hpp"

#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include "exit_code.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"

#ifndef OASYNC_VERSION
#define OASYNC_VERSION "unknown"
#endif

namespace oasync::cli {

std::string Context::database_url() const {
  return resolve_database_url(database_url_flag, config);
}

std::unique_ptr<pqxx::connection> Context::connect() const {
  return oasync::connect(database_url());
}

int run(int argc, char** argv) {
  CLI::App app{
      "oasync: the Postgres side of the OA Sync plane. It stores read-model docs and a\n"
      "gap-free, commit-ordered journal per topic, and gives operators the tools to run it."};
  app.name("oasync");
  app.set_version_flag("--version", std::string("oasync ") + OASYNC_VERSION);
  app.require_subcommand(1);
  app.footer(
      std::string("\nThe database: --database-url, else OASYNC_DATABASE_URL, else libpq's PG* "
                  "variables,\nelse database_url in --config FILE.\n\n") +
      kExitCodeHelp);

  Context ctx;
  app.add_option("--database-url", ctx.database_url_flag,
                 "libpq connection string or URI (overrides OASYNC_DATABASE_URL)");
  app.add_option("--config", ctx.config_path, "oasync.yaml with defaults (see README)");

  std::vector<Command> commands;
  add_migrate_command(app, ctx, commands);
  add_topics_commands(app, ctx, commands);
  add_sink_command(app, ctx, commands);
  add_read_commands(app, ctx, commands);
  add_inspect_command(app, ctx, commands);
  add_verify_command(app, ctx, commands);
  add_purge_command(app, ctx, commands);
  add_reproject_command(app, ctx, commands);
  add_grants_command(app, ctx, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return to_int(ExitCode::usage);
  }

  try {
    if (!ctx.config_path.empty()) ctx.config = load_config(ctx.config_path);
    for (const Command& command : commands) {
      if (command.app->parsed()) return command.run();
    }
    std::fputs(app.help().c_str(), stderr);
    return to_int(ExitCode::usage);
  } catch (const Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "oasync: error: {}\n", e.what());
    return to_int(ExitCode::error);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "oasync: error: {}\n", e.what());
    return to_int(ExitCode::error);
  }
}

}  // namespace oasync::cli
