#include "oasync/sink.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <utility>
#include <variant>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "commit_outcome.hpp"
#include "db.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/topics.hpp"
#include "pg.hpp"
#include "sink_statements.hpp"
#include "topic_rows.hpp"
#include "write_rules.hpp"

namespace oasync {
namespace {

using internal::DocKey;
using internal::DocState;
using internal::ValidWrite;
namespace pg = internal::pg;

// A batch costs two round trips (pipelines), whatever its size:
//
//   1. [BEGIN,] lock-or-create the docs, read their states;
//      then the sink decides every write (write_rules.hpp);
//   2. lock the topics, write everything, [store checkpoints,] [COMMIT].
//
// The topic rows, which serialise a topic's writers, are locked in the second
// pipeline: held only while the server runs its last statements, never while
// a result travels to the sink. The write statement numbers the events from
// the heads it reads under those locks, and checks under them that the
// registry and the timeline are what the sink validated against; when not, it
// fails with a SQLSTATE of oasync's own and the sink starts over.
//
// Every statement names its functions, operators and types with their
// schema (nothing resolves through the caller's search_path), takes its lists
// as binary arrays, and reaches rows by primary key per key, or by the ctid of
// a row it locked: no plan can scan docs or events whatever the statistics.
// Locks follow lock_order.hpp.

// The planner settings every statement of the sink is planned with: one
// generic plan per statement (planned once per session, never again per
// batch), and no sequential scan or hash or merge join where a lookup by key
// or ctid exists, so no plan can scan docs or events whatever the statistics
// say (tests/integration/plans_test.cpp shows it on an empty, never analyzed
// database and on one with a million rows). The sink's own session keeps
// them; inside a caller's transaction (apply_within) they are set for the
// batch's statements and then put back.
const char* const kPlannerSettingsSql =
    "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; "
    "SET enable_hashjoin = off; SET enable_mergejoin = off";

const pg::Statement kPinPlanner{"sink_pin_planner",
                                R"SQL(
SELECT pg_catalog.current_setting('plan_cache_mode') AS plan_cache_mode,
       pg_catalog.current_setting('enable_seqscan') AS enable_seqscan,
       pg_catalog.current_setting('enable_hashjoin') AS enable_hashjoin,
       pg_catalog.current_setting('enable_mergejoin') AS enable_mergejoin,
       pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true),
       pg_catalog.set_config('enable_seqscan', 'off', true),
       pg_catalog.set_config('enable_hashjoin', 'off', true),
       pg_catalog.set_config('enable_mergejoin', 'off', true)
)SQL",
                                {}};

const pg::Statement kUnpinPlanner{"sink_unpin_planner",
                                  R"SQL(
SELECT pg_catalog.set_config('plan_cache_mode', $1::pg_catalog.text, true),
       pg_catalog.set_config('enable_seqscan', $2::pg_catalog.text, true),
       pg_catalog.set_config('enable_hashjoin', $3::pg_catalog.text, true),
       pg_catalog.set_config('enable_mergejoin', $4::pg_catalog.text, true)
)SQL",
                                  {pg::kText, pg::kText, pg::kText, pg::kText}};

// The sink's own transaction on a borrowed connection runs without the
// session's statement and lock timeouts, and with its own idle timeout.
const pg::Statement kPinTimeouts{"sink_pin_timeouts",
                                 R"SQL(
SELECT pg_catalog.set_config('statement_timeout', '0', true),
       pg_catalog.set_config('lock_timeout', '0', true),
       pg_catalog.set_config('idle_in_transaction_session_timeout', $1::pg_catalog.text, true)
)SQL",
                                 {pg::kText}};

// SQLSTATEs the sink's statements raise (oasync.raise).
constexpr const char* kRegistryChangedSqlstate = "OA412";
constexpr const char* kNewTimelineSqlstate = "OA428";
constexpr const char* kFencedSqlstate = "OA403";
constexpr const char* kSecondApplyWithinSqlstate = "OA409";
constexpr const char* kCallerIsolationSqlstate = "OA422";

// Thrown inside a transaction when the registry changed since it was cached;
// the transaction is rolled back and run again with a fresh registry.
struct RegistryChanged {
  std::string what;
};

// Thrown inside a transaction when a topic of the batch was last written on
// another timeline: its epoch forks first (note_timeline), then the batch
// runs again.
struct NewTimeline {};

// apply_within's guard: a second one in the same transaction would lock docs
// while holding topic rows, so it fails before it locks anything.
const pg::Statement kGuard{"sink_guard",
                           R"SQL(
SELECT CASE WHEN pg_catalog.current_setting('oasync.sink_applied', true)
                 OPERATOR(pg_catalog.=) 'yes'
            THEN oasync.raise('OA409', 'this transaction already ran apply_within: a second one '
                              'could deadlock against another transaction doing the same (it '
                              'locks docs after holding topic rows); put all of the '
                              'transaction''s writes in one batch')
            ELSE 0 END AS refused,
       CASE WHEN pg_catalog.current_setting('transaction_isolation')
                 OPERATOR(pg_catalog.<>) 'read committed'
            THEN oasync.raise('OA422', pg_catalog.concat(
                   'apply_within needs a READ COMMITTED transaction; this one is ',
                   pg_catalog.current_setting('transaction_isolation'), ', where a concurrent '
                   'writer of the same topic makes the batch fail with a serialization error '
                   '(begin it with pqxx::work, or BEGIN ISOLATION LEVEL READ COMMITTED)'))
            ELSE 0 END AS isolation,
       pg_catalog.set_config('oasync.sink_applied', 'yes', true) AS marked
)SQL",
                           {}};

// Round trip 1 of a transaction the sink commits learns who the transaction
// is (commit_outcome.hpp), and the heads of the batch's topics as its
// snapshot saw them: if the connection is lost at COMMIT and the transaction
// did commit, its events are found above these heads (kFindEvents).
// $1: topics, sorted. heads: their heads in that order, comma-separated.
const pg::Statement kIdentity{"sink_identity",
                              R"SQL(
SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text AS xid,
       pg_catalog.pg_backend_pid() AS pid,
       (SELECT s.system_identifier FROM pg_catalog.pg_control_system() AS s)::pg_catalog.text
         AS system_id,
       oasync.current_timeline() AS timeline,
       pg_catalog.pg_postmaster_start_time()::pg_catalog.text AS started,
       pg_catalog.array_to_string(ARRAY(
         SELECT COALESCE(h.head, 0)
         FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS n(t, i)
         LEFT JOIN LATERAL (SELECT x.head FROM oasync.topics AS x
                            WHERE x.topic OPERATOR(pg_catalog.=) n.t) AS h ON true
         ORDER BY n.i), ',') AS heads
)SQL",
                              {pg::kTextArray}};

// 1a. Locks the batch's docs in (topic, doc_key) order, creating a version-0
// placeholder for each that does not exist: ON CONFLICT ... WHERE false locks
// an existing row without writing it, and waits for a concurrent transaction
// that is creating the same doc. Returns the placeholders it created.
// $1, $2: topics and keys, sorted; $3: the scope each placeholder starts in
// (the batch's last upsert of the key, so that writing the doc in place does
// not change an indexed column: a HOT update, without new index entries).
const pg::Statement kLockDocs{"sink_lock_docs",
                              R"SQL(
INSERT INTO oasync.docs AS d (topic, doc_key, scope, doc_version, last_watermark)
SELECT k.t, k.k, k.s, 0, 0
FROM ROWS FROM (
    pg_catalog.unnest($1::pg_catalog.text[]),
    pg_catalog.unnest($2::pg_catalog.text[]),
    pg_catalog.unnest($3::pg_catalog.text[])) AS k(t, k, s)
ORDER BY k.t COLLATE pg_catalog."C", k.k COLLATE pg_catalog."C"
ON CONFLICT (topic, doc_key) DO UPDATE SET doc_version = d.doc_version WHERE false
RETURNING d.topic, d.doc_key
)SQL",
                              {pg::kTextArray, pg::kTextArray, pg::kTextArray}};

// 1b. The locked docs' states and ctids, one primary-key lookup per key (a
// subquery with LIMIT is never flattened into a join the planner could turn
// into a scan). A new statement, so it sees what a transaction that 1a waited
// for committed.
const pg::Statement kReadDocs{"sink_read_docs",
                              R"SQL(
SELECT d.ctid, d.topic, d.doc_key, d.scope, d.doc_version, d.deleted, d.payload_hash,
       d.source_stream, d.source_seq
FROM ROWS FROM (
    pg_catalog.unnest($1::pg_catalog.text[]),
    pg_catalog.unnest($2::pg_catalog.text[])) AS k(t, k)
CROSS JOIN LATERAL (
  SELECT x.ctid, x.topic, x.doc_key, x.scope, x.doc_version, x.deleted, x.payload_hash,
         x.source_stream, x.source_seq
  FROM oasync.docs AS x
  WHERE x.topic OPERATOR(pg_catalog.=) k.t AND x.doc_key OPERATOR(pg_catalog.=) k.k
  LIMIT 1) AS d
)SQL",
                              {pg::kTextArray, pg::kTextArray}};

// 2a. Locks the topics the batch keeps rows of, in name order, one primary-key lookup
// each. $1: topics, sorted.
const pg::Statement kLockTopics{"sink_lock_topics",
                                R"SQL(
SELECT t.topic
FROM pg_catalog.unnest($1::pg_catalog.text[]) AS n(t)
CROSS JOIN LATERAL (
  SELECT x.topic FROM oasync.topics AS x WHERE x.topic OPERATOR(pg_catalog.=) n.t
  FOR NO KEY UPDATE) AS t
)SQL",
                                {pg::kTextArray}};

// 2b. Everything else in one statement: heads and counters, events (numbered
// from the heads), the exits of scope moves, doc rows, stream positions,
// placeholders, and the notification (delivered at commit).
//   $1..$5    per topic the batch keeps rows of (events, docs or stream
//             positions): name, events, config_revision seen, live-doc and
//             tombstone deltas
//   $6..$14   per event: topic, sequence in its topic, key, version, scope,
//             previous scope, op, payload (inline topics), hash
//   $15..$24  per changed doc: ctid, topic, scope, version, deleted, payload,
//             hash, source stream and seq, sequence of its last event
//   $25..$28  per advanced stream position: ctid, stream, seq, deleted
//   $29       placeholders to remove (ctids)
//   $30, $31  notify?, channel
const pg::Statement kWrite{
    "sink_write",
    R"SQL(
WITH h AS (
  SELECT * FROM ROWS FROM (
      pg_catalog.unnest($1::pg_catalog.text[]),
      pg_catalog.unnest($2::bigint[]),
      pg_catalog.unnest($3::bigint[]),
      pg_catalog.unnest($4::bigint[]),
      pg_catalog.unnest($5::bigint[])) AS h(t, n, rev, live, tomb)
), heads AS (
  UPDATE oasync.topics AS t
  SET head = t.head OPERATOR(pg_catalog.+) h.n,
      live_docs = t.live_docs OPERATOR(pg_catalog.+) h.live,
      tombstones = t.tombstones OPERATOR(pg_catalog.+) h.tomb
  FROM h
  WHERE t.topic OPERATOR(pg_catalog.=) h.t
  RETURNING t.topic, t.head, t.head OPERATOR(pg_catalog.-) h.n AS base, h.n,
    CASE
      WHEN t.config_revision OPERATOR(pg_catalog.<>) h.rev
        THEN oasync.raise('OA412', pg_catalog.concat('the registry entry of topic "', t.topic,
                                                     '" changed during the batch'))
      WHEN NOT coalesce(t.timeline OPERATOR(pg_catalog.=) oasync.current_timeline(), false)
        THEN oasync.raise('OA428', pg_catalog.concat('topic "', t.topic,
                                                     '" was last written on another timeline'))
      ELSE 0
    END AS checked
), ev AS (
  INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, previous_scope, op,
                             payload, payload_hash)
  SELECT e.t, heads.base OPERATOR(pg_catalog.+) e.seq OPERATOR(pg_catalog.+) heads.checked, e.k,
         e.v, e.s, e.ps, e.o, e.p::pg_catalog.json, e.h
  FROM ROWS FROM (
      pg_catalog.unnest($6::pg_catalog.text[]),
      pg_catalog.unnest($7::bigint[]),
      pg_catalog.unnest($8::pg_catalog.text[]),
      pg_catalog.unnest($9::bigint[]),
      pg_catalog.unnest($10::pg_catalog.text[]),
      pg_catalog.unnest($11::pg_catalog.text[]),
      pg_catalog.unnest($12::pg_catalog.text[]),
      pg_catalog.unnest($13::pg_catalog.text[]),
      pg_catalog.unnest($14::pg_catalog.bytea[]))
       AS e(t, seq, k, v, s, ps, o, p, h)
  JOIN heads ON heads.topic OPERATOR(pg_catalog.=) e.t
  RETURNING topic, watermark, doc_key, doc_version, previous_scope
), exits AS (
  INSERT INTO oasync.scope_exits (topic, scope, watermark, doc_key, doc_version)
  SELECT ev.topic, ev.previous_scope, ev.watermark, ev.doc_key, ev.doc_version
  FROM ev WHERE ev.previous_scope IS NOT NULL
  RETURNING 1
), docs AS (
  UPDATE oasync.docs AS d
  SET scope = x.s, doc_version = x.v, deleted = x.d, payload = x.p::pg_catalog.json,
      payload_hash = x.h, source_stream = x.ss, source_seq = x.sq,
      last_watermark = heads.base OPERATOR(pg_catalog.+) x.eseq, updated_at = pg_catalog.now()
  FROM ROWS FROM (
      pg_catalog.unnest($15::pg_catalog.tid[]),
      pg_catalog.unnest($16::pg_catalog.text[]),
      pg_catalog.unnest($17::pg_catalog.text[]),
      pg_catalog.unnest($18::bigint[]),
      pg_catalog.unnest($19::boolean[]),
      pg_catalog.unnest($20::pg_catalog.text[]),
      pg_catalog.unnest($21::pg_catalog.bytea[]),
      pg_catalog.unnest($22::pg_catalog.text[]),
      pg_catalog.unnest($23::bigint[]),
      pg_catalog.unnest($24::bigint[])) AS x(c, t, s, v, d, p, h, ss, sq, eseq)
  JOIN heads ON heads.topic OPERATOR(pg_catalog.=) x.t
  WHERE d.ctid OPERATOR(pg_catalog.=) x.c
  RETURNING 1
), positions AS (
  UPDATE oasync.docs AS d
  SET source_stream = x.ss, source_seq = x.sq, deleted = x.d, updated_at = pg_catalog.now()
  FROM ROWS FROM (
      pg_catalog.unnest($25::pg_catalog.tid[]),
      pg_catalog.unnest($26::pg_catalog.text[]),
      pg_catalog.unnest($27::bigint[]),
      pg_catalog.unnest($28::boolean[])) AS x(c, ss, sq, d)
  WHERE d.ctid OPERATOR(pg_catalog.=) x.c
  RETURNING 1
)
SELECT (SELECT pg_catalog.array_agg(heads.topic) FROM heads) AS topics,
       (SELECT pg_catalog.array_agg(heads.base) FROM heads) AS bases,
       (SELECT pg_catalog.count(*) FROM ev) AS events,
       (SELECT pg_catalog.count(*) FROM exits) AS exits,
       (SELECT pg_catalog.count(*) FROM docs) AS docs,
       (SELECT pg_catalog.count(*) FROM positions) AS positions,
       CASE WHEN pg_catalog.cardinality($29::pg_catalog.tid[]) OPERATOR(pg_catalog.>) 0
            THEN oasync.drop_placeholders($29::pg_catalog.tid[]) ELSE 0 END AS placeholders,
       CASE WHEN (SELECT pg_catalog.count(*) FROM heads) OPERATOR(pg_catalog.<>)
                 pg_catalog.cardinality($1::pg_catalog.text[])
            THEN oasync.raise('OA412', 'a topic of the batch is no longer registered')
            ELSE 0 END AS registered,
       (SELECT pg_catalog.count(pg_catalog.pg_notify($31::pg_catalog.text, pg_catalog.concat(
                 '{"topic":', pg_catalog.to_json(heads.topic)::pg_catalog.text, ',"head":',
                 heads.head, '}')))
        FROM heads WHERE $30::boolean AND heads.n OPERATOR(pg_catalog.>) 0) AS notified
)SQL",
    {pg::kTextArray,  pg::kInt8Array, pg::kInt8Array, pg::kInt8Array,  pg::kInt8Array,
     pg::kTextArray,  pg::kInt8Array, pg::kTextArray, pg::kInt8Array,  pg::kTextArray,
     pg::kTextArray,  pg::kTextArray, pg::kTextArray, pg::kByteaArray, pg::kTidArray,
     pg::kTextArray,  pg::kTextArray, pg::kInt8Array, pg::kBoolArray,  pg::kTextArray,
     pg::kByteaArray, pg::kTextArray, pg::kInt8Array, pg::kInt8Array,  pg::kTidArray,
     pg::kTextArray,  pg::kInt8Array, pg::kBoolArray, pg::kTidArray,   pg::kBool,
     pg::kText}};

// 2c. Producer checkpoints, after the topics (lock_order.hpp), in id order:
// a lower epoch than the stored one fails the batch (fenced).
const pg::Statement kCheckpoints{"sink_checkpoints",
                                 R"SQL(
WITH stored AS (
  INSERT INTO oasync.producer_checkpoints AS c (producer_id, epoch, position)
  SELECT p.id, p.e, p.pos
  FROM ROWS FROM (
      pg_catalog.unnest($1::pg_catalog.text[]),
      pg_catalog.unnest($2::bigint[]),
      pg_catalog.unnest($3::bigint[])) AS p(id, e, pos)
  ORDER BY p.id COLLATE pg_catalog."C"
  ON CONFLICT (producer_id) DO UPDATE
    SET epoch = excluded.epoch, position = excluded.position, updated_at = pg_catalog.now()
    WHERE c.epoch OPERATOR(pg_catalog.<=) excluded.epoch
  RETURNING c.producer_id
)
SELECT CASE WHEN (SELECT pg_catalog.count(*) FROM stored) OPERATOR(pg_catalog.<>)
                 pg_catalog.cardinality($1::pg_catalog.text[])
            THEN oasync.raise('OA403', (
                   SELECT pg_catalog.string_agg(pg_catalog.format(
                            'producer "%s" is fenced: epoch %s is below the stored epoch', p.id,
                            p.e), '; ')
                   FROM ROWS FROM (
                       pg_catalog.unnest($1::pg_catalog.text[]),
                       pg_catalog.unnest($2::bigint[])) AS p(id, e)
                   WHERE p.id OPERATOR(pg_catalog.<>) ALL (SELECT producer_id FROM stored)))
            ELSE 0 END AS fenced
)SQL",
                                 {pg::kTextArray, pg::kInt8Array, pg::kInt8Array}};

// After a failover or a point-in-time restore: forks the epochs of the topics
// first written on this timeline (see migrations/0006_contract.sql), in a
// transaction of its own, under the topics' row locks.
const pg::Statement kNoteTimeline{"sink_note_timeline",
                                  R"SQL(
SELECT pg_catalog.count(*) AS forked
FROM oasync.note_timeline(pg_catalog.array_to_json($1::pg_catalog.text[]))
)SQL",
                                  {pg::kTextArray}};

const pg::Statement kReadCheckpoint{"sink_read_checkpoint",
                                    R"SQL(
SELECT epoch, position FROM oasync.producer_checkpoints
WHERE producer_id OPERATOR(pg_catalog.=) $1::pg_catalog.text
)SQL",
                                    {pg::kText}};

// The sink's view of the registry.
internal::Registry registry_of(std::vector<internal::TopicRow> rows) {
  internal::Registry registry;
  for (auto& row : rows) {
    TopicSpec& spec = row.state.spec;
    registry.emplace(spec.name,
                     internal::TopicInfo{std::move(spec.doc_key_prefix), spec.payload_mode,
                                         spec.max_payload_bytes, row.config_revision});
  }
  return registry;
}

pg::Call call(const pg::Statement& statement) {
  pg::Call c;
  c.statement = &statement;
  return c;
}

pg::Call plain(const char* sql) {
  pg::Call c;
  c.sql = sql;
  return c;
}

std::optional<std::string_view> text_or_null(bool present, const std::string& value) {
  return present ? std::optional<std::string_view>(value) : std::nullopt;
}

// The database's message of an error raised by oasync.raise, without the
// step and SQLSTATE around it.
std::string message_of(const Error& e) {
  std::string m = e.what();
  const std::size_t start = m.find("ERROR:  ");
  if (start != std::string::npos) m = m.substr(start + 8);
  const std::size_t end = std::min(m.find('\n'), m.find(" (SQLSTATE"));
  if (end != std::string::npos) m.resize(end);
  return m;
}

// Runs a step of a transaction, turning oasync's own SQLSTATEs into what
// they mean.
template <typename Fn>
decltype(auto) sql_step(Fn&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    if (e.sqlstate() == kRegistryChangedSqlstate) throw RegistryChanged{message_of(e)};
    if (e.sqlstate() == kNewTimelineSqlstate) throw NewTimeline{};
    if (e.sqlstate() == kFencedSqlstate) throw Error(Code::fenced, message_of(e));
    if (e.sqlstate() == kSecondApplyWithinSqlstate) throw Error(Code::refused, message_of(e));
    if (e.sqlstate() == kCallerIsolationSqlstate) {
      throw Error(Code::invalid_argument, message_of(e));
    }
    throw;
  }
}

// How the sink runs a transaction on a connection.
struct Mode {
  // Whether the sink begins and commits it (on its own connection, or a
  // borrowed one) or the caller does (apply_within).
  enum class Ends { here, elsewhere } ends = Ends::here;
  // Whether the planner settings are the session's (its own connection), or
  // set for this transaction, or set and then put back (apply_within).
  enum class Planner { session, pinned, pinned_then_restored } planner = Planner::session;
  // Whether to refuse a second apply_within in the transaction (and a
  // caller's transaction that is not READ COMMITTED).
  bool guard = false;
  // How the transaction is READ COMMITTED, whatever the session's default:
  // its BEGIN says so (Ends::here); the caller's own transaction is checked
  // by the guard instead.
  enum class Isolation { in_begin, checked } isolation = Isolation::in_begin;
  // Whether round trip 1 learns who the transaction is, for a lost COMMIT.
  enum class Identity { learn, skip } identity = Identity::skip;
};
using Ends = Mode::Ends;
using Planner = Mode::Planner;
using Isolation = Mode::Isolation;
using Identity = Mode::Identity;

}  // namespace

struct Sink::Impl {
  std::string conninfo;                   // empty when borrowing
  std::unique_ptr<pg::Connection> owned;  // set when the Sink opened it
  pqxx::connection_base* borrowed = nullptr;
  SinkOptions options;
  internal::Registry registry;
  bool registry_loaded = false;
  pg::Pipeline pipeline;

  // The caller's planner settings while apply_within pinned them.
  std::vector<std::string> saved_planner;

  // Set by round trip 1 when the mode learns the transaction's identity.
  std::optional<internal::Learned> learned;

  // Opens the owned connection, or reopens it after it was lost.
  void ensure_connected() {
    if (!conninfo.empty() && (!owned || !owned->ok())) {
      owned.reset();
      auto fresh = std::make_unique<pg::Connection>(conninfo, options.stalled_session_timeout_ms);
      const std::string setup = fmt::format(
          "{}; SET idle_in_transaction_session_timeout = {}; SET tcp_user_timeout = {}; "
          "SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {}; "
          "SET tcp_keepalives_count = 3",
          kPlannerSettingsSql, std::max(0, options.stalled_session_timeout_ms),
          std::max(0, options.stalled_session_timeout_ms),
          std::max(1, options.stalled_session_timeout_ms / 3000),
          std::max(1, options.stalled_session_timeout_ms / 6000));
      PGresult* r = PQexec(fresh->get(), setup.c_str());
      const bool ok = r != nullptr && PQresultStatus(r) == PGRES_COMMAND_OK;
      PQclear(r);
      if (!ok) {
        throw Error(Code::database,
                    fmt::format("set up the sink's session: {}", PQerrorMessage(fresh->get())),
                    Retryable::yes);
      }
      owned = std::move(fresh);
    }
  }

  void load_registry(PGconn* conn) {
    registry = registry_of(internal::read_topic_rows(pipeline, conn));
    registry_loaded = true;
  }

  // Step 1: validates every write. Fills the rejections into `results` and
  // returns the valid writes in input order, with where each one came from.
  // An unknown topic refreshes the registry once (it may have been
  // registered since it was cached). A large group is checked by two
  // threads (canonicalizing and hashing payloads is most of the work), on a
  // core that the database is not using meanwhile.
  std::vector<ValidWrite> validate(PGconn* conn, const std::vector<const Batch*>& batches,
                                   std::vector<std::vector<WriteResult>>& results,
                                   std::vector<std::pair<std::size_t, std::size_t>>& origin) {
    using Checked = std::variant<ValidWrite, WriteResult>;
    std::vector<std::pair<std::size_t, std::size_t>> where;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      results[b].resize(batches[b]->writes.size());
      for (std::size_t i = 0; i < batches[b]->writes.size(); ++i) where.emplace_back(b, i);
    }
    std::vector<Checked> checked(where.size());
    const auto check = [&](std::size_t from, std::size_t to) {
      for (std::size_t k = from; k < to; ++k) {
        checked[k] =
            internal::validate_write(batches[where[k].first]->writes[where[k].second], registry);
      }
    };
    constexpr std::size_t kParallelFrom = 256;
    if (where.size() >= kParallelFrom && std::thread::hardware_concurrency() > 1) {
      const std::size_t half = where.size() / 2;
      auto second = std::async(std::launch::async, check, half, where.size());
      check(0, half);
      second.get();
    } else {
      check(0, where.size());
    }
    std::vector<ValidWrite> valid;
    valid.reserve(where.size());
    bool refreshed = false;
    for (std::size_t k = 0; k < where.size(); ++k) {
      const auto [b, i] = where[k];
      if (const auto* r = std::get_if<WriteResult>(&checked[k]);
          r && r->reason == RejectReason::topic_not_registered) {
        if (!refreshed) {
          load_registry(conn);
          refreshed = true;
        }
        checked[k] = internal::validate_write(batches[b]->writes[i], registry);
      }
      if (auto* v = std::get_if<ValidWrite>(&checked[k])) {
        valid.push_back(std::move(*v));
        origin.emplace_back(b, i);
      } else {
        results[b][i] = std::move(std::get<WriteResult>(checked[k]));
      }
    }
    return valid;
  }

  // Round trip 1: [BEGIN,] [the planner settings,] [the guard,] lock or
  // create the docs, read them. Returns their states by key, and their ctids.
  std::map<DocKey, DocState> lock_docs(PGconn* conn, const Mode& mode,
                                       const std::vector<ValidWrite>& writes,
                                       std::map<DocKey, pg::Tid>& ctids) {
    std::map<DocKey, std::string_view> keys;  // with the scope of the key's last upsert
    for (const ValidWrite& v : writes) {
      auto [it, added] = keys.try_emplace({v.write->topic, v.write->doc_key}, std::string_view());
      if (v.write->op == Op::upsert) it->second = v.write->scope;
    }
    std::vector<pg::Call> calls;
    if (mode.isolation == Isolation::in_begin) {
      calls.push_back(plain("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"));
    }
    const std::size_t pin_at = calls.size();
    if (mode.planner != Planner::session) calls.push_back(call(kPinPlanner));
    if (mode.planner == Planner::pinned) {
      // A borrowed connection: its session's timeouts are the caller's, but
      // this transaction is the sink's.
      pg::Call pin = call(kPinTimeouts);
      pin.params.add_text(std::to_string(std::max(0, options.stalled_session_timeout_ms)));
      calls.push_back(std::move(pin));
    }
    if (mode.guard) calls.push_back(call(kGuard));
    learned.reset();
    const std::size_t identity_at = calls.size();
    std::vector<std::string> batch_topics;
    if (mode.identity == Identity::learn) {
      std::set<std::string> names;
      for (const ValidWrite& v : writes) names.insert(v.write->topic);
      batch_topics.assign(names.begin(), names.end());
      pg::Call who = call(kIdentity);
      who.params.add_text_array({batch_topics.begin(), batch_topics.end()});
      calls.push_back(std::move(who));
    }
    std::map<DocKey, DocState> docs;
    if (!keys.empty()) {
      std::vector<std::optional<std::string_view>> topics, names, scopes;
      for (const auto& [key, scope] : keys) {
        topics.emplace_back(key.first);
        names.emplace_back(key.second);
        scopes.emplace_back(scope);
      }
      pg::Call lock = call(kLockDocs);
      lock.params.add_text_array(topics);
      lock.params.add_text_array(names);
      lock.params.add_text_array(scopes);
      calls.push_back(std::move(lock));
      pg::Call read = call(kReadDocs);
      read.params.add_text_array(topics);
      read.params.add_text_array(names);
      calls.push_back(std::move(read));
    }
    std::vector<pg::Result> results = pipeline.run(conn, calls, "lock docs");
    if (mode.identity == Identity::learn)
      learned = internal::learned_from(results[identity_at], batch_topics);
    if (mode.planner == Planner::pinned_then_restored) {
      const pg::Result& saved = results[pin_at];
      saved_planner.clear();
      for (int c = 0; c < 4; ++c) saved_planner.emplace_back(saved.text(0, c));
    }
    if (keys.empty()) return docs;
    const pg::Result& created = results[results.size() - 2];
    const pg::Result& rows = results.back();
    std::set<DocKey> placeholders;
    for (int r = 0; r < created.rows(); ++r) {
      placeholders.emplace(std::string(created.text(r, 0)), std::string(created.text(r, 1)));
    }
    if (rows.rows() != static_cast<int>(keys.size())) {
      throw Error(Code::internal,
                  fmt::format("lock docs: read {} of {} locked docs", rows.rows(), keys.size()));
    }
    const int c_ctid = rows.column("ctid"), c_topic = rows.column("topic"),
              c_key = rows.column("doc_key"), c_scope = rows.column("scope"),
              c_version = rows.column("doc_version"), c_deleted = rows.column("deleted"),
              c_hash = rows.column("payload_hash"), c_stream = rows.column("source_stream"),
              c_seq = rows.column("source_seq");
    for (int r = 0; r < rows.rows(); ++r) {
      DocKey key{std::string(rows.text(r, c_topic)), std::string(rows.text(r, c_key))};
      DocState st;
      st.scope = rows.text(r, c_scope);
      st.version = rows.int8(r, c_version);
      st.deleted = rows.boolean(r, c_deleted);
      st.hash = rows.bytes(r, c_hash);
      st.source_stream = rows.text(r, c_stream);
      if (!rows.is_null(r, c_seq)) st.source_seq = rows.int8(r, c_seq);
      st.placeholder = placeholders.count(key) > 0;
      ctids[key] = rows.tid(r, c_ctid);
      docs.emplace(std::move(key), std::move(st));
    }
    return docs;
  }

  // The connection was lost after COMMIT was sent (`lost`). Finds out what
  // became of the transaction (commit_outcome.hpp). Returns each topic's
  // head before the batch when it committed; throws a retryable
  // Code::database error when it did not (sending it again is safe), and
  // Code::outcome_unknown when nobody can say.
  std::map<std::string, std::int64_t> settle_lost_commit(const Error& lost,
                                                         const internal::Resolution& plan) {
    if (!learned) throw lost;
    const internal::Learned at = *learned;
    if (conninfo.empty()) {
      throw Error(Code::outcome_unknown,
                  fmt::format("{}; a Sink on a borrowed connection cannot reconnect it to find "
                              "out: on server {} (timeline {}), SELECT pg_xact_status('{}') says "
                              "whether {} committed",
                              lost.what(), at.who.system_id, at.who.timeline, at.who.xid,
                              at.who.describe()),
                  Retryable::yes, lost.sqlstate(), "commit");
    }
    using Clock = std::chrono::steady_clock;
    const Clock::time_point deadline =
        Clock::now() + std::chrono::milliseconds(std::max(0, options.lost_commit_timeout_ms));
    // Once the server said "committed", no later failure may be answered as
    // "not applied": reading the watermarks back is retried within the bound.
    std::optional<std::string> committed_but;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      internal::CommitFinding found = internal::find_commit_status(
          conninfo, at.who, std::max(left, std::chrono::milliseconds(0)));
      switch (found.status) {
        case internal::CommitStatus::committed:
          try {
            PGresult* r = PQexec(found.connection->get(), kPlannerSettingsSql);
            PQclear(r);
            return internal::committed_bases(
                pipeline, found.connection->get(), at, plan,
                found.restarted ? internal::Evidence::writes : internal::Evidence::status);
          } catch (const Error& e) {
            if (e.code() == Code::outcome_unknown) throw;
            committed_but = e.what();
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          continue;
        case internal::CommitStatus::aborted:
          if (!committed_but) {
            throw Error(Code::database,
                        fmt::format("the connection was lost at commit ({}); {} did not commit "
                                    "({}): nothing of the batch was applied",
                                    lost.what(), at.who.describe(), found.detail),
                        Retryable::yes, "08006", "commit");
          }
          break;
        case internal::CommitStatus::unknown:
          break;
      }
      if (committed_but) {
        throw Error(Code::outcome_unknown,
                    fmt::format("the connection was lost at commit ({}); {} committed, but its "
                                "watermarks could not be read back ({}; then: {}): the writes "
                                "were applied, at watermarks not known",
                                lost.what(), at.who.describe(), *committed_but, found.detail),
                    Retryable::no, "08006", "commit");
      }
      throw Error(Code::outcome_unknown,
                  fmt::format("the connection was lost at commit ({}); whether {} committed is "
                              "unknown: {}",
                              lost.what(), at.who.describe(), found.detail),
                  Retryable::yes, "08006", "commit");
    }
  }

  // Round trip 2: lock the topics, write, store checkpoints, [COMMIT].
  // Returns each topic's head before the batch.
  std::map<std::string, std::int64_t> write(
      PGconn* conn, const Mode& mode, internal::Resolution& plan,
      const std::map<std::string, internal::TopicChange>& changes,
      const std::map<DocKey, pg::Tid>& ctids,
      const std::map<std::string, ProducerCheckpoint>& checkpoints) {
    std::vector<pg::Call> calls;
    // Every topic whose rows the batch keeps is locked and checked, events
    // or not: a stream position is a doc row too, and a topic removed
    // meanwhile must not be left with it (topics apply removes under the
    // same row locks).
    std::map<std::string, internal::TopicChange> touched = changes;
    for (const auto& position : plan.positions) touched.try_emplace(position.key.first);
    if (!touched.empty()) {
      std::vector<std::optional<std::string_view>> topics;
      std::vector<std::optional<std::int64_t>> counts, revisions, live, tomb;
      for (const auto& [topic, change] : touched) {
        topics.emplace_back(topic);
        counts.emplace_back(change.events);
        revisions.emplace_back(registry.at(topic).config_revision);
        live.emplace_back(change.live_docs);
        tomb.emplace_back(change.tombstones);
      }
      pg::Call lock = call(kLockTopics);
      lock.params.add_text_array(topics);
      calls.push_back(std::move(lock));
      pg::Call w = call(kWrite);
      w.params.add_text_array(topics);
      w.params.add_int8_array(counts);
      w.params.add_int8_array(revisions);
      w.params.add_int8_array(live);
      w.params.add_int8_array(tomb);
      add_event_params(w.params, plan);
      add_doc_params(w.params, plan, ctids);
      add_position_and_placeholder_params(w.params, plan, ctids);
      w.params.add_bool(options.notify == Notify::on);
      w.params.add_text(kNotifyChannel);
      calls.push_back(std::move(w));
    } else if (!plan.unused_placeholders.empty()) {
      // Nothing to keep: only the placeholders this batch created go.
      pg::Call w = call(kWrite);
      w.params.add_text_array({});
      for (int i = 0; i < 4; ++i) w.params.add_int8_array({});
      add_event_params(w.params, plan);
      add_doc_params(w.params, plan, ctids);
      add_position_and_placeholder_params(w.params, plan, ctids);
      w.params.add_bool(false);
      w.params.add_text(kNotifyChannel);
      calls.push_back(std::move(w));
    }
    if (!checkpoints.empty()) {
      std::vector<std::optional<std::string_view>> ids;
      std::vector<std::optional<std::int64_t>> epochs, positions;
      for (const auto& [id, c] : checkpoints) {
        ids.emplace_back(id);
        epochs.emplace_back(c.epoch);
        positions.emplace_back(c.position);
      }
      pg::Call cp = call(kCheckpoints);
      cp.params.add_text_array(ids);
      cp.params.add_int8_array(epochs);
      cp.params.add_int8_array(positions);
      calls.push_back(std::move(cp));
    }
    if (mode.planner == Planner::pinned_then_restored) {
      pg::Call unpin = call(kUnpinPlanner);
      for (const std::string& value : saved_planner) unpin.params.add_text(value);
      calls.push_back(std::move(unpin));
    }
    if (mode.ends == Ends::here) calls.push_back(plain("COMMIT"));
    std::map<std::string, std::int64_t> bases;
    if (calls.empty()) return bases;
    const std::vector<pg::Result> results = pipeline.run(conn, calls, "write events and docs");
    if (touched.empty()) return bases;
    const pg::Result& written = results[1];
    const std::vector<std::string> topics = text_array(written.text(0, written.column("topics")));
    const std::vector<std::string> values = text_array(written.text(0, written.column("bases")));
    for (std::size_t i = 0; i < topics.size() && i < values.size(); ++i) {
      bases[topics[i]] = std::stoll(values[i]);
    }
    return bases;
  }

  // Runs the whole group on `conn`. Returns one result list per batch.
  // Throws oasync::Error (nothing committed), RegistryChanged or NewTimeline
  // (roll back and run again).
  std::vector<std::vector<WriteResult>> run(PGconn* conn, const Mode& mode,
                                            const std::vector<const Batch*>& batches) {
    if (!registry_loaded) load_registry(conn);
    std::vector<std::vector<WriteResult>> results(batches.size());
    std::vector<std::pair<std::size_t, std::size_t>> origin;  // (batch, write) per valid write
    std::vector<ValidWrite> valid = validate(conn, batches, results, origin);
    // Fencing within the group: a lower epoch after a higher one.
    const auto checkpoints = internal::collect_checkpoints(batches);
    std::map<DocKey, pg::Tid> ctids;
    auto locked = sql_step([&] { return lock_docs(conn, mode, valid, ctids); });
    // Duplicate, conflict, unchanged or applied.
    internal::Resolution plan = internal::resolve(std::move(locked), std::move(valid));
    const auto changes = internal::number_events(plan);
    std::map<std::string, std::int64_t> bases;
    try {
      bases = sql_step([&] { return write(conn, mode, plan, changes, ctids, checkpoints); });
    } catch (const Error& e) {
      if (e.code() != Code::outcome_unknown || mode.ends != Ends::here) throw;
      bases = settle_lost_commit(e, plan);
    }
    internal::place_events(plan, bases);
    for (std::size_t i = 0; i < origin.size(); ++i) {
      results[origin[i].first][origin[i].second] = std::move(plan.results[i]);
    }
    return results;
  }

  // Forks the epochs of topics first written on this timeline.
  void note_timeline(PGconn* conn, const internal::Resolution& plan) {
    std::set<std::string> names;
    for (const auto& e : plan.events) names.insert(e.topic);
    std::vector<std::optional<std::string_view>> topics(names.begin(), names.end());
    std::vector<pg::Call> calls;
    calls.push_back(plain("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"));
    pg::Call lock = call(kLockTopics);
    lock.params.add_text_array(topics);
    calls.push_back(std::move(lock));
    pg::Call note = call(kNoteTimeline);
    note.params.add_text_array(topics);
    calls.push_back(std::move(note));
    calls.push_back(plain("COMMIT"));
    try {
      pipeline.run(conn, calls, "note the timeline");
    } catch (...) {
      pg::Pipeline::run_quietly(conn, "ROLLBACK");
      throw;
    }
  }

  // Runs the group in a transaction of its own, retrying on registry changes
  // and after noting a new timeline.
  std::vector<std::vector<WriteResult>> run_own(const std::vector<const Batch*>& batches) {
    for (int attempt = 0;; ++attempt) {
      ensure_connected();
      // A borrowed connection is held as libpqxx's "transaction" while the
      // sink runs its own BEGIN ... COMMIT on it, in its round trips.
      std::unique_ptr<pg::Borrowed> held;
      PGconn* conn = nullptr;
      Mode mode;
      if (owned) {
        conn = owned->get();
      } else {
        held = internal::db_step("borrow the connection",
                                 [&] { return std::make_unique<pg::Borrowed>(*borrowed); });
        conn = held->get();
        internal::require_utf8(conn, "a Sink on a borrowed connection");
        mode.planner = Planner::pinned;
        // The caller's session may have been reset (DISCARD ALL) since.
        pipeline.set_prepared(pg::Pipeline::Prepared::verify);
      }
      mode.identity = options.lost_commit == LostCommit::settle ? Identity::learn : Identity::skip;
      const Ends ends = mode.ends;
      try {
        return run(conn, mode, batches);
      } catch (const RegistryChanged& changed) {
        end_failed(conn, ends);
        registry_loaded = false;
        if (attempt >= options.registry_retries) {
          throw Error(Code::database,
                      fmt::format("the topic registry kept changing during the batch ({} times; "
                                  "last: {})",
                                  attempt + 1, changed.what),
                      Retryable::yes);
        }
        // A registry being rewritten holds every topic row for a moment;
        // retrying at once would only queue behind the next rewrite.
        std::this_thread::sleep_for(std::chrono::milliseconds(5 * (attempt + 1)));
      } catch (const NewTimeline&) {
        end_failed(conn, ends);
        held.reset();
        // The fork needs its own transaction; the batch then runs again.
        ensure_connected();
        try {
          if (owned) {
            note_timeline(owned->get(), timeline_plan(batches));
          } else {
            pg::Borrowed fork(*borrowed);
            note_timeline(fork.get(), timeline_plan(batches));
          }
        } catch (const Error& e) {
          // Whatever became of the fork (it is done again when needed), the
          // batch itself was not committed.
          if (owned && !owned->ok()) owned.reset();
          if (e.code() != Code::outcome_unknown) throw;
          throw Error(Code::database,
                      fmt::format("noting a new timeline before the batch: {}; the batch was not "
                                  "applied",
                                  e.what()),
                      Retryable::yes, e.sqlstate(), "note the timeline");
        }
        if (attempt >= options.registry_retries) {
          throw Error(Code::database, "the timeline kept changing during the batch",
                      Retryable::yes);
        }
      } catch (const Error& e) {
        if (e.code() != Code::outcome_unknown) end_failed(conn, ends);
        if (owned && !owned->ok()) owned.reset();
        throw;
      } catch (...) {
        end_failed(conn, ends);
        internal::rethrow_as_error("apply batch");
      }
    }
  }

  // Rolls back what run() began, when it began it.
  void end_failed(PGconn* conn, Ends ends) {
    if (ends == Ends::here && conn != nullptr) pg::Pipeline::run_quietly(conn, "ROLLBACK");
  }

  // The topics a group writes to, as a plan note_timeline can read.
  static internal::Resolution timeline_plan(const std::vector<const Batch*>& batches) {
    internal::Resolution plan;
    for (const Batch* b : batches) {
      for (const DocWrite& w : b->writes) {
        internal::PlannedEvent e;
        e.topic = w.topic;
        plan.events.push_back(std::move(e));
      }
    }
    return plan;
  }

  void add_event_params(pg::Params& p, const internal::Resolution& plan) const {
    std::vector<std::optional<std::string_view>> t, k, s, ps, o, pay, h;
    std::vector<std::optional<std::int64_t>> seq, v;
    for (const auto& e : plan.events) {
      t.emplace_back(e.topic);
      seq.emplace_back(e.sequence);
      k.emplace_back(e.doc_key);
      v.emplace_back(e.version);
      s.emplace_back(e.scope);
      ps.push_back(e.previous_scope ? std::optional<std::string_view>(*e.previous_scope)
                                    : std::nullopt);
      o.emplace_back(to_string(e.op));
      // Pointer topics keep the payload out of the journal.
      const bool inline_payload = registry.at(e.topic).mode == PayloadMode::inline_payload;
      pay.push_back(text_or_null(e.op == Op::upsert && inline_payload, e.payload));
      h.push_back(text_or_null(e.op == Op::upsert, e.hash));
    }
    p.add_text_array(t);
    p.add_int8_array(seq);
    p.add_text_array(k);
    p.add_int8_array(v);
    p.add_text_array(s);
    p.add_text_array(ps);
    p.add_text_array(o);
    p.add_text_array(pay);
    p.add_bytea_array(h);
  }

  static void add_doc_params(pg::Params& p, const internal::Resolution& plan,
                             const std::map<DocKey, pg::Tid>& ctids) {
    std::vector<pg::Tid> c;
    std::vector<std::optional<std::string_view>> t, s, pay, h, ss;
    std::vector<std::optional<std::int64_t>> v, sq, eseq;
    std::vector<bool> d;
    for (const auto& doc : plan.docs) {
      const auto& last = plan.events[doc.last_event];
      const DocState& st = doc.state;
      c.push_back(ctids.at(doc.key));
      t.emplace_back(doc.key.first);
      s.emplace_back(st.scope);
      v.emplace_back(st.version);
      d.push_back(st.deleted);
      pay.push_back(text_or_null(!st.deleted, last.payload));
      h.push_back(text_or_null(!st.deleted, st.hash));
      ss.emplace_back(st.source_stream);
      sq.push_back(st.source_seq);
      eseq.emplace_back(last.sequence);
    }
    p.add_tid_array(c);
    p.add_text_array(t);
    p.add_text_array(s);
    p.add_int8_array(v);
    p.add_bool_array(d);
    p.add_text_array(pay);
    p.add_bytea_array(h);
    p.add_text_array(ss);
    p.add_int8_array(sq);
    p.add_int8_array(eseq);
  }

  static void add_position_and_placeholder_params(pg::Params& p, const internal::Resolution& plan,
                                                  const std::map<DocKey, pg::Tid>& ctids) {
    std::vector<pg::Tid> c, placeholders;
    std::vector<std::optional<std::string_view>> ss;
    std::vector<std::optional<std::int64_t>> sq;
    std::vector<bool> d;
    for (const auto& pos : plan.positions) {
      c.push_back(ctids.at(pos.key));
      ss.emplace_back(pos.source_stream);
      sq.emplace_back(pos.source_seq);
      d.push_back(pos.deleted);
    }
    for (const auto& key : plan.unused_placeholders) placeholders.push_back(ctids.at(key));
    p.add_tid_array(c);
    p.add_text_array(ss);
    p.add_int8_array(sq);
    p.add_bool_array(d);
    p.add_tid_array(placeholders);
  }

  // Elements of a one-dimensional text array's text form ("{a,b}"); names
  // and numbers here need no unquoting beyond double quotes.
  static std::vector<std::string> text_array(std::string_view text) {
    std::vector<std::string> out;
    if (text.size() < 2) return out;
    text = text.substr(1, text.size() - 2);
    std::string current;
    bool quoted = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char ch = text[i];
      if (quoted) {
        if (ch == '\\' && i + 1 < text.size()) {
          current.push_back(text[++i]);
        } else if (ch == '"') {
          quoted = false;
        } else {
          current.push_back(ch);
        }
      } else if (ch == '"') {
        quoted = true;
      } else if (ch == ',') {
        out.push_back(std::move(current));
        current.clear();
      } else {
        current.push_back(ch);
      }
    }
    if (!text.empty()) out.push_back(std::move(current));
    return out;
  }

  // apply_bisecting: see apply_group in sink.hpp.
  void apply_bisecting(const std::vector<const Batch*>& batches, GroupResult* out) {
    try {
      auto results = run_own(batches);
      for (std::size_t b = 0; b < batches.size(); ++b) out[b].results = std::move(results[b]);
      return;
    } catch (const Error& e) {
      if (batches.size() == 1 || e.code() == Code::outcome_unknown) {
        for (std::size_t b = 0; b < batches.size(); ++b) out[b].error = e;
        return;
      }
    }
    const std::size_t half = batches.size() / 2;
    apply_bisecting({batches.begin(), batches.begin() + static_cast<std::ptrdiff_t>(half)}, out);
    apply_bisecting({batches.begin() + static_cast<std::ptrdiff_t>(half), batches.end()},
                    out + half);
  }
};

std::unique_ptr<Sink> Sink::open(const std::string& conninfo, SinkOptions options) {
  std::unique_ptr<Sink> sink(new Sink(conninfo, options));
  try {
    sink->impl_->ensure_connected();
  } catch (const Error& e) {
    if (options.connect == Connect::now || e.retryable() == Retryable::no) throw;
  }
  return sink;
}

Sink::Sink(std::string conninfo, SinkOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->conninfo = std::move(conninfo);
  impl_->options = options;
}

Sink::Sink(pqxx::connection_base& connection, SinkOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->borrowed = &connection;
  impl_->options = options;
}

Sink::~Sink() = default;

std::vector<WriteResult> Sink::apply(const Batch& batch) {
  return std::move(impl_->run_own({&batch}).front());
}

std::vector<Sink::GroupResult> Sink::apply_group(const std::vector<const Batch*>& batches) {
  std::vector<GroupResult> out(batches.size());
  if (!batches.empty()) impl_->apply_bisecting(batches, out.data());
  return out;
}

std::vector<WriteResult> Sink::apply_within(pqxx::transaction_base& tx, const Batch& batch) {
  const auto* db_tx = dynamic_cast<const pqxx::dbtransaction*>(&tx);
  if (db_tx == nullptr) {
    throw Error(Code::invalid_argument,
                "apply_within needs a transaction (pqxx::work or another dbtransaction)");
  }
  PGconn* conn = internal::pg::raw_connection(*db_tx);
  internal::require_utf8(conn, "apply_within");
  try {
    Mode mode;
    mode.ends = Ends::elsewhere;
    mode.planner = Planner::pinned_then_restored;
    mode.guard = true;
    mode.isolation = Isolation::checked;
    // The caller's session may have been reset (DISCARD ALL) since.
    impl_->pipeline.set_prepared(internal::pg::Pipeline::Prepared::verify);
    return std::move(impl_->run(conn, mode, {&batch}).front());
  } catch (const RegistryChanged&) {
    impl_->registry_loaded = false;
    throw Error(Code::database,
                "the topic registry changed during the batch; abort and retry the transaction",
                Retryable::yes);
  } catch (const NewTimeline&) {
    throw Error(Code::database,
                "a topic of the batch was last written on another timeline (a failover); abort, "
                "and retry the transaction with apply(), which forks its epoch first",
                Retryable::yes);
  } catch (const Error&) {
    throw;
  } catch (...) {
    internal::rethrow_as_error("apply batch");
  }
}

std::optional<ProducerCheckpoint> Sink::checkpoint(std::string_view producer_id) {
  const auto read = [&](PGconn* conn) -> std::optional<ProducerCheckpoint> {
    std::vector<pg::Call> calls;
    calls.push_back(call(kReadCheckpoint));
    calls.back().params.add_text(producer_id);
    const pg::Result rows =
        std::move(impl_->pipeline.run(conn, calls, "read producer checkpoint").front());
    if (rows.rows() == 0) return std::nullopt;
    return ProducerCheckpoint{std::string(producer_id), rows.int8(0, rows.column("epoch")),
                              rows.int8(0, rows.column("position"))};
  };
  impl_->ensure_connected();
  if (impl_->owned) return read(impl_->owned->get());
  pqxx::work tx(*impl_->borrowed);
  impl_->pipeline.set_prepared(internal::pg::Pipeline::Prepared::verify);
  auto out = read(internal::pg::raw_connection(tx));
  tx.commit();
  return out;
}

}  // namespace oasync

namespace oasync::internal {

std::vector<const pg::Statement*> sink_statements() {
  return {&kGuard,       &kLockDocs,     &kReadDocs,       &kLockTopics, &kWrite,
          &kCheckpoints, &kNoteTimeline, &kReadCheckpoint, &kPinPlanner, &kUnpinPlanner,
          &kIdentity,    &kFindEvents,   &kPinTimeouts};
}

const char* sink_planner_settings() {
  return kPlannerSettingsSql;
}

}  // namespace oasync::internal
