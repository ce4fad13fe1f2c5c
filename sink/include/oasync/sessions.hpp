// Revoked sessions (oasync.revoked_sessions, migrations/0009_serve.sql): the
// front door mints short-lived tokens per session; `oasync sessions revoke`
// records a session, and every `oasync serve` refuses its tokens and ends its
// open streams within a few seconds.
#pragma once

#include <string>
#include <vector>

#include <pqxx/connection_base>

namespace oasync {

struct RevokedSession {
  std::string session_id;
  // When it was revoked, in seconds since the Unix epoch (the database's
  // clock), and as Postgres prints a timestamptz.
  double revoked_at = 0;
  std::string revoked_at_text;
  std::string reason;
};

// Records the session as revoked (again: its time and reason are kept).
// Throws oasync::Error (invalid_argument) for an empty id or one over 256
// bytes.
void revoke_session(pqxx::connection_base& conn, const std::string& session_id,
                    const std::string& reason);

// Sessions revoked after `after` (seconds since the Unix epoch), oldest
// first: what a server polls for.
std::vector<RevokedSession> revoked_sessions(pqxx::connection_base& conn, double after = 0);

}  // namespace oasync
