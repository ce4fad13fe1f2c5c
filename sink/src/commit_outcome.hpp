// Internal: what became of a transaction whose connection was lost after its
// COMMIT was sent and before its result arrived.
//
// The sink learns who its transaction is in the first round trip (the
// transaction id, the backend, the server's identity and timeline). When the
// connection is lost at COMMIT, it asks the server over a new connection,
// with pg_xact_status, and trusts the answer only from the same server (the
// same system identifier) on the same timeline: a transaction id means
// nothing on another server, nor after a failover or a restore, where the
// same id may name another transaction or none yet.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "pg.hpp"

namespace oasync::internal {

// Who a transaction is: learned inside it.
struct TransactionIdentity {
  std::string xid;  // pg_current_xact_id(): a 64-bit xid8, in text form
  int backend_pid = 0;
  std::string system_id;  // pg_control_system().system_identifier, in text form
  std::int64_t timeline = 0;
  std::string started;  // pg_postmaster_start_time(), in text form

  // "transaction 1234 (backend 567 of server 7301..., timeline 1)".
  std::string describe() const;
};

enum class CommitStatus {
  committed,
  // Did not commit, and never will: sending the writes again is safe.
  aborted,
  // Nobody can say: the server is gone or another one, the id is too old or
  // from the future, or the bound ran out. Nothing may be sent again blindly.
  unknown,
};

struct CommitFinding {
  CommitStatus status = CommitStatus::unknown;
  // What the server said, or why it could not say; for messages.
  std::string detail;
  // When committed: the session that asked, on the same server and timeline
  // (the sink reads the transaction's watermarks back over it).
  std::unique_ptr<pg::Connection> connection;
  // The server restarted since the transaction began. "committed" is then
  // not proof by itself: after a crash, the id of a transaction whose commit
  // never reached disk may be handed to another one. The sink trusts it only
  // with its own writes found in the journal.
  bool restarted = false;
};

// Finds out whether `who` committed, over connections of its own to
// `conninfo`, for at most `bound` (connecting and every statement included):
//   - it connects (again and again while the server is away) and checks
//     that the server is the same and on the same timeline;
//   - pg_xact_status(xid): "committed" or "aborted" is the answer; NULL (too
//     old to know) or an error (from the future) is unknown;
//   - "in progress" after the server restarted: the id names another
//     transaction now, so this one never committed ("aborted");
//   - "in progress": the old backend still holds the transaction, either
//     waiting for a synchronous standby (which it would do forever) or not
//     yet aware that its client is gone. It is terminated (only if it still
//     holds that transaction), and the question asked again.
// Never throws.
CommitFinding find_commit_status(const std::string& conninfo, const TransactionIdentity& who,
                                 std::chrono::milliseconds bound) noexcept;

}  // namespace oasync::internal
