// oasync sessions revoke SESSION_ID [--reason TEXT] | oasync sessions list [--format table|json]
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/sessions.hpp"

namespace oasync::cli {

void add_sessions_commands(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  CLI::App* sessions = app.add_subcommand("sessions", "Revoke the sessions of served tokens");
  sessions->footer(
      "\nThe front door mints short-lived tokens for `oasync serve`, each naming its session\n"
      "(claim session_id). A revoked session's tokens are refused, and every server ends its\n"
      "open streams within a few seconds (serve.revocation_poll_ms).");
  sessions->require_subcommand(1);

  struct Revoke {
    std::string session_id;
    std::string reason;
  };
  auto r = std::make_shared<Revoke>();
  CLI::App* revoke = sessions->add_subcommand("revoke", "Revoke a session");
  revoke->add_option("SESSION_ID", r->session_id, "The token's session_id claim")->required();
  revoke->add_option("--reason", r->reason, "Why, for the record");
  out.push_back({revoke, [&ctx, r]() {
                   auto conn = ctx.connect();
                   revoke_session(*conn, r->session_id, r->reason);
                   fmt::print("revoked session {}\n", r->session_id);
                   return to_int(ExitCode::ok);
                 }});

  auto format = std::make_shared<std::string>("table");
  CLI::App* list = sessions->add_subcommand("list", "List revoked sessions");
  list->add_option("--format", *format, "table or json")->check(CLI::IsMember({"table", "json"}));
  out.push_back({list, [&ctx, format]() {
                   auto conn = ctx.connect();
                   const auto revoked = revoked_sessions(*conn);
                   if (*format == "json") {
                     nlohmann::ordered_json rows = nlohmann::ordered_json::array();
                     for (const auto& s : revoked) {
                       rows.push_back({{"session_id", s.session_id},
                                       {"revoked_at", s.revoked_at_text},
                                       {"reason", s.reason}});
                     }
                     fmt::print("{}\n", rows.dump(2));
                     return to_int(ExitCode::ok);
                   }
                   fmt::print("{:<40} {:<32} {}\n", "SESSION", "REVOKED AT", "REASON");
                   for (const auto& s : revoked) {
                     fmt::print("{:<40} {:<32} {}\n", s.session_id, s.revoked_at_text, s.reason);
                   }
                   return to_int(ExitCode::ok);
                 }});
}

}  // namespace oasync::cli
