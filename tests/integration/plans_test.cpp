// Plans of the hot paths: no statement of the sink, and no read function of
// the SQL contract, may scan a whole table of oasync's, whatever the
// statistics say. Each is planned generically (plan_cache_mode =
// force_generic_plan: the plan a prepared statement keeps) on a database that
// was never analyzed, and again on one with a million events, analyzed. The
// sink's statements are planned under the sink's own planner settings; the
// read functions under PostgreSQL's defaults, as a delivery service calls
// them, both generically and with a client's values (a custom plan), with the
// planner settings a Reader sets (and the README asks of delivery services).
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "oasync/reader.hpp"
#include "reader_statements.hpp"
#include "sink_statements.hpp"
#include "test_db.hpp"

using namespace oasync;
using namespace oasync::test;
using json = nlohmann::json;

namespace {

// Every access to a table of schema oasync that reads it whole: a sequential
// scan, or an index scan without an index condition (a full index walk). The
// registry (oasync.topics, one row per topic) is walked by design by reads
// that span topics (get_doc without a topic).
void whole_table_scans(const json& node, std::vector<std::string>& out) {
  if (node.contains("Schema") && node["Schema"] == "oasync" &&
      node.value("Relation Name", "") != "topics") {
    const std::string type = node["Node Type"];
    const std::string rel = node.value("Relation Name", "?");
    if (type == "Seq Scan") out.push_back("Seq Scan on " + rel);
    if ((type == "Index Scan" || type == "Index Only Scan") && !node.contains("Index Cond")) {
      out.push_back(type + " without a condition on " + rel);
    }
  }
  if (node.contains("Plans")) {
    for (const json& child : node["Plans"]) whole_table_scans(child, out);
  }
}

// Whether `node` or a node under it reads `relation` of schema oasync.
bool reads(const json& node, const std::string& relation) {
  if (node.value("Schema", "") == "oasync" && node.value("Relation Name", "") == relation) {
    return true;
  }
  if (node.contains("Plans")) {
    for (const json& child : node["Plans"]) {
      if (reads(child, relation)) return true;
    }
  }
  return false;
}

// Sorts of journal or doc rows: a read that sorts them holds its whole range
// before the first row goes out, instead of streaming it in index order. (The
// scope exits of a delta snapshot are sorted, DISTINCT ON a key, with a
// lookup of each key's doc: they are a scope's moves since the cursor.)
void sorts(const json& node, std::vector<std::string>& out) {
  if (node.value("Node Type", "") == "Sort" && !reads(node, "scope_exits")) {
    for (const char* rel : {"events", "docs"}) {
      if (reads(node, rel)) out.push_back(std::string("Sort of ") + rel);
    }
  }
  if (node.contains("Plans")) {
    for (const json& child : node["Plans"]) sorts(child, out);
  }
}

// Whether the plan under `node` scans `index`.
bool uses(const json& node, const std::string& index) {
  if (node.value("Index Name", "") == index) return true;
  if (node.contains("Plans")) {
    for (const json& child : node["Plans"]) {
      if (uses(child, index)) return true;
    }
  }
  return false;
}

// Whether a read must stream its rows (a range of the journal or of the
// docs), or may sort them (a lookup by key: a few rows).
enum class Shape { range, lookup };

// The whole-table scans in the plan of `explain` (an EXPLAIN statement
// without FORMAT: it is added here), and for a range read its sorts.
std::vector<std::string> scans(pqxx::transaction_base& tx, const std::string& explain,
                               Shape shape = Shape::range, const char* index = nullptr) {
  const std::string text =
      tx.exec1("EXPLAIN (FORMAT JSON, VERBOSE) " + explain)[0].as<std::string>();
  std::vector<std::string> out;
  const json plan = json::parse(text)[0]["Plan"];
  whole_table_scans(plan, out);
  if (shape == Shape::range) sorts(plan, out);
  if (index != nullptr && !uses(plan, index)) out.push_back(std::string("no scan of ") + index);
  // A plan's InitPlans and SubPlans are children too ("Plans").
  return out;
}

// "NULL, NULL, ..." for a statement's parameters.
std::string nulls(std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += i ? ", NULL" : "NULL";
  return out;
}

// Checks every sink statement's generic plan under the sink's settings.
void check_sink_statements(const TestDatabase& db) {
  auto conn = db.connect();
  pqxx::work tx(*conn);
  tx.exec(internal::sink_planner_settings());
  for (const internal::pg::Statement* s : internal::sink_statements()) {
    CAPTURE(s->name);
    tx.exec(fmt::format("PREPARE {} AS {}", s->name, s->sql));
    const auto found = scans(
        tx, s->types.empty() ? "EXECUTE " + s->name
                             : fmt::format("EXECUTE {}({})", s->name, nulls(s->types.size())));
    CHECK_MESSAGE(found.empty(), fmt::format("{}: {}", s->name, fmt::join(found, "; ")));
  }
}

// A read of the contract, with a client's values.
struct Read {
  const char* name;
  const char* sql;    // with $1.. parameters, each cast to its type
  const char* types;  // for PREPARE
  const char* values;
  Shape shape = Shape::range;
  // An index the plan must use: a scope's read walks the scope's rows only.
  const char* index = nullptr;
};

// The reads a delivery service makes, for topic runtime.run_summaries; the
// values are a live client's: a page near the head, a scope's page, a
// snapshot page.
std::vector<Read> reads(const std::string& epoch, std::int64_t head) {
  static std::vector<std::string> keep;
  keep.clear();
  const auto v = [&](std::string s) { return keep.emplace_back(std::move(s)).c_str(); };
  keep.reserve(16);
  const std::string topic = "'runtime.run_summaries'";
  return {
      {"read_events", "SELECT * FROM oasync.read_events($1, $2, $3, $4)",
       "text, uuid, bigint, bigint",
       v(fmt::format("{}, '{}', {}, {}", topic, epoch, head - 100, head))},
      {"read_events scoped", "SELECT * FROM oasync.read_events($1, $2, $3, $4, $5)",
       "text, uuid, bigint, bigint, text",
       v(fmt::format("{}, '{}', 0, {}, 'org:5'", topic, epoch, head)), Shape::range,
       "events_topic_scope_watermark"},
      {"snapshot_docs", "SELECT * FROM oasync.snapshot_docs($1, $2, $3, $4, $5)",
       "text, text, bigint, text, integer", v(fmt::format("{}, NULL, NULL, '', 1000", topic))},
      {"snapshot_docs scoped", "SELECT * FROM oasync.snapshot_docs($1, $2, $3, $4, $5)",
       "text, text, bigint, text, integer", v(fmt::format("{}, 'org:5', NULL, '', 1000", topic)),
       Shape::range, "docs_topic_scope_key"},
      {"snapshot_docs delta", "SELECT * FROM oasync.snapshot_docs($1, $2, $3, $4, $5)",
       "text, text, bigint, text, integer",
       v(fmt::format("{}, 'org:5', {}, '', 1000", topic, head - 100)), Shape::range,
       "docs_topic_scope_key"},
      {"resume_check", "SELECT * FROM oasync.resume_check($1, $2, $3)", "text, uuid, bigint",
       v(fmt::format("{}, '{}', {}", topic, epoch, head)), Shape::lookup},
      {"topic_position", "SELECT * FROM oasync.topic_position($1)", "text", v(topic),
       Shape::lookup},
      {"Reader::read, a page to the head", internal::reader_page_sql(),
       "text, text, bigint, bigint, text, bigint, boolean, bigint",
       v(fmt::format("{}, '', 0, NULL, NULL, 5000, false, NULL", topic))},
      {"Reader::read, a scope's catch-up", internal::reader_page_sql(),
       "text, text, bigint, bigint, text, bigint, boolean, bigint",
       v(fmt::format("{}, '', 0, NULL, 'org:5', 5000, true, 1048576", topic)), Shape::range,
       "events_topic_scope_watermark"},
      {"read_events, a scope's catch-up page",
       "SELECT * FROM oasync.read_events($1, $2, $3, $4, $5) LIMIT $6",
       "text, uuid, bigint, bigint, text, bigint",
       v(fmt::format("{}, '{}', 0, {}, 'org:5', 5000", topic, epoch, head)), Shape::range,
       "events_topic_scope_watermark"},
      {"get_doc", "SELECT * FROM oasync.get_doc($1, $2)", "text, text",
       v(fmt::format("'run_summary:7', {}", topic)), Shape::lookup},
  };
}

// Every read of oasync.scope_exits that does not walk a scope's exits in
// (topic, scope, watermark) order: a sequential scan, or an index without the
// scope in its condition (scope_exits_topic_watermark walks every exit of
// the topic in the range, every scope's).
void exits_not_by_scope(const json& node, std::vector<std::string>& out) {
  const std::string type = node.value("Node Type", "");
  if (node.value("Schema", "") == "oasync" && node.value("Relation Name", "") == "scope_exits" &&
      type == "Seq Scan") {
    out.push_back("Seq Scan on scope_exits");
  }
  const std::string index = node.value("Index Name", "");
  if (index.rfind("scope_exits", 0) == 0) {
    const std::string cond = node.value("Index Cond", "");
    if (index != "scope_exits_pkey" || cond.find("scope =") == std::string::npos) {
      out.push_back(type + " using " + index + " on (" + cond + ")");
    }
  }
  if (node.contains("Plans")) {
    for (const json& child : node["Plans"]) exits_not_by_scope(child, out);
  }
}

// Prepares every read of the contract on a session with a Reader's
// settings, and hands each to `check` twice, generically and with its
// values (plan_cache_mode), as the EXECUTE statement to explain.
void for_each_read(const TestDatabase& db,
                   const std::function<void(pqxx::work&, const Read&, const std::string& execute,
                                            const char* mode)>& check) {
  auto conn = db.connect();
  Reader reader(*conn);  // sets them on the session
  pqxx::work tx(*conn);
  const std::string epoch =
      tx.exec1("SELECT epoch::text FROM oasync.topics WHERE topic = 'runtime.run_summaries'")[0]
          .as<std::string>();
  const auto head =
      tx.exec1("SELECT head FROM oasync.topics WHERE topic = 'runtime.run_summaries'")[0]
          .as<std::int64_t>();
  int n = 0;
  for (const Read& r : reads(epoch, std::max<std::int64_t>(head, 100))) {
    CAPTURE(r.name);
    const std::string name = fmt::format("read_{}", n++);
    tx.exec(fmt::format("PREPARE {}({}) AS {}", name, r.types, r.sql));
    for (const char* mode : {"force_generic_plan", "force_custom_plan"}) {
      CAPTURE(mode);
      tx.exec(fmt::format("SET LOCAL plan_cache_mode = {}", mode));
      check(tx, r, fmt::format("EXECUTE {}({})", name, r.values), mode);
    }
  }
}

// Checks every read for whole-table scans and, for ranges, sorts.
void check_reads(const TestDatabase& db, const char* which) {
  CAPTURE(which);
  for_each_read(
      db, [&](pqxx::work& tx, const Read& r, const std::string& execute, const char* mode) {
        const auto found = scans(tx, execute, r.shape, r.index);
        CHECK_MESSAGE(found.empty(),
                      fmt::format("{}: {} ({}): {}", which, r.name, mode, fmt::join(found, "; ")));
      });
}

// A million events over 100,000 docs in 97 scopes, some of them moved, then
// ANALYZE: the statistics of a busy topic.
void fill_million(const TestDatabase& db) {
  db.scalar(R"SQL(
WITH ev AS (
  INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, previous_scope, op,
                             payload, payload_hash)
  SELECT 'runtime.run_summaries', g, 'run_summary:' || ((g - 1) % 100000), (g - 1) / 100000 + 1,
         'org:' || ((g - 1) % 97), CASE WHEN g % 1000 = 0 THEN 'org:x' END, 'upsert',
         '{"n":1}'::json, sha256('x')
  FROM generate_series(1, 1000000) g RETURNING 1
), ex AS (
  INSERT INTO oasync.scope_exits (topic, scope, watermark, doc_key, doc_version)
  SELECT 'runtime.run_summaries', 'org:x', g, 'run_summary:' || ((g - 1) % 100000),
         (g - 1) / 100000 + 1
  FROM generate_series(1000, 1000000, 1000) g RETURNING 1
), d AS (
  INSERT INTO oasync.docs (topic, doc_key, scope, doc_version, payload, payload_hash,
                           last_watermark)
  SELECT 'runtime.run_summaries', 'run_summary:' || (g - 900001), 'org:' || ((g - 1) % 97), 10,
         '{"n":1}'::json, sha256('x'), g
  FROM generate_series(900001, 1000000) g RETURNING 1
)
UPDATE oasync.topics SET head = 1000000, live_docs = (SELECT count(*) FROM d)
WHERE topic = 'runtime.run_summaries'
)SQL");
  db.scalar("ANALYZE");
}

}  // namespace

TEST_CASE("no sink statement scans a whole table: never analyzed, and with a million events") {
  TestDatabase fresh;
  check_sink_statements(fresh);
  TestDatabase busy;
  fill_million(busy);
  check_sink_statements(busy);
}

TEST_CASE("no read function scans a whole table: never analyzed, and with a million events") {
  TestDatabase fresh;
  check_reads(fresh, "never analyzed");
  TestDatabase busy;
  fill_million(busy);
  check_reads(busy, "a million events");
}

// Checks that every read's scope exits, if it reads them, are a scope's
// exits in (topic, scope, watermark) order, generically and with its values.
void check_exits_by_scope(const TestDatabase& db, const char* which) {
  CAPTURE(which);
  int exits_read = 0;
  for_each_read(
      db, [&](pqxx::work& tx, const Read& r, const std::string& execute, const char* mode) {
        const json plan = json::parse(
            tx.exec1("EXPLAIN (FORMAT JSON, VERBOSE) " + execute)[0].as<std::string>())[0]["Plan"];
        if (reads(plan, "scope_exits")) ++exits_read;
        std::vector<std::string> found;
        exits_not_by_scope(plan, found);
        CHECK_MESSAGE(found.empty(),
                      fmt::format("{}: {} ({}): {}", which, r.name, mode, fmt::join(found, "; ")));
      });
  CHECK(exits_read > 0);  // the check looked at some exits branch
}

TEST_CASE("a scoped read walks its scope's exits only: never analyzed, and with a million events") {
  TestDatabase fresh;
  check_exits_by_scope(fresh, "never analyzed");
  TestDatabase busy;
  fill_million(busy);
  check_exits_by_scope(busy, "a million events");
}

TEST_CASE("the plan check itself notices a whole-table scan") {
  TestDatabase db;
  auto conn = db.connect();
  pqxx::work tx(*conn);
  CHECK(scans(tx, "SELECT * FROM oasync.docs") == std::vector<std::string>{"Seq Scan on docs"});
  CHECK(scans(tx, "SELECT * FROM oasync.docs ORDER BY payload_hash", Shape::lookup) ==
        std::vector<std::string>{"Seq Scan on docs"});
  tx.exec("SET LOCAL enable_seqscan = off");
  CHECK(scans(tx, "SELECT * FROM oasync.events WHERE topic = 'x' ORDER BY doc_key") ==
        std::vector<std::string>{"Sort of events"});
  CHECK(
      scans(tx, "SELECT * FROM oasync.events WHERE topic = 'x' ORDER BY topic, watermark").empty());
}
