// Revoked sessions (oasync.revoked_sessions, migrations/0009_serve.sql): the
// front door mints short-lived tokens per session; `oasync sessions revoke`
// records a session, and every `oasync serve` refuses its tokens and ends its
// open streams within a few seconds.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <pqxx/connection_base>

namespace oasync {

// The longest session id, in bytes, that can be revoked (as the CHECK on
// oasync.revoked_sessions, migrations/0009_serve.sql); oasync serve refuses
// tokens whose session_id is longer, since they could never be revoked.
inline constexpr std::size_t kMaxSessionIdBytes = 256;

struct RevokedSession {
  std::string session_id;
  // When it was revoked, in seconds since the Unix epoch (the database's
  // clock), and as Postgres prints a timestamptz.
  double revoked_at = 0;
  std::string revoked_at_text;
  std::string reason;
};

// Records the session as revoked (again: its time and reason are kept).
// Throws oasync::Error (invalid_argument) for an empty id, one over
// kMaxSessionIdBytes, or one holding a NUL.
void revoke_session(pqxx::connection_base& conn, const std::string& session_id,
                    const std::string& reason);

// Sessions revoked after `after` (seconds since the Unix epoch), oldest
// first: what a server polls for.
std::vector<RevokedSession> revoked_sessions(pqxx::connection_base& conn, double after = 0);

}  // namespace oasync
