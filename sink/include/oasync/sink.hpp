// oasync::Sink: makes read-model doc state durable and orderable.
//
// One apply() is one Postgres transaction. For every applied write the doc
// row is upserted and exactly one journal event is appended; both commit or
// neither does. Watermarks are per topic, dense (1, 2, 3, ...) and in commit
// order: a reader that has seen watermark W of a topic never later finds a new
// event of that topic at or below W.
//
// Locking: a transaction takes its locks in oasync's one global order
// (sink/src/lock_order.hpp, which purge and topics apply follow too): (1) the
// existing doc rows it touches, sorted by (topic, doc_key), with SELECT ...
// FOR UPDATE; (2) placeholder rows for its new docs, in the same order (if a
// concurrent transaction created one of them meanwhile, the batch rolls back
// and starts over, now finding it in step 1); (3) topic rows sorted by topic;
// (4) producer checkpoint rows. The topic row lock is the one that serialises
// a topic's writers; it is taken last and held for the final write statement
// and the commit.
//
// A Sink is not thread-safe; use one per thread. It is not copyable.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/connection>
#include <pqxx/transaction_base>

#include "oasync/batch.hpp"
#include "oasync/error.hpp"
#include "oasync/options.hpp"

namespace oasync {

class Sink {
 public:
  // Opens a connection of its own. Throws oasync::Error (retryable) when the
  // database cannot be reached, unless options.connect is
  // Connect::when_needed.
  static std::unique_ptr<Sink> open(const std::string& conninfo, SinkOptions options = {});

  // Uses the caller's connection, which must outlive the Sink.
  explicit Sink(pqxx::connection_base& connection, SinkOptions options = {});
  ~Sink();

  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  // Applies `batch` in a transaction of its own and commits it.
  // Returns one result per write, in input order. Invalid writes are rejected
  // one by one; the rest apply.
  // Throws oasync::Error when the batch as a whole failed (database failure,
  // fenced producer); then nothing of it was committed, except with
  // Code::outcome_unknown. error.retryable() says whether sending it again
  // may succeed. A Sink that owns its connection reconnects on the next call
  // after a lost connection. When the connection is lost after COMMIT was
  // sent, a Sink that owns it finds out what happened (SinkOptions::
  // lost_commit, lost_commit_timeout_ms): a committed batch is answered
  // with its results, one that did not commit with a retryable
  // Code::database error, and Code::outcome_unknown only when the database
  // cannot say (the message names the transaction id). A Sink on a borrowed
  // connection runs its own BEGIN and COMMIT on it but cannot reconnect it:
  // it answers outcome_unknown, naming the id to ask pg_xact_status about.
  std::vector<WriteResult> apply(const Batch& batch);

  // Applies several batches in one transaction (group commit) and returns one
  // result list per batch. When the group fails, for any reason, it is split
  // in halves and each half applied as a group of its own, down to single
  // batches, so that a batch that always fails (a fenced producer, a statement
  // timeout, a full disk) fails alone and the others apply: the element for a
  // failed batch then holds its error. The only error not split on is a
  // commit whose outcome is unknown (Code::outcome_unknown): every batch of
  // that group gets it. The happy path costs one transaction, no savepoint.
  struct GroupResult {
    std::vector<WriteResult> results;
    std::optional<Error> error;
  };
  std::vector<GroupResult> apply_group(const std::vector<const Batch*>& batches);

  // Applies `batch` inside the caller's open transaction, which the caller
  // commits or aborts: a runtime can commit its own state together with the
  // sink's. Listeners are notified when the caller commits. Throws like
  // apply(); the caller's transaction is then unusable and must be aborted.
  //
  // The topic rows stay locked until the caller commits: a long transaction
  // stalls every writer of those topics, and purge, topics apply and
  // reset-epoch of them. One apply_within per transaction: a second one would
  // lock docs while holding topic rows and could deadlock against another
  // transaction doing the same, so it is refused (Code::refused), before it
  // locks anything. The caller's transaction must not lock oasync's doc or
  // topic rows itself.
  //
  // REQUIRES: the connection's client_encoding is UTF8, and the transaction
  // is READ COMMITTED; otherwise the batch is refused before anything is
  // sent or locked (Code::invalid_argument, naming what was found). Its
  // statement and lock timeouts are the caller's. The sink never sends
  // COMMIT here: a connection lost during apply_within loses the caller's
  // transaction whole (a retryable Code::database error); one lost at the
  // caller's COMMIT is the caller's in-doubt commit.
  std::vector<WriteResult> apply_within(pqxx::transaction_base& tx, const Batch& batch);

  // The stored checkpoint of a producer, if it ever wrote one.
  std::optional<ProducerCheckpoint> checkpoint(std::string_view producer_id);

 private:
  Sink(std::string conninfo, SinkOptions options);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace oasync
