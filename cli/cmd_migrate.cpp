// oasync migrate [--status] [--dry-run] [--dir DIR]
#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/migrate.hpp"

namespace oasync::cli {
namespace {

const char* state_name(MigrationState state) {
  switch (state) {
    case MigrationState::applied:
      return "applied";
    case MigrationState::pending:
      return "pending";
    case MigrationState::checksum_mismatch:
      return "CHANGED since applied";
    case MigrationState::unknown_to_this_build:
      return "unknown to this build";
  }
  return "?";
}

}  // namespace

void add_migrate_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  struct Options {
    bool status = false;
    bool dry_run = false;
    std::string dir;
  };
  auto options = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("migrate", "Apply the pending schema migrations");
  sub->footer(
      "\nApplies migrations/NNNN_name.sql in order (schema \"oasync\"), each in its own\n"
      "transaction, under an advisory lock: a second migrator waits, then finds nothing to do.\n"
      "An applied file whose text changed since is refused, and nothing after it runs.\n"
      "A database whose server encoding is not UTF8 is refused (exit 1).");
  sub->add_flag("--status", options->status, "List applied and pending migrations; change nothing");
  sub->add_flag("--dry-run", options->dry_run, "Print what would be applied; change nothing");
  sub->add_option("--dir", options->dir,
                  "Read NNNN_name.sql files from DIR instead of the ones built into oasync");
  out.push_back({sub, [&ctx, options]() {
                   const auto migrations =
                       options->dir.empty() ? bundled_migrations() : load_migrations(options->dir);
                   auto conn = ctx.connect();
                   if (options->status) {
                     int problems = 0;
                     for (const auto& s : migration_status(*conn, migrations)) {
                       fmt::print("{:04}  {:<40} {}{}\n", s.version, s.name, state_name(s.state),
                                  s.applied_at.empty() ? "" : "  " + s.applied_at);
                       if (s.state == MigrationState::checksum_mismatch ||
                           s.state == MigrationState::unknown_to_this_build) {
                         ++problems;
                       }
                     }
                     return to_int(problems ? ExitCode::error : ExitCode::ok);
                   }
                   const DryRun dry = options->dry_run ? DryRun::yes : DryRun::no;
                   const MigrateReport report = migrate(*conn, migrations, dry);
                   for (const auto& name : report.applied) {
                     fmt::print("{} {}\n", dry == DryRun::yes ? "would apply" : "applied", name);
                   }
                   if (report.applied.empty()) {
                     fmt::print("nothing to do: all {} migrations are applied\n",
                                migrations.size());
                   }
                   return to_int(ExitCode::ok);
                 }});
}

}  // namespace oasync::cli
