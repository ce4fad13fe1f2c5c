// oasync inspect: per-topic counts and table sizes, through the library and
// in each output format.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "oasync/inspect.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

// 6 events over docs a, b, c of run summaries; c deleted; then 2 purged.
void fill(const TestDatabase& db) {
  auto sink = Sink::open(db.url());
  sink->apply(
      batch_of({upsert("a", R"({"n":1})"), upsert("b", R"({"n":1})"), upsert("c", R"({"n":1})"),
                upsert("a", R"({"n":2})"), remove_doc("c"), upsert("b", R"({"n":2})")}));
  db.scalar(
      "WITH gone AS (DELETE FROM oasync.events WHERE topic = 'runtime.run_summaries' AND "
      "watermark <= 2 RETURNING 1) UPDATE oasync.topics SET purged_through = 2 WHERE topic = "
      "'runtime.run_summaries'");
  db.scalar("UPDATE oasync.events SET committed_at = now() - interval '1 hour'");
}

}  // namespace

TEST_CASE("inspect counts retained events, live docs and tombstones per topic") {
  TestDatabase db;
  fill(db);
  auto conn = db.connect();
  const Inspection all = inspect(*conn);
  REQUIRE(all.topics.size() == 4);
  const Inspection one = inspect(*conn, std::string(kRuns));
  REQUIRE(one.topics.size() == 1);
  const TopicStats& t = one.topics[0];
  CHECK(t.state.spec.name == kRuns);
  CHECK(t.state.head == 6);
  CHECK(t.state.purged_through == 2);
  CHECK(t.retained_events == 4);
  CHECK(t.live_docs == 2);
  CHECK(t.tombstones == 1);
  CHECK(t.oldest_event_age_seconds >= 3600);
  CHECK(t.oldest_event_age_seconds < 3700);
  std::vector<std::string> tables;
  for (const auto& s : one.tables) tables.push_back(s.table);
  CHECK(tables == std::vector<std::string>{
                      "oasync.consumers", "oasync.docs", "oasync.epoch_history", "oasync.events",
                      "oasync.producer_checkpoints", "oasync.revoked_sessions",
                      "oasync.schema_migrations", "oasync.scope_bindings", "oasync.scope_exits",
                      "oasync.topics", "oasync.trusted_roles"});
  CHECK_THROWS_WITH_AS(inspect(*conn, std::string("runtime.nope")),
                       "inspect: topic \"runtime.nope\" is not registered", Error);
}

TEST_CASE("inspect prints json, prometheus and a table, an unknown topic exits 1") {
  TestDatabase db;
  fill(db);
  const auto json_out =
      run_oasync({"--database-url", db.url(), "inspect", kRuns, "--format", "json"});
  REQUIRE(json_out.exit_code == 0);
  const auto doc = nlohmann::json::parse(json_out.out);
  REQUIRE(doc["topics"].size() == 1);
  const auto& t = doc["topics"][0];
  CHECK(t["topic"] == kRuns);
  CHECK(t["head"] == 6);
  CHECK(t["purged_through"] == 2);
  CHECK(t["retained_events"] == 4);
  CHECK(t["live_docs"] == 2);
  CHECK(t["tombstones"] == 1);
  CHECK(t["payload_mode"] == "inline");
  // Every table of the schema (schema/schema.sql), by name.
  CHECK(doc["tables"].size() == 11);
  CHECK(doc["tables"][3]["table"] == "oasync.events");
  CHECK(doc["tables"][3]["table_bytes"].get<std::int64_t>() > 0);

  const auto prom = run_oasync({"--database-url", db.url(), "inspect", "--format", "prometheus"});
  REQUIRE(prom.exit_code == 0);
  CHECK(prom.out.find("# TYPE oasync_topic_retained_events gauge\n"
                      "oasync_topic_retained_events{topic=\"runtime.codex_worker_events\"} 0\n") !=
        std::string::npos);
  CHECK(prom.out.find("oasync_topic_retained_events{topic=\"runtime.run_summaries\"} 4\n") !=
        std::string::npos);
  CHECK(prom.out.find("oasync_topic_tombstones{topic=\"runtime.run_summaries\"} 1\n") !=
        std::string::npos);
  CHECK(prom.out.find("oasync_table_bytes{table=\"oasync.events\",kind=\"indexes\"} ") !=
        std::string::npos);

  const auto table = run_oasync({"--database-url", db.url(), "inspect", kRuns});
  REQUIRE(table.exit_code == 0);
  CHECK(table.out.find("TOPIC") == 0);
  CHECK(table.out.find("runtime.run_summaries") != std::string::npos);

  const auto unknown = run_oasync({"--database-url", db.url(), "inspect", "runtime.nope"});
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.err == "oasync: error: inspect: topic \"runtime.nope\" is not registered\n");
}
