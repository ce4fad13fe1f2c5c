// oasync grants --writer ROLE --reader ROLE [--owner ROLE] [--scope-security on|off]
#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/grants.hpp"

namespace oasync::cli {

void add_grants_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  auto roles = std::make_shared<GrantRoles>();
  auto scope = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("grants", "Grant each role exactly what it needs");
  sub->footer(
      "\nwriter: runs the sink (registry read, docs, events, heads, producer checkpoints); it\n"
      "        cannot drop, truncate, purge or change floors, epochs or the registry.\n"
      "reader: reads topics, docs and events and the read functions, records its consumer\n"
      "        position; writes nothing else.\n"
      "owner:  owns the schema, tables and functions; runs migrations and purge.\n"
      "--scope-security on: row-level security on docs and events; a reader sees only rows\n"
      "whose scope equals its session setting (SET oasync.scope = 'org:42'), and nothing\n"
      "when it set none. Roles must exist. Run it again after every migration.");
  sub->add_option("--writer", roles->writer, "Role of the sink")->required();
  sub->add_option("--reader", roles->reader, "Role of delivery services and tail")->required();
  sub->add_option("--owner", roles->owner, "Role that owns the schema and runs migrations");
  sub->add_option("--scope-security", *scope, "on or off: row-level security by scope")
      ->check(CLI::IsMember({"on", "off"}));
  out.push_back({sub, [&ctx, roles, scope]() {
                   roles->scope_security = scope->empty()   ? ScopeSecurity::unchanged
                                           : *scope == "on" ? ScopeSecurity::on
                                                            : ScopeSecurity::off;
                   auto conn = ctx.connect();
                   apply_grants(*conn, *roles);
                   fmt::print("granted: writer \"{}\", reader \"{}\"{}{}\n", roles->writer,
                              roles->reader,
                              roles->owner.empty() ? "" : ", owner \"" + roles->owner + "\"",
                              scope->empty() ? "" : ", scope security " + *scope);
                   return to_int(ExitCode::ok);
                 }});
}

}  // namespace oasync::cli
