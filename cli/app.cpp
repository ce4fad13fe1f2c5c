#include "app.hpp"

#include <algorithm>
#include <cstdio>
#include <string_view>

#include <fmt/format.h>

#include "exit_code.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"

#ifndef OASYNC_VERSION
#define OASYNC_VERSION "unknown"
#endif

namespace oasync::cli {
namespace {

// Edit distance, for "did you mean".
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Walks the arguments down the command tree. Returns the message for the
// first word that names no command where one was expected, or "" when every
// command word is known.
std::string unknown_command(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    const std::string_view word = argv[i];
    if (word.starts_with("-")) {
      const CLI::Option* option =
          current->get_option_no_throw(std::string(word.substr(0, word.find('='))));
      if (option != nullptr && option->get_type_size() != 0 && word.find('=') == word.npos) {
        ++i;  // the option's value
      }
      continue;
    }
    const auto subcommands = current->get_subcommands([](CLI::App*) { return true; });
    if (subcommands.empty()) return "";
    const auto known = std::find_if(subcommands.begin(), subcommands.end(),
                                    [&](CLI::App* s) { return s->get_name() == word; });
    if (known != subcommands.end()) {
      current = *known;
      path += std::string(word) + " ";
      continue;
    }
    std::string closest;
    std::size_t best = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (CLI::App* s : subcommands) {
      const std::size_t d = distance(word, s->get_name());
      if (d < best) {
        best = d;
        closest = s->get_name();
      }
    }
    return fmt::format("unknown command \"{}{}\"{}", path, word,
                       closest.empty() ? fmt::format("; see oasync {}--help", path)
                                       : fmt::format("; did you mean \"{}{}\"?", path, closest));
  }
  return "";
}

}  // namespace

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
  add_tail_command(app, ctx, commands);
  add_snapshot_command(app, ctx, commands);
  add_doc_command(app, ctx, commands);
  add_inspect_command(app, ctx, commands);
  add_verify_command(app, ctx, commands);
  add_purge_command(app, ctx, commands);
  add_consumers_command(app, ctx, commands);
  add_reproject_command(app, ctx, commands);
  add_grants_command(app, ctx, commands);
  add_sessions_commands(app, ctx, commands);
  add_serve_command(app, ctx, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (const std::string unknown = unknown_command(app, argc, argv); !unknown.empty()) {
      fmt::print(stderr, "oasync: error: {}\n", unknown);
    } else {
      app.exit(e);
    }
    return to_int(ExitCode::usage);
  }

  // The one place a failure is reported.
  try {
    try {
      if (!ctx.config_path.empty()) ctx.config = load_config(ctx.config_path);
      for (const Command& command : commands) {
        if (command.app->parsed()) return command.run();
      }
      std::fputs(app.help().c_str(), stderr);
      return to_int(ExitCode::usage);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(Code::internal, e.what());
    }
  } catch (const Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "oasync: error: {}\n", e.what());
    return to_int(exit_code_for(e));
  }
}

}  // namespace oasync::cli
