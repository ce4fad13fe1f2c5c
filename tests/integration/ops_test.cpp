// Operating the journal: purge (prefix only, exact floor, keep-last, the
// consumer guard, tombstones, under load), reprojection by diff, consumers.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include <nlohmann/json.hpp>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "oasync/reproject.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

// n run-summary events over `docs` docs, then every event made `days` old.
void old_events(const TestDatabase& db, int n, int docs, int days) {
  auto sink = Sink::open(db.url());
  Batch b;
  for (int i = 0; i < n; ++i)
    b.writes.push_back(upsert(std::to_string(i % docs), R"({"i":)" + std::to_string(i) + "}"));
  sink->apply(b);
  db.scalar("UPDATE oasync.events SET committed_at = now() - interval '" + std::to_string(days) +
            " days'");
}

std::string floor_of(const TestDatabase& db) {
  return db.scalar(
      "SELECT purged_through FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
}

std::string verify_exit(const TestDatabase& db) {
  const auto r = run_oasync({"--database-url", db.url(), "verify"});
  return std::to_string(r.exit_code) + (r.exit_code ? "\n" + r.out : "");
}

}  // namespace

TEST_CASE("purge deletes a prefix only: an out-of-order young event stops the cutoff, no hole") {
  TestDatabase db;
  old_events(db, 20, 5, 10);
  // Watermark 8 committed late but its transaction started "now": young.
  db.scalar("UPDATE oasync.events SET committed_at = now() WHERE watermark = 8");
  const auto r = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns, "--older-than",
                             "1d", "--keep-last", "0"});
  CHECK(r.exit_code == 0);
  CHECK(r.out ==
        "runtime.run_summaries: deleted 7 events, floor 0 -> 7, head 20; removed 0 tombstones\n");
  CHECK(floor_of(db) == "7");
  CHECK(
      db.scalar(
          "SELECT min(watermark) || '-' || max(watermark) || '/' || count(*) FROM oasync.events") ==
      "8-20/13");
  CHECK(verify_exit(db) == "0");
}

TEST_CASE("purge respects keep-last and the topic policy, --dry-run changes nothing") {
  TestDatabase db;
  old_events(db, 30, 5, 10);
  const auto dry = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns,
                               "--older-than", "1d", "--keep-last", "12", "--dry-run"});
  CHECK(dry.exit_code == 0);
  CHECK(dry.out ==
        "runtime.run_summaries: would delete 18 events, floor 0 -> 18, head 30; would remove 0 "
        "tombstones\n");
  CHECK(floor_of(db) == "0");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "30");
  // The policy of schema/topics.yaml keeps 10,000 events: nothing goes.
  const auto policy = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns});
  CHECK(policy.out.find("deleted 0 events, floor 0 -> 0, head 30") != std::string::npos);
  const auto r = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns, "--older-than",
                             "1d", "--keep-last", "12", "--batch-size", "4"});
  CHECK(r.exit_code == 0);
  CHECK(floor_of(db) == "18");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "12");
  CHECK(verify_exit(db) == "0");
}

TEST_CASE("purge refuses to cross a recent consumer unless --force, and names it in --dry-run") {
  TestDatabase db;
  old_events(db, 20, 5, 10);
  REQUIRE(run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0", "--limit", "3",
                      "--consumer", "mobile"})
              .exit_code == 0);
  const std::vector<std::string> purge{"--database-url", db.url(), "purge",       "--topic", kRuns,
                                       "--older-than",   "1d",     "--keep-last", "5"};
  auto dry = purge;
  dry.push_back("--dry-run");
  const auto d = run_oasync(dry);
  CHECK(d.out.find("runtime.run_summaries: consumer \"mobile\" at watermark 3") == 0);
  const auto refused = run_oasync(purge);
  CHECK(refused.exit_code == 1);
  CHECK(refused.out.find(
            "refused: the new floor 15 would cross 1 recent consumer; nothing deleted") !=
        std::string::npos);
  CHECK(floor_of(db) == "0");
  auto forced = purge;
  forced.push_back("--force");
  CHECK(run_oasync(forced).exit_code == 0);
  CHECK(floor_of(db) == "15");
  // The consumer is now stale, and says so.
  const auto listed = run_oasync({"--database-url", db.url(), "consumers", "--format", "json"});
  const auto consumers = nlohmann::json::parse(listed.out);
  REQUIRE(consumers.size() == 1);
  CHECK(consumers[0]["watermark"] == 3);
  CHECK(consumers[0]["lag"] == 17);
  CHECK(consumers[0]["stale"] == true);
  CHECK(run_oasync({"--database-url", db.url(), "tail", kRuns, "--consumer", "mobile"}).exit_code ==
        3);
}

TEST_CASE(
    "purge does not cross a consumer of an epoch forked by a failover, whose position still "
    "resumes") {
  TestDatabase db;
  old_events(db, 20, 5, 10);
  REQUIRE(run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0", "--limit", "3",
                      "--consumer", "mobile"})
              .exit_code == 0);
  const std::string old_epoch =
      db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
  // A failover, as the sink sees it: the topic was last written on another
  // timeline than the server's current one (a promoted replica runs on the
  // next timeline; here the topic's record moves instead of the server), and
  // the sink's next write notes the timeline (oasync.note_timeline), which
  // forks the epoch: the old epoch goes to epoch_history, valid through the
  // head where the two histories part (20).
  db.scalar(
      "UPDATE oasync.topics SET timeline = timeline - 1 WHERE topic = "
      "'runtime.run_summaries'");
  REQUIRE(db.scalar("SELECT string_agg(t, ',') FROM oasync.note_timeline('[\"" +
                    std::string(kRuns) + "\"]') AS t") == kRuns);
  REQUIRE(db.scalar("SELECT epoch::text || '/' || valid_through FROM oasync.epoch_history") ==
          old_epoch + "/20");
  // The consumer's position (old epoch, 3) still resumes, so it is current.
  const auto listed = run_oasync({"--database-url", db.url(), "consumers", "--format", "json"});
  const auto consumers = nlohmann::json::parse(listed.out);
  REQUIRE(consumers.size() == 1);
  CHECK(consumers[0]["epoch"] == old_epoch);
  CHECK(consumers[0]["stale"] == false);

  const std::vector<std::string> purge{"--database-url", db.url(), "purge",       "--topic", kRuns,
                                       "--older-than",   "0s",     "--keep-last", "0"};
  const auto refused = run_oasync(purge);
  CHECK(refused.exit_code == 1);
  CHECK(refused.out.find("runtime.run_summaries: consumer \"mobile\" at watermark 3") !=
        std::string::npos);
  CHECK(refused.out.find(
            "refused: the new floor 20 would cross 1 recent consumer; nothing deleted") !=
        std::string::npos);
  CHECK(floor_of(db) == "0");
  // The consumer resumes where it was: 4..20 of the history both epochs share.
  const auto resumed = run_oasync(
      {"--database-url", db.url(), "tail", kRuns, "--format", "ndjson", "--consumer", "mobile"});
  CHECK(resumed.exit_code == 0);
  CHECK(resumed.out.find("\"watermark\":4,") != std::string::npos);
  CHECK(resumed.out.find("\"watermark\":3,") == std::string::npos);
  CHECK(resumed.out.find("\"watermark\":20,") != std::string::npos);
}

TEST_CASE("tail --consumer records its position and resumes from it") {
  TestDatabase db;
  old_events(db, 10, 3, 0);
  const std::vector<std::string> tail{"--database-url", db.url(), "tail",       kRuns,
                                      "--format",       "ndjson", "--consumer", "web"};
  auto first = tail;
  first.insert(first.end(), {"--after", "0", "--limit", "4"});
  const auto head_part = run_oasync(first);
  CHECK(head_part.exit_code == 0);
  CHECK(head_part.out.find("\"watermark\":4,") != std::string::npos);
  const auto rest = run_oasync(tail);
  CHECK(rest.exit_code == 0);
  CHECK(rest.out.find("\"watermark\":5,") != std::string::npos);
  CHECK(rest.out.find("\"watermark\":4,") == std::string::npos);
  CHECK(db.scalar("SELECT watermark FROM oasync.consumers WHERE name = 'web'") == "10");
}

TEST_CASE("purge removes old tombstones once their events are gone, the delta floor follows") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("a", "{}"), upsert("b", "{}"), remove_doc("a")}));
  db.scalar("UPDATE oasync.docs SET updated_at = now() - interval '40 days' WHERE deleted");
  // Old enough, but its events are retained (the policy keeps the newest
  // 10,000): the tombstone stays, and verify stays clean.
  const auto kept = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns});
  CHECK(kept.out.find("removed 0 tombstones") != std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "2");
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
  // Written again while its history is retained, the doc goes on from its
  // version instead of restarting at 1 beside versions 1 and 2.
  CHECK(sink->apply(batch_of({upsert("a", R"({"again":1})")}))[0].doc_version == 3);
  CHECK(sink->apply(batch_of({remove_doc("a")}))[0].doc_version == 4);
  db.scalar("UPDATE oasync.docs SET updated_at = now() - interval '40 days' WHERE deleted");
  // With every event purged (0s: everything keep-last allows), it goes.
  const auto r = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns, "--older-than",
                             "0s", "--keep-last", "0"});
  CHECK(r.out ==
        "runtime.run_summaries: deleted 5 events, floor 0 -> 5, head 5; removed 1 tombstones\n");
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "1");
  CHECK(db.scalar("SELECT tombstones FROM oasync.topics WHERE topic = 'runtime.run_summaries'") ==
        "0");
  CHECK(db.scalar("SELECT delta_floor FROM oasync.topics WHERE topic = 'runtime.run_summaries'") ==
        "5");
  CHECK(run_oasync({"--database-url", db.url(), "snapshot", kRuns, "--since", "4"}).exit_code == 3);
  CHECK(run_oasync({"--database-url", db.url(), "snapshot", kRuns, "--since", "5"}).exit_code == 0);
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}

TEST_CASE("a purge of 1,000,000 events runs while a sink keeps writing") {
  TestDatabase db;
  db.scalar(R"SQL(
WITH ev AS (
  INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op, payload, payload_hash, committed_at)
  SELECT 'runtime.run_summaries', g, 'run_summary:old' || g, 1, '', 'upsert', '{}'::json,
         sha256(convert_to('{}', 'UTF8')), now() - interval '30 days'
  FROM generate_series(1, 1000000) g RETURNING 1
), d AS (
  INSERT INTO oasync.docs (topic, doc_key, scope, doc_version, payload, payload_hash, last_watermark)
  SELECT 'runtime.run_summaries', 'run_summary:old' || g, '', 1, '{}'::json,
         sha256(convert_to('{}', 'UTF8')), g FROM generate_series(1, 1000000) g RETURNING 1
)
UPDATE oasync.topics SET head = 1000000, live_docs = (SELECT count(*) FROM d) WHERE topic = 'runtime.run_summaries'
)SQL");
  std::atomic<bool> purging{true};
  std::atomic<int> writes{0};
  std::thread writer([&] {
    auto sink = Sink::open(db.url());
    while (purging) {
      const auto r =
          sink->apply(batch_of({upsert("live" + std::to_string(writes % 50),
                                       R"({"n":)" + std::to_string(writes.load()) + "}")}));
      CHECK(r[0].outcome == Outcome::applied);
      ++writes;
    }
  });
  const auto r = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns, "--older-than",
                             "7d", "--keep-last", "0"});
  purging = false;
  writer.join();
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("deleted 1000000 events, floor 0 -> 1000000") ==
        0 + std::string("runtime.run_summaries: ").size());
  MESSAGE("single writes committed while purging: " << writes.load());
  CHECK(writes.load() > 10);
  CHECK(floor_of(db) == "1000000");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == std::to_string(writes.load()));
  CHECK(verify_exit(db) == "0");
}

TEST_CASE(
    "reproject applies exactly the diff, a second run changes nothing, --reset rotates the epoch") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("same", R"({"v":1})"), upsert("changes", R"({"v":1})"),
                        upsert("goes", R"({"v":1})"), upsert("dead", "{}"), remove_doc("dead")}));
  const std::string epoch =
      db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
  const std::string desired =
      R"({"doc_key":"run_summary:same","payload":{ "v" : 1 }})"
      "\n"
      R"({"doc_key":"run_summary:changes","payload":{"v":2}})"
      "\n"
      R"({"topic":"runtime.run_summaries","doc_key":"run_summary:new","payload":{"v":1}})"
      "\n"
      R"({"doc_key":"run_summary:dead","payload":{"back":true}})"
      "\n";
  const auto dry = run_oasync(
      {"--database-url", db.url(), "reproject", kRuns, "--input", "-", "--dry-run"}, desired);
  CHECK(dry.out ==
        "runtime.run_summaries: would be: 1 unchanged, 1 changed, 2 new, 1 deleted, 0 skipped "
        "(changed since 5)\n");
  CHECK(db.scalar("SELECT head FROM oasync.topics WHERE topic = 'runtime.run_summaries'") == "5");
  const auto r = run_oasync(
      {"--database-url", db.url(), "reproject", kRuns, "--input", "-", "--batch-size", "2"},
      desired);
  CHECK(r.exit_code == 0);
  CHECK(r.out ==
        "runtime.run_summaries: 1 unchanged, 1 changed, 2 new, 1 deleted, 0 skipped (changed "
        "since 5)\n");
  CHECK(db.scalar(
            "SELECT string_agg(doc_key || '@' || doc_version || ':' || op, ' ' ORDER BY watermark) "
            "FROM oasync.events WHERE watermark > 5") ==
        "run_summary:changes@2:upsert run_summary:new@1:upsert run_summary:dead@3:upsert "
        "run_summary:goes@2:delete");
  CHECK(db.scalar("SELECT doc_version FROM oasync.docs WHERE doc_key = 'run_summary:same'") == "1");
  const auto again =
      run_oasync({"--database-url", db.url(), "reproject", kRuns, "--input", "-"}, desired);
  CHECK(again.out ==
        "runtime.run_summaries: 4 unchanged, 0 changed, 0 new, 0 deleted, 0 skipped (changed "
        "since 9)\n");
  CHECK(db.scalar("SELECT head FROM oasync.topics WHERE topic = 'runtime.run_summaries'") == "9");
  CHECK(verify_exit(db) == "0");

  // A bad line stops everything before any delete.
  const auto bad = run_oasync({"--database-url", db.url(), "reproject", kRuns, "--input", "-"},
                              R"({"doc_key":"run_summary:same","payload":{"v":1}})"
                              "\n{oops\n");
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("oasync: error: line 2: ") == 0);
  CHECK(bad.err.find("(nothing was deleted)") != std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs WHERE deleted") == "1");

  const auto reset = run_oasync(
      {"--database-url", db.url(), "reproject", kRuns, "--input", "-", "--reset"}, desired);
  CHECK(reset.exit_code == 1);
  CHECK(reset.err ==
        "oasync: error: --reset not confirmed (give --yes when there is no terminal to ask)\n");
  const auto yes = run_oasync(
      {"--database-url", db.url(), "reproject", kRuns, "--input", "-", "--reset", "--yes"},
      desired);
  CHECK(yes.exit_code == 0);
  CHECK(db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'") !=
        epoch);
  const auto old_cursor = run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "9",
                                      "--epoch", epoch, "--format", "ndjson"});
  CHECK(old_cursor.exit_code == 3);
  CHECK(old_cursor.out.find("\"reason\":\"epoch_changed\"") != std::string::npos);
}

TEST_CASE("reproject beside a live projector: what changed since the start is left alone") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("stays", R"({"v":1})"), upsert("live", R"({"v":1})"),
                        upsert("old", R"({"v":1})")}));  // head 3
  Reprojection r(db.url(), kRuns);
  CHECK(r.as_of() == 3);
  // The live projector moves on after the reprojection started.
  sink->apply(batch_of({upsert("live", R"({"v":"live"})"), upsert("born", R"({"v":"live"})")}));
  // The desired set reflects the log up to the start: "live" at its old state,
  // "born" unknown, "old" gone.
  r.add(upsert("stays", R"({"v":1})"), "line 1");
  r.add(upsert("live", R"({"v":1})"), "line 2");
  const ReprojectCounts c = r.finish();
  CHECK(c.unchanged == 1);
  CHECK(c.skipped == 2);  // live (changed since) and born (created since)
  CHECK(c.deleted == 1);  // old
  CHECK(db.scalar("SELECT payload::text FROM oasync.docs WHERE doc_key = 'run_summary:live'") ==
        R"({"v":"live"})");
  CHECK(db.scalar("SELECT deleted::text FROM oasync.docs WHERE doc_key = 'run_summary:born'") ==
        "false");
  CHECK(db.scalar("SELECT deleted::text FROM oasync.docs WHERE doc_key = 'run_summary:old'") ==
        "true");
  CHECK(verify_exit(db) == "0");
}

TEST_CASE("reproject's writes are compare-and-set: a live write between compare and apply wins") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("a", R"({"v":1})"), upsert("b", R"({"v":1})")}));
  // The live projector's transaction changes both docs and holds them.
  auto live_conn = db.connect();
  Sink live(*live_conn);
  pqxx::work live_tx(*live_conn);
  live.apply_within(live_tx,
                    batch_of({upsert("a", R"({"v":"live"})"), upsert("b", R"({"v":"live"})")}));
  // The reprojection compares against the committed versions (1), then waits
  // for the live transaction's row locks when it applies.
  ReprojectCounts counts;
  std::thread reproject([&] {
    Reprojection r(db.url(), kRuns);
    r.add(upsert("a", R"({"v":"desired"})"), "line 1");  // b missing: a delete
    counts = r.finish();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  live_tx.commit();
  reproject.join();
  CHECK(counts.skipped == 2);
  CHECK(counts.changed == 0);
  CHECK(counts.deleted == 0);
  CHECK(db.scalar("SELECT string_agg(payload::text, ',' ORDER BY doc_key) FROM oasync.docs") ==
        R"({"v":"live"},{"v":"live"})");
  CHECK(db.scalar("SELECT max(doc_version) FROM oasync.docs") == "2");
}

TEST_CASE("purge checks consumers again in each batch: one that appears meanwhile is not crossed") {
  TestDatabase db;
  old_events(db, 20, 5, 10);
  const std::string epoch =
      db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
  // After the first batch (watermarks 1..5) is deleted, a consumer at 6 shows up.
  db.scalar(fmt::format(R"SQL(
CREATE FUNCTION public.consumer_appears() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO oasync.consumers (name, topic, epoch, watermark)
  VALUES ('late', 'runtime.run_summaries', '{}', 6) ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
CREATE TRIGGER consumer_appears AFTER DELETE ON oasync.events
FOR EACH STATEMENT EXECUTE FUNCTION public.consumer_appears();
)SQL",
                        epoch));
  const auto r = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns, "--older-than",
                             "1d", "--keep-last", "0", "--batch-size", "5"});
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("consumer \"late\" at watermark 6") != std::string::npos);
  CHECK(floor_of(db) == "5");
  CHECK(verify_exit(db) == "0");
}

TEST_CASE(
    "purge --older-than: 0s means everything keep-last allows, a bad duration is a usage error") {
  TestDatabase db;
  old_events(db, 10, 3, 0);
  const auto r = run_oasync({"--database-url", db.url(), "purge", "--topic", kRuns, "--older-than",
                             "0s", "--keep-last", "4"});
  CHECK(r.exit_code == 0);
  CHECK(floor_of(db) == "6");
  for (const char* bad : {"5x", "-1s", "s", "1.5h"}) {
    CAPTURE(bad);
    const auto usage = run_oasync({"--database-url", db.url(), "purge", "--older-than", bad});
    CHECK(usage.exit_code == 2);
    CHECK(usage.err.find("invalid duration") != std::string::npos);
  }
}
