#include "commit_outcome.hpp"

#include <poll.h>

#include <algorithm>
#include <charconv>
#include <exception>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "oasync/error.hpp"

namespace oasync::internal {
namespace {

using Clock = std::chrono::steady_clock;
using pg::Result;

// Which server this is, on which timeline (NULL on a standby, which cannot
// answer for the primary's transactions), and since when it runs.
constexpr const char* kServerSql = R"SQL(
SELECT (SELECT s.system_identifier FROM pg_catalog.pg_control_system() AS s)::pg_catalog.text
         AS system_id,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL
            ELSE oasync.current_timeline() END AS timeline,
       pg_catalog.pg_postmaster_start_time()::pg_catalog.text AS started
)SQL";

constexpr const char* kStatusSql = R"SQL(
SELECT pg_catalog.pg_xact_status($1::pg_catalog.xid8) AS status
)SQL";

// Terminates the backend only while it still holds the transaction (a pid
// may have been reused), waiting up to $3 ms for it to exit.
constexpr const char* kTerminateSql = R"SQL(
SELECT pg_catalog.pg_terminate_backend(a.pid, $3::pg_catalog.int8) AS gone
FROM pg_catalog.pg_stat_activity AS a
WHERE a.pid OPERATOR(pg_catalog.=) $1::pg_catalog.int4
  AND a.backend_xid::pg_catalog.text OPERATOR(pg_catalog.=) $2::pg_catalog.text
)SQL";

using pg::trimmed;

// One statement with text parameters; the rows, or the server's error.
struct Answer {
  std::optional<Result> rows;
  std::string error;
};

// Sends the statement and waits for its answer until `deadline` at most: a
// network that stopped answering must not hold the sink past its bound.
// Past the deadline the answer is an error, and the connection is unusable.
Answer ask(PGconn* conn, const char* sql, const std::vector<std::string>& params,
           Clock::time_point deadline) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const std::string& p : params) values.push_back(p.c_str());
  Answer answer;
  if (PQsendQueryParams(conn, sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                        nullptr, 0) != 1) {
    answer.error = trimmed(PQerrorMessage(conn));
    return answer;
  }
  while (PQisBusy(conn)) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      answer.error = "no answer within the bound";
      return answer;
    }
    pollfd fd{PQsocket(conn), POLLIN, 0};
    ::poll(&fd, 1, static_cast<int>(std::min<long long>(left, 100)));
    if (PQconsumeInput(conn) != 1) {
      answer.error = trimmed(PQerrorMessage(conn));
      return answer;
    }
  }
  while (PGresult* r = PQgetResult(conn)) {
    if (!answer.rows && answer.error.empty()) {
      if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        answer.rows.emplace(r);
        continue;
      }
      answer.error = trimmed(PQresultErrorMessage(r));
    }
    PQclear(r);
  }
  if (!answer.rows && answer.error.empty()) answer.error = trimmed(PQerrorMessage(conn));
  return answer;
}

// The low 32 bits of an xid8: the xid that pg_stat_activity shows.
std::string short_xid(const std::string& xid8) {
  try {
    return std::to_string(std::stoull(xid8) & 0xffffffffULL);
  } catch (const std::exception&) {
    return xid8;
  }
}

}  // namespace

// After a lost COMMIT that did commit: the watermark of one event of each
// topic (its first), found by primary key above the head round trip 1 saw
// (a doc's versions never repeat in its topic's journal: one row at most).
// $1..$4: topic, head seen, key, version. Returns the ordinal of each found.
const pg::Statement kFindEvents{"sink_find_events",
                                R"SQL(
SELECT k.i, e.watermark, e.op, e.payload_hash
FROM ROWS FROM (
    pg_catalog.unnest($1::pg_catalog.text[]),
    pg_catalog.unnest($2::bigint[]),
    pg_catalog.unnest($3::pg_catalog.text[]),
    pg_catalog.unnest($4::bigint[])) WITH ORDINALITY AS k(t, after, k, v, i)
CROSS JOIN LATERAL (
  SELECT x.watermark, x.op, x.payload_hash FROM oasync.events AS x
  WHERE x.topic OPERATOR(pg_catalog.=) k.t AND x.watermark OPERATOR(pg_catalog.>) k.after
    AND x.doc_key OPERATOR(pg_catalog.=) k.k AND x.doc_version OPERATOR(pg_catalog.=) k.v
  LIMIT 1) AS e
)SQL",
                                {pg::kTextArray, pg::kInt8Array, pg::kTextArray, pg::kInt8Array}};

Learned learned_from(const pg::Result& row, const std::vector<std::string>& topics) {
  Learned out;
  out.who.xid = row.text(0, row.column("xid"));
  out.who.backend_pid = static_cast<int>(row.int8(0, row.column("pid")));
  out.who.system_id = row.text(0, row.column("system_id"));
  out.who.timeline = row.int8(0, row.column("timeline"));
  out.who.started = row.text(0, row.column("started"));
  const std::string_view heads = row.text(0, row.column("heads"));
  std::size_t at = 0;
  for (const std::string& topic : topics) {
    const std::size_t comma = std::min(heads.find(',', at), heads.size());
    std::int64_t head = 0;
    std::from_chars(heads.data() + at, heads.data() + comma, head);
    out.heads[topic] = head;
    at = comma + 1;
  }
  return out;
}

std::map<std::string, std::int64_t> committed_bases(pg::Pipeline& pipeline, PGconn* conn,
                                                    const Learned& at, const Resolution& plan,
                                                    Evidence evidence) {
  const auto unproven = [&](const char* why) {
    return Error(Code::outcome_unknown,
                 fmt::format("the server restarted after the connection was lost at commit, so "
                             "its word that {} committed is no proof, and {}",
                             at.who.describe(), why),
                 Retryable::no, "", "commit");
  };
  if (evidence == Evidence::writes && plan.events.empty()) {
    throw unproven("the batch wrote no event to find");
  }
  std::map<std::string, const PlannedEvent*> first;
  for (const auto& e : plan.events) {
    auto [it, added] = first.try_emplace(e.topic, &e);
    if (!added && e.sequence < it->second->sequence) it->second = &e;
  }
  std::map<std::string, std::int64_t> bases;
  if (first.empty()) return bases;
  std::vector<std::optional<std::string_view>> topics, keys;
  std::vector<std::optional<std::int64_t>> heads, versions;
  std::vector<const PlannedEvent*> order;
  for (const auto& [topic, e] : first) {
    topics.emplace_back(topic);
    heads.emplace_back(at.heads.count(topic) ? at.heads.at(topic) : 0);
    keys.emplace_back(e->doc_key);
    versions.emplace_back(e->version);
    order.push_back(e);
  }
  std::vector<pg::Call> calls;
  pg::Call find;
  find.statement = &kFindEvents;
  find.params.add_text_array(topics);
  find.params.add_int8_array(heads);
  find.params.add_text_array(keys);
  find.params.add_int8_array(versions);
  calls.push_back(std::move(find));
  const pg::Result rows = std::move(pipeline.run(conn, calls, "find the committed events").front());
  for (int r = 0; r < rows.rows(); ++r) {
    const PlannedEvent* e = order.at(static_cast<std::size_t>(rows.int8(r, 0) - 1));
    if (evidence == Evidence::writes &&
        (rows.text(r, 2) != to_string(e->op) || rows.bytes(r, 3) != e->hash)) {
      throw unproven("the journal holds another write at its place");
    }
    bases[e->topic] = rows.int8(r, 1) - e->sequence;
  }
  if (bases.size() != first.size()) {
    if (evidence == Evidence::writes) throw unproven("its writes are not in the journal");
    throw Error(Code::outcome_unknown,
                fmt::format("{} committed, but its events were purged before their watermarks "
                            "could be read back: the writes were applied, at watermarks no "
                            "longer known",
                            at.who.describe()),
                Retryable::no, "", "commit");
  }
  return bases;
}

std::string TransactionIdentity::describe() const {
  return fmt::format("transaction {} (backend {} of server {}, timeline {})", xid, backend_pid,
                     system_id, timeline);
}

CommitFinding find_commit_status(const std::string& conninfo, const TransactionIdentity& who,
                                 std::chrono::milliseconds bound) noexcept {
  CommitFinding finding;
  const auto give_up = [&](std::string why) {
    finding.status = CommitStatus::unknown;
    finding.detail = std::move(why);
    finding.connection.reset();
    return std::move(finding);
  };
  try {
    const Clock::time_point deadline = Clock::now() + bound;
    const auto left = [&] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    };
    std::string last = "the bound ran out before the server answered";
    std::chrono::milliseconds pause{20};
    const auto wait = [&] {
      std::this_thread::sleep_for(std::min(pause, std::max(left(), std::chrono::milliseconds(0))));
      pause = std::min(pause * 2, std::chrono::milliseconds(1000));
    };
    while (left().count() > 0) {
      if (!finding.connection || !finding.connection->ok()) {
        finding.connection.reset();
        try {
          // Connecting is bounded by what is left (libpq's least: 2 s).
          finding.connection = std::make_unique<pg::Connection>(
              conninfo, static_cast<int>(std::max<long long>(left().count(), 1)));
        } catch (const Error& e) {
          last = e.what();
          wait();
          continue;
        }
        Answer server = ask(finding.connection->get(), kServerSql, {}, deadline);
        if (!server.rows) {
          last = server.error;
          finding.connection.reset();
          wait();
          continue;
        }
        const Result& row = *server.rows;
        if (row.text(0, 0) != who.system_id) {
          return give_up(
              fmt::format("the database is now server {}, not server {}: {} proves "
                          "nothing there",
                          row.text(0, 0), who.system_id, who.xid));
        }
        if (row.is_null(0, 1)) {
          // A standby (the primary restarting as one, or before a promotion):
          // it may yet become the primary on this timeline or another.
          last = "the server is in recovery";
          finding.connection.reset();
          wait();
          continue;
        }
        if (row.int8(0, 1) != who.timeline) {
          return give_up(
              fmt::format("the server is on timeline {} now, not {} (a failover or a "
                          "restore): transaction {} proves nothing there",
                          row.int8(0, 1), who.timeline, who.xid));
        }
        // After a crash the server may hand the id of a transaction whose
        // commit never reached disk to another one.
        finding.restarted = row.text(0, 2) != who.started;
      }
      PGconn* conn = finding.connection->get();
      Answer status = ask(conn, kStatusSql, {who.xid}, deadline);
      if (!status.rows) {
        if (!finding.connection->ok() || PQisBusy(conn)) {
          last = status.error;
          finding.connection.reset();
          continue;
        }
        // Above the server's next id: the history that held it is gone.
        return give_up(fmt::format("the server cannot say: {}", status.error));
      }
      if (status.rows->is_null(0, 0)) {
        return give_up(fmt::format("transaction {} is too old for the server to know", who.xid));
      }
      const std::string_view s = status.rows->text(0, 0);
      if (s == "committed") {
        finding.status = CommitStatus::committed;
        finding.detail = "the server says it committed";
        return finding;
      }
      if (s == "aborted") {
        finding.status = CommitStatus::aborted;
        finding.detail = "the server says it did not commit";
        finding.connection.reset();
        return finding;
      }
      if (finding.restarted) {
        // Our backend died with the server: the id names another
        // transaction now, so ours never committed durably.
        finding.status = CommitStatus::aborted;
        finding.detail = fmt::format(
            "the server restarted, and transaction id {} now names another transaction: this "
            "one never committed",
            who.xid);
        finding.connection.reset();
        return finding;
      }
      // In progress: end the old backend's hold on it.
      last = fmt::format("transaction {} was still in progress", who.xid);
      const auto patience =
          std::clamp(left(), std::chrono::milliseconds(1), std::chrono::milliseconds(5000));
      Answer ended = ask(
          conn, kTerminateSql,
          {std::to_string(who.backend_pid), short_xid(who.xid), std::to_string(patience.count())},
          deadline);
      if (!ended.rows) {
        last = ended.error;
        finding.connection.reset();
        wait();
      } else if (ended.rows->rows() == 0) {
        wait();  // exiting already
      }
    }
    return give_up(fmt::format("gave up after {} ms: {}", bound.count(), last));
  } catch (const std::exception& e) {
    return give_up(e.what());
  }
}

}  // namespace oasync::internal
