// oasync grants --writer ROLE --reader ROLE [--scope S]... [--server ROLE] [--owner ROLE]
//               [--scope-security on|off]
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/grants.hpp"

namespace oasync::cli {

void add_grants_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  auto roles = std::make_shared<GrantRoles>();
  auto scope = std::make_shared<std::string>();
  auto scopes = std::make_shared<std::vector<std::string>>();
  CLI::App* sub = app.add_subcommand("grants", "Grant each role exactly what it needs");
  sub->footer(
      "\nwriter: runs the sink (registry read, docs, events, heads, producer checkpoints); it\n"
      "        cannot drop, truncate, purge, delete docs, or change floors, epochs or the\n"
      "        registry.\n"
      "reader: reads topics, docs, events and the read functions, and records consumer\n"
      "        positions through oasync.ack_consumer; it writes nothing else.\n"
      "server: a trusted delivery service: the reader's rights for every scope, even under\n"
      "        scope security; it enforces scopes itself.\n"
      "owner:  owns the schema, tables and functions; runs migrations and purge.\n"
      "--scope-security on: row-level security on docs, events and scope exits. A reader\n"
      "sees only the scope its session names (SET oasync.scope = 'org:42'; SET\n"
      "oasync.unscoped = on for the unscoped docs), and only if --scope bound it to the\n"
      "reader role; no binding or no scope named means no rows. Roles must exist. Run it\n"
      "again after every migration.");
  sub->add_option("--writer", roles->writer, "Role of the sink")->required();
  sub->add_option("--reader", roles->reader, "Role of tenant-bound readers and tail")->required();
  sub->add_option("--scope", *scopes,
                  "A scope the reader role may read under scope security (repeatable; '' is "
                  "the unscoped docs); replaces its bindings");
  sub->add_option("--server", roles->server,
                  "Role of a trusted delivery service that reads every scope");
  sub->add_option("--owner", roles->owner, "Role that owns the schema and runs migrations");
  sub->add_option("--scope-security", *scope, "on or off: row-level security by scope")
      ->check(CLI::IsMember({"on", "off"}));
  out.push_back(
      {sub, [&ctx, roles, scope, scopes, sub]() {
         roles->scope_security = scope->empty()   ? ScopeSecurity::unchanged
                                 : *scope == "on" ? ScopeSecurity::on
                                                  : ScopeSecurity::off;
         if (sub->count("--scope") > 0) roles->reader_scopes = *scopes;
         auto conn = ctx.connect();
         apply_grants(*conn, *roles);
         fmt::print("granted: writer \"{}\", reader \"{}\"{}{}{}{}\n", roles->writer, roles->reader,
                    roles->server.empty() ? "" : ", server \"" + roles->server + "\"",
                    roles->owner.empty() ? "" : ", owner \"" + roles->owner + "\"",
                    roles->reader_scopes ? fmt::format(", reader scopes [{}]",
                                                       fmt::join(*roles->reader_scopes, ", "))
                                         : "",
                    scope->empty() ? "" : ", scope security " + *scope);
         return to_int(ExitCode::ok);
       }});
}

}  // namespace oasync::cli
