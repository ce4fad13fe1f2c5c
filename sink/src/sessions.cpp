#include "oasync/sessions.hpp"

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

const char* const kRevokeSql = R"SQL(
INSERT INTO oasync.revoked_sessions (session_id, reason) VALUES ($1, $2)
ON CONFLICT (session_id) DO NOTHING
)SQL";

const char* const kRevokedSql = R"SQL(
SELECT session_id, extract(epoch FROM revoked_at)::float8 AS revoked_at,
       revoked_at::text AS revoked_at_text, reason
FROM oasync.revoked_sessions
WHERE revoked_at > to_timestamp($1)
ORDER BY revoked_at, session_id
)SQL";

}  // namespace

void revoke_session(pqxx::connection_base& conn, const std::string& session_id,
                    const std::string& reason) {
  if (session_id.empty() || session_id.size() > kMaxSessionIdBytes ||
      session_id.find('\0') != std::string::npos) {
    throw Error(Code::invalid_argument,
                fmt::format("session id must be 1..{} bytes without NUL (got {} bytes)",
                            kMaxSessionIdBytes, session_id.size()));
  }
  internal::db_step("revoke session", [&] {
    pqxx::work tx(conn, "oasync_revoke_session");
    internal::pin_search_path(tx);
    tx.exec_params(kRevokeSql, session_id, reason);
    tx.commit();
  });
}

std::vector<RevokedSession> revoked_sessions(pqxx::connection_base& conn, double after) {
  return internal::db_step("read revoked sessions", [&] {
    pqxx::read_transaction tx(conn, "oasync_revoked_sessions");
    internal::pin_search_path(tx);
    std::vector<RevokedSession> out;
    for (const auto& row : tx.exec_params(kRevokedSql, after)) {
      out.push_back({row["session_id"].as<std::string>(), row["revoked_at"].as<double>(),
                     row["revoked_at_text"].as<std::string>(), row["reason"].as<std::string>()});
    }
    return out;
  });
}

}  // namespace oasync
