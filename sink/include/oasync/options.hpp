// Options and modes shared by the library's operations. Every field has a
// safe default.
#pragma once

namespace oasync {

// Whether an operation only reports what it would do.
enum class DryRun { no, yes };

// Whether a commit notifies listeners (pg_notify on channel kNotifyChannel).
enum class Notify { on, off };

// The channel the sink notifies after commit. The payload is compact JSON,
// {"topic":"runtime.run_summaries","head":42}: at most one per topic per
// transaction, sent when the transaction commits.
inline constexpr const char* kNotifyChannel = "oasync_topic";

// When a Sink that opens its own connection first connects.
//   now:         Sink::open connects and throws if it cannot.
//   when_needed: Sink::open returns even when the database is unreachable;
//                each apply() connects if needed and, until it can, fails
//                with a retryable error carrying the connection error. For
//                long-lived sinks under a supervisor (`oasync sink --stdio`):
//                a database restart must not crash them.
enum class Connect { now, when_needed };

// What a Sink that owns its connection does when the connection is lost
// after COMMIT was sent.
//   settle: round trip 1 learns the transaction's identity (one more
//           statement in its pipeline), and after a loss the sink finds out
//           whether it committed (lost_commit_timeout_ms below): a batch is
//           answered with its results, "did not commit", or outcome_unknown
//           only when the database cannot say.
//   report: answers Code::outcome_unknown at once. Exists to measure what
//           settling costs (scripts/bench); not meant for production.
enum class LostCommit { settle, report };

struct SinkOptions {
  // Notify listeners after each commit. Turning it off saves one pg_notify per
  // topic per transaction; readers then find new events only by polling.
  // Meant for benchmarks.
  Notify notify = Notify::on;
  // How often a transaction is retried when the topic registry changed under
  // it (a concurrent `oasync topics apply`). Each retry costs one rollback.
  int registry_retries = 10;
  // See Connect; applies to Sink::open only.
  Connect connect = Connect::now;
  // A Sink that owns its connection and loses it after sending COMMIT asks
  // the database whether the transaction committed (pg_xact_status on the
  // same server and timeline, terminating the old backend if it still holds
  // the transaction), reconnecting while the server is away, for at most
  // this long; then it answers Code::outcome_unknown. Meanwhile apply()
  // blocks.
  int lost_commit_timeout_ms = 30000;
  LostCommit lost_commit = LostCommit::settle;
  // The sink's own session gives up on a peer that stopped answering after
  // this long: the server ends a transaction left idle between the sink's
  // two round trips (idle_in_transaction_session_timeout: its row locks are
  // released), and both ends drop a connection whose sent data is not
  // acknowledged (tcp_user_timeout; keepalives probe an idle one). Without
  // it, a network black hole would hold the batch's doc locks, and stall
  // every writer of those docs, for hours.
  int stalled_session_timeout_ms = 30000;
};

}  // namespace oasync
