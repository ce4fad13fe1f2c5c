// oasync topics apply/list against a real Postgres.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <pqxx/pqxx>

#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "oasync/topics.hpp"
#include "process.hpp"
#include "temp_dir.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using oasync::test::run_oasync;
using oasync::test::TestDatabase;
using namespace oasync::test;

namespace {

std::string catalog() {
  return oasync::test::source_dir() + "/schema/topics.yaml";
}

// A topic catalog in a file of its own.
struct TempYaml : oasync::test::TempFile {
  explicit TempYaml(const std::string& text) : TempFile(text, "topics.yaml") {}
};

}  // namespace

TEST_CASE("topics apply registers the catalog once and is idempotent") {
  TestDatabase db(TestDatabase::Setup::migrated);
  const auto first = run_oasync({"--database-url", db.url(), "topics", "apply", catalog()});
  CHECK(first.exit_code == 0);
  CHECK(first.out.find("4 created, 0 updated, 0 removed, 0 unchanged") != std::string::npos);
  const std::string epochs =
      db.scalar("SELECT string_agg(epoch::text, ',' ORDER BY topic) FROM oasync.topics");
  const auto second = run_oasync({"--database-url", db.url(), "topics", "apply", catalog()});
  CHECK(second.exit_code == 0);
  CHECK(second.out == "0 created, 0 updated, 0 removed, 4 unchanged\n");
  CHECK(db.scalar("SELECT string_agg(epoch::text, ',' ORDER BY topic) FROM oasync.topics") ==
        epochs);
  // Revisions come from one sequence: distinct, and unchanged by a no-op apply.
  CHECK(db.scalar("SELECT count(DISTINCT config_revision) FROM oasync.topics") == "4");
  CHECK(db.scalar(
            "SELECT payload_mode FROM oasync.topics WHERE topic = 'runtime.codex_worker_events'") ==
        "pointer");
  CHECK(db.scalar("SELECT retention_max_age::text FROM oasync.topics WHERE topic = "
                  "'runtime.codex_worker_events'") == "72:00:00");
  const auto list = run_oasync({"--database-url", db.url(), "topics", "list"});
  CHECK(list.exit_code == 0);
  CHECK(list.out.find("runtime.notifications") != std::string::npos);
}

TEST_CASE("topics apply updates a changed policy and bumps its revision, keeping the epoch") {
  TestDatabase db;
  const std::string epoch =
      db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
  const std::string revision =
      db.scalar("SELECT config_revision FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
  TempYaml yaml(
      "topics:\n"
      "  - name: runtime.run_summaries\n"
      "    doc_key_prefix: \"run_summary:\"\n"
      "    payload_mode: inline\n"
      "    max_payload_bytes: 1024\n");
  const auto r = run_oasync({"--database-url", db.url(), "topics", "apply", yaml.path});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("updated    runtime.run_summaries") != std::string::npos);
  CHECK(r.out.find("3 removed") != std::string::npos);
  CHECK(db.scalar(
            "SELECT max_payload_bytes FROM oasync.topics WHERE topic = 'runtime.run_summaries'") ==
        "1024");
  CHECK(std::stoll(db.scalar("SELECT config_revision FROM oasync.topics WHERE topic = "
                             "'runtime.run_summaries'")) > std::stoll(revision));
  CHECK(db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'") ==
        epoch);
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics") == "1");
}

TEST_CASE("removing a topic that still has docs is refused and changes nothing") {
  TestDatabase db;
  {
    auto sink = oasync::Sink::open(db.url());
    auto results = sink->apply(oasync::test::batch_of({oasync::test::upsert("a", R"({"x":1})")}));
    REQUIRE(results[0].outcome == oasync::Outcome::applied);
  }
  TempYaml yaml(
      "topics:\n  - name: runtime.notifications\n    doc_key_prefix: \"notification:\"\n");
  const auto r = run_oasync({"--database-url", db.url(), "topics", "apply", yaml.path});
  CHECK(r.exit_code == 1);
  CHECK(
      r.err.find("topic \"runtime.run_summaries\" is not in the file but still has docs or events; "
                 "refusing to remove it (nothing was changed)") != std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics") == "4");
}

TEST_CASE("a bad catalog is reported with file and line, before connecting") {
  TempYaml yaml("topics:\n  - name: x.y\n    doc_key_prefix: \"x:\"\n    payload_mode: fat\n");
  const auto r = run_oasync({"--database-url", "host=/nonexistent", "topics", "apply", yaml.path});
  CHECK(r.exit_code == 1);
  CHECK(r.err == "oasync: error: " + yaml.path +
                     ":4: \"payload_mode\" must be inline or pointer, found \"fat\"\n");
}

TEST_CASE("a bad --config file is reported with file and line") {
  TempYaml yaml("database_url: x\nbatchsize: 5\n");
  const auto r = run_oasync({"--config", yaml.path, "topics", "list"});
  CHECK(r.exit_code == 1);
  CHECK(r.err == "oasync: error: " + yaml.path + ":2: unknown key \"batchsize\"\n");
}

TEST_CASE("connection errors never print the password") {
  const auto r =
      run_oasync({"--database-url", "postgresql://alice:s3cret@127.0.0.1:1/db?connect_timeout=2",
                  "topics", "list"});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("s3cret") == std::string::npos);
  CHECK(r.err.find("postgresql://alice:***@127.0.0.1:1/db") != std::string::npos);
}

TEST_CASE("usage errors exit 2 and --version prints the version") {
  CHECK(run_oasync({"migrate", "--no-such-flag"}).exit_code == 2);
  CHECK(run_oasync({}).exit_code == 2);
  const auto v = run_oasync({"--version"});
  CHECK(v.exit_code == 0);
  CHECK(v.out.find("oasync 0.1.0") == 0);
  const auto help = run_oasync({"--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("3  resync required") != std::string::npos);
}

TEST_CASE("an unknown command is named, with the closest one") {
  const auto typo = run_oasync({"--database-url", "x", "tial", "runtime.run_summaries"});
  CHECK(typo.exit_code == 2);
  CHECK(typo.err == "oasync: error: unknown command \"tial\"; did you mean \"tail\"?\n");
  const auto nested = run_oasync({"topics", "lis"});
  CHECK(nested.exit_code == 2);
  CHECK(nested.err ==
        "oasync: error: unknown command \"topics lis\"; did you mean \"topics list\"?\n");
  const auto far = run_oasync({"nosuch"});
  CHECK(far.exit_code == 2);
  CHECK(far.err == "oasync: error: unknown command \"nosuch\"; see oasync --help\n");
  // A known command with a missing argument is still CLI11's usage error.
  const auto missing = run_oasync({"tail"});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("TOPIC is required") == 0);
}

namespace {

// A catalog of the v1 topics plus `extra` (YAML for more topics, or "").
std::string catalog_with(const std::string& extra) {
  std::ifstream in(catalog());
  std::stringstream text;
  text << in.rdbuf();
  return text.str() + extra;
}

const char* const kScratch =
    "  - name: scratch.things\n    doc_key_prefix: \"thing:\"\n    payload_mode: inline\n";

}  // namespace

TEST_CASE("removing a topic while a sink writes to it waits for the sink, then refuses") {
  TestDatabase db;
  TempYaml with_scratch(catalog_with(kScratch));
  TempYaml without(catalog_with(""));
  REQUIRE(
      run_oasync({"--database-url", db.url(), "topics", "apply", with_scratch.path}).exit_code ==
      0);
  auto conn = db.connect();
  oasync::Sink sink(*conn);
  pqxx::work tx(*conn);
  // The sink holds scratch.things' row until this transaction commits.
  REQUIRE(sink.apply_within(
                  tx, batch_of({upsert("1", "{}", std::nullopt, "scratch.things", "thing:")}))[0]
              .outcome == oasync::Outcome::applied);
  oasync::test::Child remove(
      {oasync::test::oasync_binary(), "--database-url", db.url(), "topics", "apply", without.path});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  tx.commit();
  CHECK(remove.wait() == 1);
  CHECK(remove.stderr_text().find("topic \"scratch.things\" is not in the file but still has docs "
                                  "or events; refusing to remove it (nothing was changed): 1 docs, "
                                  "1 events") != std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics WHERE topic = 'scratch.things'") == "1");
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}

TEST_CASE("a batch that keeps only a stream position holds the topic too: no orphan on removal") {
  // Found by the torture run: a delete of a doc that never existed, with a
  // source seq, writes no event but keeps a version-0 row for the stream's
  // position. It must lock its topic like any write, or a removal running
  // meanwhile leaves that row behind without a registered topic.
  TestDatabase db;
  TempYaml with_scratch(catalog_with(kScratch));
  TempYaml without(catalog_with(""));
  REQUIRE(
      run_oasync({"--database-url", db.url(), "topics", "apply", with_scratch.path}).exit_code ==
      0);
  auto conn = db.connect();
  oasync::Sink sink(*conn);
  pqxx::work tx(*conn);
  oasync::DocWrite gone = remove_doc("never", "scratch.things", "thing:");
  gone.source_stream = "run:never";
  gone.source_seq = 1;
  REQUIRE(sink.apply_within(tx, batch_of({gone}))[0].outcome == oasync::Outcome::unchanged);
  oasync::test::Child remove(
      {oasync::test::oasync_binary(), "--database-url", db.url(), "topics", "apply", without.path});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  tx.commit();
  // The removal waited for the sink; the position row it committed was not
  // there when the removal began, so the removal refuses rather than lose it.
  CHECK(remove.wait() == 1);
  CHECK(remove.stderr_text().find("topic \"scratch.things\" was written while it was being "
                                  "removed (1 new position row); refusing to remove it (nothing "
                                  "was changed)") != std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs WHERE topic = 'scratch.things'") == "1");
  // Run again, the removal takes the position row with it: no orphan.
  CHECK(run_oasync({"--database-url", db.url(), "topics", "apply", without.path}).exit_code == 0);
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics WHERE topic = 'scratch.things'") == "0");
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs AS d WHERE NOT EXISTS (SELECT 1 FROM "
                  "oasync.topics AS t WHERE t.topic = d.topic)") == "0");
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}

TEST_CASE(
    "a topic registered again gets a new revision: a running sink never takes it for the old") {
  TestDatabase db;
  TempYaml with_scratch(catalog_with(kScratch));
  TempYaml without(catalog_with(""));
  TempYaml renewed(catalog_with(
      "  - name: scratch.things\n    doc_key_prefix: \"item:\"\n    payload_mode: pointer\n"
      "    max_payload_bytes: 16\n"));
  REQUIRE(
      run_oasync({"--database-url", db.url(), "topics", "apply", with_scratch.path}).exit_code ==
      0);
  auto sink = oasync::Sink::open(db.url());
  // The sink caches the registry with this write (then empties the topic again).
  REQUIRE(sink->apply(batch_of({upsert("probe", "{}", std::nullopt, kRuns)}))[0].outcome ==
          oasync::Outcome::applied);
  const std::string before =
      db.scalar("SELECT config_revision FROM oasync.topics WHERE topic = 'scratch.things'");
  REQUIRE(run_oasync({"--database-url", db.url(), "topics", "apply", without.path}).exit_code == 0);
  REQUIRE(run_oasync({"--database-url", db.url(), "topics", "apply", renewed.path}).exit_code == 0);
  CHECK(db.scalar("SELECT config_revision FROM oasync.topics WHERE topic = 'scratch.things'") !=
        before);
  // The old prefix, the old mode and a payload over the new limit: the sink
  // judges by the new topic.
  const auto r = sink->apply(
      batch_of({upsert("1", "{}", std::nullopt, "scratch.things", "thing:"),
                upsert("2", R"({"far":"too large"})", std::nullopt, "scratch.things", "item:"),
                upsert("3", "{}", std::nullopt, "scratch.things", "item:")}));
  CHECK(r[0].reason == oasync::RejectReason::key_prefix_mismatch);
  CHECK(r[1].reason == oasync::RejectReason::payload_too_large);
  CHECK(r[2].outcome == oasync::Outcome::applied);
  CHECK(db.scalar("SELECT (payload IS NULL)::text FROM oasync.events WHERE topic = "
                  "'scratch.things'") == "true");  // pointer mode
}

TEST_CASE("a name with rows left from an earlier topic is not registered over them") {
  TestDatabase db;
  db.scalar(
      "INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op) VALUES "
      "('scratch.things', 1, 'thing:1', 1, '', 'delete')");
  TempYaml with_scratch(catalog_with(kScratch));
  const auto r = run_oasync({"--database-url", db.url(), "topics", "apply", with_scratch.path});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("topic \"scratch.things\" cannot be registered: 0 docs and 1 events of an "
                   "earlier topic of that name are still stored") != std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics WHERE topic = 'scratch.things'") == "0");
}

namespace {

// What a sink does in its first round trip to a doc it writes (sink.cpp,
// sink_lock_docs): lock the row, or create a version-0 placeholder for it.
void sink_locks_doc(pqxx::work& tx, const std::string& key) {
  tx.exec(
      "INSERT INTO oasync.docs AS d (topic, doc_key, scope, doc_version, last_watermark) "
      "VALUES ('scratch.things', " +
      tx.quote(key) +
      ", '', 0, 0) ON CONFLICT (topic, doc_key) DO UPDATE SET doc_version = d.doc_version "
      "WHERE false");
}

// Waits until the backend `pid` waits for a lock another one holds (not a
// timed assertion: the test goes on only once the removal is blocked).
void wait_until_blocked(const TestDatabase& db, int pid) {
  while (db.scalar("SELECT cardinality(pg_blocking_pids(" + std::to_string(pid) + "))") == "0") {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// What happens to a removal of scratch.things, which holds a position row
// that a sink has locked in its first round trip, when the sink then locks
// the topic (its second round trip), maybe writes a new position row, and
// commits. "removed" or the removal's error (code and message).
std::string removal_beside_a_sink(const TestDatabase& db, const std::string& new_position_key) {
  TempYaml with_scratch(catalog_with(kScratch));
  REQUIRE(
      run_oasync({"--database-url", db.url(), "topics", "apply", with_scratch.path}).exit_code ==
      0);
  // A position row: a delete, with a source seq, of a doc that never existed.
  {
    auto conn = db.connect();
    oasync::Sink sink(*conn);
    pqxx::work tx(*conn);
    oasync::DocWrite gone = remove_doc("never", "scratch.things", "thing:");
    gone.source_stream = "run:never";
    gone.source_seq = 1;
    REQUIRE(sink.apply_within(tx, batch_of({gone}))[0].outcome == oasync::Outcome::unchanged);
    tx.commit();
  }
  std::vector<oasync::TopicSpec> without;
  auto remover = db.connect();
  for (const auto& t : oasync::list_topics(*remover)) {
    if (t.spec.name != "scratch.things") without.push_back(t.spec);
  }
  auto sink_conn = db.connect();
  pqxx::work sink_tx(*sink_conn);
  sink_locks_doc(sink_tx, "thing:never");  // round trip 1
  const int remover_pid = remover->backendpid();
  auto removal = std::async(std::launch::async, [&]() -> std::string {
    try {
      oasync::apply_topics(*remover, without);
      return "removed";
    } catch (const oasync::Error& e) {
      return std::string(oasync::to_string(e.code())) + ": " + e.what();
    }
  });
  wait_until_blocked(db, remover_pid);
  // Round trip 2: the sink locks its topic, as sink_lock_topics does. A
  // removal holding the topic row here is a deadlock (40P01).
  std::string sink_outcome = "committed";
  try {
    sink_tx.exec("SELECT 1 FROM oasync.topics WHERE topic = 'scratch.things' FOR NO KEY UPDATE");
    if (!new_position_key.empty()) {
      sink_tx.exec(
          "INSERT INTO oasync.docs (topic, doc_key, scope, doc_version, last_watermark, "
          "source_stream, source_seq) VALUES ('scratch.things', " +
          sink_tx.quote(new_position_key) + ", '', 0, 0, 'run:other', 1)");
    }
    sink_tx.commit();
  } catch (const std::exception& e) {
    sink_outcome = e.what();
  }
  CHECK(sink_outcome == "committed");
  return removal.get();
}

}  // namespace

TEST_CASE(
    "removing a topic while a sink holds its position row follows the lock order: no deadlock") {
  TestDatabase db;
  CHECK(removal_beside_a_sink(db, "") == "removed");
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics WHERE topic = 'scratch.things'") == "0");
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs WHERE topic = 'scratch.things'") == "0");
}

TEST_CASE(
    "a position row a sink writes while its topic is being removed makes the removal refuse") {
  TestDatabase db;
  CHECK(removal_beside_a_sink(db, "thing:other") ==
        "refused: apply topics: topic \"scratch.things\" was written while it was being removed (1 "
        "new position row); refusing to remove it (nothing was changed)");
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics WHERE topic = 'scratch.things'") == "1");
  CHECK(db.scalar("SELECT string_agg(doc_key, ',' ORDER BY doc_key) FROM oasync.docs WHERE topic "
                  "= 'scratch.things'") == "thing:never,thing:other");
}
