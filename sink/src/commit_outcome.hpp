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

#include <map>
#include <vector>

#include "pg.hpp"
#include "write_rules.hpp"

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

// What round trip 1 learned for a lost COMMIT: who the transaction is, and
// the heads of the batch's topics as its snapshot saw them.
struct Learned {
  TransactionIdentity who;
  std::map<std::string, std::int64_t> heads;
};

// Reads the sink's identity statement (sink.cpp, kIdentity): its row, and
// the topics it was given, in order.
Learned learned_from(const pg::Result& row, const std::vector<std::string>& topics);

// What counts as proof that a batch committed, beside the server's word.
//   status: pg_xact_status alone (the same server, timeline and run);
//   writes: the server restarted since the transaction began, so its id may
//           name another transaction: the first event of every topic must be
//           the batch's own (key, version, op and payload hash), and a batch
//           without events cannot show that.
enum class Evidence { status, writes };

// The statement committed_bases runs (exposed for the plan test).
extern const pg::Statement kFindEvents;

// The heads before a committed batch whose answer was lost, per topic with
// events: each topic's first event found by key and version, by primary key
// above the head round trip 1 saw (the batch held its docs' locks, so no
// one else wrote that version there). Throws Code::outcome_unknown when the
// events are gone (purged meanwhile) or, with Evidence::writes, not the
// batch's own; oasync::Error (database) when `conn` fails.
std::map<std::string, std::int64_t> committed_bases(pg::Pipeline& pipeline, PGconn* conn,
                                                    const Learned& at, const Resolution& plan,
                                                    Evidence evidence);

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
