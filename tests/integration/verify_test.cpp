// oasync verify: a clean journal passes; each deliberate break is found,
// named by its place, and exits 1.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include "oasync/sink.hpp"
#include "process.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

// A small realistic journal: 3 topics touched, updates, a tombstone.
void fill(const TestDatabase& db) {
  auto sink = Sink::open(db.url());
  Batch b;
  for (int i = 0; i < 30; ++i)
    b.writes.push_back(upsert(std::to_string(i % 6), R"({"i":)" + std::to_string(i) + "}"));
  b.writes.push_back(remove_doc("5"));
  b.writes.push_back(
      upsert("e1", R"({"line":"x"})", std::nullopt, kWorkerEvents, "codex_worker_event:"));
  DocWrite n;
  n.topic = "runtime.notifications";
  n.doc_key = "notification:1";
  n.payload = R"({"title":"hi"})";
  b.writes.push_back(n);
  sink->apply(b);
}

}  // namespace

TEST_CASE("verify passes a clean journal with exit 0") {
  TestDatabase db;
  fill(db);
  const auto r = run_oasync({"--database-url", db.url(), "verify"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("verify: 4 topics in ") == 0);
  CHECK(r.out.find(": clean\n") != std::string::npos);
  CHECK(r.out.find("  watermarks            33 checked        0 problems") != std::string::npos);
  const auto sampled = run_oasync(
      {"--database-url", db.url(), "verify", kRuns, "--sample", "3", "--format", "json"});
  CHECK(sampled.exit_code == 0);
  CHECK(sampled.out.find("\"clean\": true") != std::string::npos);
  CHECK(sampled.out.find("\"checked\": 6,") != std::string::npos);  // 3 docs + 3 events hashed
}

TEST_CASE("verify finds each deliberate break, names its place, and exits 1") {
  struct Case {
    const char* name;
    const char* sql;
    const char* line;  // a line verify must print
  };
  const Case cases[] = {
      {"an event deleted in the middle",
       "DELETE FROM oasync.events WHERE topic = 'runtime.run_summaries' AND watermark = 12",
       "runtime.run_summaries: watermark 12: watermarks: expected watermark 12, found a gap: next "
       "is 13\n"},
      {"a doc's version bumped",
       "UPDATE oasync.docs SET doc_version = doc_version + 1 WHERE doc_key = 'run_summary:2'",
       "runtime.run_summaries: doc_key \"run_summary:2\" (version): docs: expected version 5 "
       "(event at "
       "watermark 27), found version 6\n"},
      {"a corrupted hash",
       "UPDATE oasync.events SET payload_hash = sha256('x') WHERE topic = 'runtime.run_summaries' "
       "AND "
       "watermark = 3",
       "runtime.run_summaries: watermark 3: hashes: expected payload_hash "},
      {"a changed head", "UPDATE oasync.topics SET head = 40 WHERE topic = 'runtime.run_summaries'",
       "runtime.run_summaries: watermark 32: watermarks: expected events up to head 40, found the "
       "last "
       "event at 31\n"},
      {"an event for an unregistered topic",
       "INSERT INTO oasync.events VALUES ('runtime.ghost', 1, 'ghost:1', 1, '', 'upsert', NULL, "
       "NULL)",
       "runtime.ghost: events table: topics: expected a registered topic, found 1 rows of an "
       "unregistered topic\n"},
      {"a duplicated version",
       "UPDATE oasync.events SET doc_version = 4 WHERE topic = 'runtime.run_summaries' AND "
       "watermark = 25",
       "runtime.run_summaries: doc_key \"run_summary:0\" at watermark 25: versions: expected "
       "version 5, "
       "found version 4 again (a duplicate)\n"},
      {"a key without its topic's prefix",
       "UPDATE oasync.events SET doc_key = 'worker:9' WHERE topic = 'runtime.run_summaries' AND "
       "watermark = 1",
       "runtime.run_summaries: watermark 1: prefixes: expected a doc_key starting with "
       "\"run_summary:\", "
       "found \"worker:9\"\n"},
      {"a tombstone counter that lost count",
       "UPDATE oasync.topics SET tombstones = 0 WHERE topic = 'runtime.run_summaries'",
       "runtime.run_summaries: topics.tombstones: counters: expected 1, found 0\n"},
      {"a payload that is not canonical",
       "UPDATE oasync.docs SET payload = '{ \"i\": 6 }' WHERE doc_key = 'run_summary:0' AND topic "
       "= "
       "'runtime.run_summaries'",
       "runtime.run_summaries: doc_key \"run_summary:0\": hashes: expected canonical JSON, found { "
       "\"i\": 6 }\n"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    TestDatabase db;
    fill(db);
    REQUIRE(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
    db.scalar(c.sql);
    const auto r = run_oasync({"--database-url", db.url(), "verify"});
    CHECK(r.exit_code == 1);
    CHECK(r.out.find(c.line) != std::string::npos);
    CHECK(r.out.find("PROBLEMS FOUND") != std::string::npos);
    INFO(r.out);
  }
}

TEST_CASE(
    "verify compares each doc's scope with its latest event's: a doc moved by hand is named") {
  TestDatabase db;
  fill(db);
  // Moves through the sink, and a tombstone (run_summary:5), are clean.
  auto sink = Sink::open(db.url());
  DocWrite moved = upsert("1", R"({"moved":1})");
  moved.scope = "org:A";
  DocWrite gone = remove_doc("4");
  REQUIRE(sink->apply(batch_of({moved, gone}))[1].outcome == Outcome::applied);
  REQUIRE(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);

  db.scalar(
      "UPDATE oasync.docs SET scope = 'org:intruder' WHERE topic = 'runtime.run_summaries' "
      "AND doc_key = 'run_summary:2'");
  db.scalar(
      "UPDATE oasync.docs SET scope = 'org:intruder' WHERE topic = 'runtime.run_summaries' "
      "AND doc_key = 'run_summary:4'");
  const auto r = run_oasync({"--database-url", db.url(), "verify"});
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("runtime.run_summaries: doc_key \"run_summary:2\" (scope): docs: expected "
                   "scope \"\" (event at watermark 27), found scope \"org:intruder\"\n") !=
        std::string::npos);
  CHECK(r.out.find("runtime.run_summaries: doc_key \"run_summary:4\" (scope): docs: expected "
                   "scope \"\" (event at watermark 33), found scope \"org:intruder\"\n") !=
        std::string::npos);
  CHECK(r.out.find("  docs                   8 checked        2 problems") != std::string::npos);
  INFO(r.out);
}

TEST_CASE("verify does not compare the scope of a doc whose events were purged") {
  TestDatabase db;
  fill(db);
  DocWrite moved = upsert("1", R"({"moved":1})");
  moved.scope = "org:A";
  Sink::open(db.url())->apply(batch_of({moved}));
  REQUIRE(run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns, "--older-than", "0s",
                      "--keep-last", "0"})
              .exit_code == 0);
  REQUIRE(db.scalar("SELECT count(*) FROM oasync.events WHERE topic = 'runtime.run_summaries'") ==
          "0");
  const auto r = run_oasync({"--database-url", db.url(), "verify"});
  CHECK(r.exit_code == 0);
  INFO(r.out);
}

TEST_CASE("verify --since checks only what came after an incident") {
  TestDatabase db;
  fill(db);
  db.scalar("DELETE FROM oasync.events WHERE topic = 'runtime.run_summaries' AND watermark = 5");
  CHECK(run_oasync({"--database-url", db.url(), "verify", kRuns, "--since", "20"}).exit_code == 0);
  CHECK(run_oasync({"--database-url", db.url(), "verify", kRuns, "--since", "2"}).exit_code == 1);
}

TEST_CASE("verify that cannot run says so and exits 4") {
  const auto r = run_oasync({"--database-url", "host=/nonexistent", "verify"});
  CHECK(r.exit_code == 4);
  CHECK(r.err.find("oasync: error: verify could not run to the end: cannot connect") == 0);
}

TEST_CASE("a clean journal of 1,000,000 events verifies with flat memory") {
  TestDatabase db;
  // 100,000 docs, 10 versions each, canonical payloads with their hashes.
  db.scalar(R"SQL(
WITH ev AS (
  INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op, payload, payload_hash)
  SELECT 'runtime.run_summaries', g, 'run_summary:' || ((g - 1) % 100000), (g - 1) / 100000 + 1,
         'org:1', 'upsert', p::json, sha256(convert_to(p, 'UTF8'))
  FROM generate_series(1, 1000000) g,
       LATERAL (SELECT '{"note":"' || repeat('x', 200) || '","run":' || g || ',"status":"running"}' AS p) x
  RETURNING 1
), d AS (
  INSERT INTO oasync.docs (topic, doc_key, scope, doc_version, payload, payload_hash, last_watermark)
  SELECT 'runtime.run_summaries', 'run_summary:' || (g - 900001), 'org:1', 10, p::json,
         sha256(convert_to(p, 'UTF8')), g
  FROM generate_series(900001, 1000000) g,
       LATERAL (SELECT '{"note":"' || repeat('x', 200) || '","run":' || g || ',"status":"running"}' AS p) x
  RETURNING 1
)
UPDATE oasync.topics SET head = 1000000, live_docs = (SELECT count(*) FROM d) WHERE topic = 'runtime.run_summaries'
)SQL");
  db.scalar("VACUUM ANALYZE");
  const auto r = run_process({"/bin/sh", "-c",
                              "exec \"$0\" --database-url \"$1\" verify runtime.run_summaries",
                              oasync_binary(), db.url()});
  CHECK(r.exit_code == 0);
  MESSAGE(r.out);
  CHECK(r.out.find("  watermarks       1000000 checked        0 problems") != std::string::npos);
  CHECK(r.out.find("  hashes           1100000 checked        0 problems") != std::string::npos);
  struct rusage usage {};
  // An upper bound: a spawned child also counts this test's RSS at the spawn.
  getrusage(RUSAGE_CHILDREN, &usage);
  MESSAGE("peak RSS of oasync verify: " << usage.ru_maxrss / 1024 << " MiB");
  CHECK(usage.ru_maxrss < 128 * 1024);  // KiB: flat; holding the topic would need ~500 MiB
}
