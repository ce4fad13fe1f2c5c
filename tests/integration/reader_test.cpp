// Reading the journal: the resume rule at its boundaries, tail, snapshot,
// doc get and reset-epoch, through the SQL functions every reader shares.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/wait.h>

#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"
#include "oasync/reader.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "temp_dir.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;
using nlohmann::json;

namespace {

// Writes n run-summary changes (docs cycling over `docs` keys) and returns the head.
std::int64_t write_runs(const TestDatabase& db, int n, int docs = 7, int start = 0) {
  auto sink = Sink::open(db.url());
  Batch b;
  for (int i = start; i < start + n; ++i) {
    b.writes.push_back(upsert(std::to_string(i % docs), R"({"i":)" + std::to_string(i) + "}"));
  }
  return sink->apply(b).back().watermark;
}

// What purge does, by hand: delete a prefix and advance purged_through with it.
void purge_through(const TestDatabase& db, std::int64_t w) {
  db.scalar(
      "WITH d AS (DELETE FROM oasync.events WHERE topic = 'runtime.run_summaries' AND "
      "watermark <= " +
      std::to_string(w) + ") UPDATE oasync.topics SET purged_through = " + std::to_string(w) +
      " WHERE topic = 'runtime.run_summaries'");
}

std::vector<json> lines(const std::string& out) {
  std::vector<json> v;
  std::stringstream s(out);
  std::string line;
  while (std::getline(s, line)) v.push_back(json::parse(line));
  return v;
}

std::string epoch_of(const TestDatabase& db, const std::string& topic = kRuns) {
  return db.scalar("SELECT epoch FROM oasync.topics WHERE topic = '" + topic + "'");
}

}  // namespace

TEST_CASE("the resume rule at every boundary") {
  TestDatabase db;
  write_runs(db, 10);
  purge_through(db, 4);
  const std::string epoch = epoch_of(db);
  auto conn = db.connect();
  Reader reader(*conn);
  struct Case {
    std::int64_t w;
    std::string epoch;
    StaleReason expected;
  };
  const Case cases[] = {
      {4, epoch, StaleReason::none},                    // W = purged_through
      {3, epoch, StaleReason::retention_floor_breach},  // W = purged_through - 1
      {0, epoch, StaleReason::retention_floor_breach},
      {10, epoch, StaleReason::none},          // W = head
      {11, epoch, StaleReason::cursor_ahead},  // W = head + 1
      {7, "", StaleReason::none},              // no epoch given: not compared
      {7, "00000000-0000-0000-0000-000000000000", StaleReason::epoch_changed},
      {3, "00000000-0000-0000-0000-000000000000", StaleReason::epoch_changed},  // epoch first
  };
  for (const Case& c : cases) {
    CAPTURE(c.w);
    CAPTURE(c.epoch);
    const ResumeCheck r = reader.check(kRuns, c.epoch, c.w);
    CHECK(r.reason == c.expected);
    CHECK(r.position.head == 10);
    CHECK(r.position.purged_through == 4);
    CHECK(r.position.epoch == epoch);
  }
  CHECK(reader.check("runtime.nope", "", 0).reason == StaleReason::unknown_topic);
}

TEST_CASE("an empty topic and a fully purged topic follow the same rule") {
  TestDatabase db;
  auto conn = db.connect();
  Reader reader(*conn);
  // Empty: head 0, purged_through 0.
  CHECK(reader.check(kRuns, "", 0).reason == StaleReason::none);
  CHECK(reader.check(kRuns, "", 1).reason == StaleReason::cursor_ahead);
  // Fully purged: head 5, purged_through 5, no rows left at all.
  write_runs(db, 5);
  purge_through(db, 5);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "0");
  CHECK(reader.check(kRuns, "", 5).reason == StaleReason::none);
  CHECK(reader.check(kRuns, "", 4).reason == StaleReason::retention_floor_breach);
  CHECK(reader.check(kRuns, "", 6).reason == StaleReason::cursor_ahead);
  const Page page = reader.read({kRuns, "", 5, 5, std::nullopt, 100});
  CHECK_FALSE(page.stale.has_value());
  CHECK(page.events.empty());
}

TEST_CASE("a read whose cursor a purge overtook reports stale instead of skipping") {
  TestDatabase db;
  write_runs(db, 10);
  auto conn = db.connect();
  Reader reader(*conn);
  purge_through(db, 6);  // between a reader's check and its read
  const Page page = reader.read({kRuns, "", 3, 10, std::nullopt, 100});
  REQUIRE(page.stale.has_value());
  CHECK(page.stale->reason == StaleReason::retention_floor_breach);
  CHECK(page.stale->position.purged_through == 6);
  CHECK(page.events.empty());
  const Page ok = reader.read({kRuns, "", 6, 10, std::nullopt, 2});
  CHECK(ok.through == 8);
  REQUIRE(ok.events.size() == 2);
  CHECK(ok.events[0].watermark == 7);
}

TEST_CASE("tail prints events in watermark order as NDJSON, filtered by scope, limited") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  DocWrite a = upsert("a", R"({"n":1})");
  a.scope = "org:1";
  DocWrite b = upsert("b", R"({"n":2})");
  b.scope = "org:2";
  sink->apply(batch_of({a, b, remove_doc("a")}));
  const std::string epoch = epoch_of(db);
  const auto r =
      run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0", "--format", "ndjson"});
  CHECK(r.exit_code == 0);
  const auto events = lines(r.out);
  REQUIRE(events.size() == 3);
  CHECK(
      events[0] ==
      json::parse(
          R"({"topic":"runtime.run_summaries","epoch":")" + epoch +
          R"(","watermark":1,"doc_key":"run_summary:a","doc_version":1,"op":"upsert","scope":"org:1","payload_hash":")" +
          to_hex(canonicalize(R"({"n":1})").sha256) + R"(","payload":{"n":1}})"));
  CHECK(events[2]["op"] == "delete");
  CHECK(events[2]["payload"].is_null());
  CHECK(events[2]["doc_version"] == 2);

  const auto scoped = run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0",
                                  "--format", "ndjson", "--scope", "org:2"});
  REQUIRE(lines(scoped.out).size() == 1);
  CHECK(lines(scoped.out)[0]["doc_key"] == "run_summary:b");

  const auto limited = run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "1",
                                   "--format", "ndjson", "--limit", "1"});
  REQUIRE(lines(limited.out).size() == 1);
  CHECK(lines(limited.out)[0]["watermark"] == 2);

  // Without --after, only new events: none.
  const auto fresh = run_oasync({"--database-url", db.url(), "tail", kRuns, "--format", "ndjson"});
  CHECK(fresh.exit_code == 0);
  CHECK(fresh.out.empty());
}

TEST_CASE(
    "snapshot and tail with --scope '' read the unscoped docs only, without --scope every scope") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  DocWrite a = upsert("a", R"({"n":1})");
  a.scope = "org:1";
  DocWrite d = upsert("d", R"({"n":4})");
  d.scope = "org:2";
  sink->apply(batch_of({a, upsert("b", R"({"n":2})"), upsert("c", R"({"n":3})"), d}));
  const auto keys = [](const std::string& out, std::size_t skip) {
    std::vector<std::string> found;
    const auto all = lines(out);
    for (std::size_t i = skip; i < all.size(); ++i) found.push_back(all[i]["doc_key"]);
    return found;
  };
  const std::vector<std::string> unscoped{"run_summary:b", "run_summary:c"};
  const std::vector<std::string> every{"run_summary:a", "run_summary:b", "run_summary:c",
                                       "run_summary:d"};

  const auto snap = run_oasync({"--database-url", db.url(), "snapshot", kRuns, "--scope", ""});
  CHECK(snap.exit_code == 0);
  CHECK(keys(snap.out, 1) == unscoped);  // after the header
  const auto tail = run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0",
                                "--format", "ndjson", "--scope", ""});
  CHECK(tail.exit_code == 0);
  CHECK(keys(tail.out, 0) == unscoped);

  const auto all_snap = run_oasync({"--database-url", db.url(), "snapshot", kRuns});
  CHECK(keys(all_snap.out, 1) == every);
  const auto all_tail =
      run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0", "--format", "ndjson"});
  CHECK(keys(all_tail.out, 0) == every);
}

TEST_CASE("tail --format ndjson quotes keys and scopes exactly, escapes and all") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  const std::vector<std::string> ids = {"plain",     "q\"uote",     "back\\slash",
                                        "tab\there", "nl\nand\x01", "caf\u00e9 \u20ac \U0001F600"};
  Batch b;
  for (const std::string& id : ids) {
    DocWrite w = upsert(id, "{}");
    w.scope = "org:" + id;
    b.writes.push_back(w);
  }
  sink->apply(b);
  const auto r =
      run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0", "--format", "ndjson"});
  REQUIRE(r.exit_code == 0);
  const auto events = lines(r.out);
  REQUIRE(events.size() == ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    CHECK(events[i]["doc_key"] == "run_summary:" + ids[i]);
    CHECK(events[i]["scope"] == "org:" + ids[i]);
  }
  // Formatted by PostgreSQL (to_json): plain text verbatim, the rest escaped.
  CHECK(r.out.find(R"("doc_key":"run_summary:plain","doc_version":1)") != std::string::npos);
  CHECK(r.out.find(R"("doc_key":"run_summary:q\"uote")") != std::string::npos);
  CHECK(r.out.find(R"("doc_key":"run_summary:nl\nand\u0001")") != std::string::npos);
  CHECK(r.out.find("\"doc_key\":\"run_summary:caf\u00e9 \u20ac \U0001F600\"") != std::string::npos);
}

TEST_CASE("tail of a stale cursor prints the Error envelope and exits 3") {
  TestDatabase db;
  write_runs(db, 10);
  purge_through(db, 4);
  const std::string epoch = epoch_of(db);
  struct Case {
    std::vector<std::string> args;
    std::string reason;
    std::int64_t cursor;
  };
  const Case cases[] = {
      {{"--after", "3"}, "retention_floor_breach", 3},
      {{"--after", "11"}, "cursor_ahead", 11},
      {{"--after", "5", "--epoch", "00000000-0000-0000-0000-000000000000"}, "epoch_changed", 5},
      // Text that is not a UUID is some other epoch's cursor, not a usage error.
      {{"--after", "5", "--epoch", "not-a-uuid"}, "epoch_changed", 5},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"--database-url", db.url(), "tail", kRuns, "--format", "ndjson"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const auto r = run_oasync(args);
    CAPTURE(c.reason);
    CHECK(r.exit_code == 3);
    const auto out = lines(r.out);
    REQUIRE(out.size() == 1);
    CHECK(out[0]["error"]["code"] == "stale_cursor");
    CHECK(out[0]["error"]["stale"]["reason"] == c.reason);
    CHECK(out[0]["error"]["stale"]["floor"] == 4);
    CHECK(out[0]["error"]["stale"]["head"] == 10);
    CHECK(out[0]["error"]["stale"]["epoch"] == epoch);
    CHECK(out[0]["error"]["stale"]["cursor_watermark"] == c.cursor);
    CHECK(r.err.find("is stale (" + c.reason + ")") != std::string::npos);
  }
  CHECK(run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "4"}).exit_code == 0);
  const auto unknown = run_oasync({"--database-url", db.url(), "tail", "runtime.nope"});
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.err == "oasync: error: topic \"runtime.nope\" is not registered\n");
}

TEST_CASE("tail --format proto decodes with protoc --decode against the project's protos") {
  TestDatabase db;
  write_runs(db, 1);
  const auto r =
      run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0", "--format", "proto"});
  REQUIRE(r.exit_code == 0);
  // One length-delimited message: strip the varint length and decode the rest.
  REQUIRE(r.out.size() > 2);
  REQUIRE(static_cast<unsigned char>(r.out[0]) < 0x80);
  CHECK(static_cast<std::size_t>(r.out[0]) == r.out.size() - 1);
  const auto decoded =
      run_process({"protoc", "-I" + source_dir() + "/proto",
                   "--decode=openagents.sync.v1.ServerMessage", "openagents/sync/v1/sync.proto"},
                  r.out.substr(1));
  INFO(decoded.err);
  CHECK(decoded.exit_code == 0);
  CHECK(decoded.out.find(
            "update {\n  topic: \"runtime.run_summaries\"\n  doc_key: \"run_summary:0\"\n  "
            "doc_version: 1\n  payload: \"{\\\"i\\\":0}\"\n  watermark: 1\n  epoch: \"" +
            epoch_of(db) + "\"\n  op: OP_UPSERT\n  payload_hash: ") == 0);
}

TEST_CASE("tail --follow with heartbeats sees new commits") {
  TestDatabase db;
  Child tail({oasync_binary(), "--database-url", db.url(), "tail", kRuns, "--follow", "--format",
              "ndjson", "--heartbeat", "0.2"});
  std::string line;
  REQUIRE(tail.read_line(line, 10000));
  CHECK(json::parse(line)["heartbeat"]["topics"][0]["head"] == 0);
  write_runs(db, 3);
  std::vector<std::int64_t> seen;
  while (seen.size() < 3 && tail.read_line(line, 10000)) {
    const auto j = json::parse(line);
    if (j.contains("watermark")) seen.push_back(j["watermark"]);
  }
  CHECK(seen == std::vector<std::int64_t>{1, 2, 3});
  // After a reset, the follower's cursor is stale: it says so and exits 3.
  REQUIRE(run_oasync({"--database-url", db.url(), "topics", "reset-epoch", kRuns}).exit_code == 0);
  write_runs(db, 1, 7, 3);
  bool stale = false;
  while (tail.read_line(line, 10000)) {
    const auto j = json::parse(line);
    if (j.contains("error")) {
      CHECK(j["error"]["stale"]["reason"] == "epoch_changed");
      stale = true;
      break;
    }
  }
  CHECK(stale);
  CHECK(tail.wait() == 3);
}

TEST_CASE("a following tail killed at random points and resumed yields exactly the journal") {
  TestDatabase db;
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    auto sink = Sink::open(db.url());
    for (int i = 0; i < 300; ++i) {
      sink->apply(batch_of({upsert(std::to_string(i % 11), R"({"i":)" + std::to_string(i) + "}")}));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    writing = false;
  });
  std::mt19937 rng(7);
  std::vector<std::int64_t> all;
  std::int64_t last = 0;
  int restarts = 0;
  while (writing ||
         last < std::stoll(db.scalar(
                    "SELECT head FROM oasync.topics WHERE topic = 'runtime.run_summaries'"))) {
    Child tail({oasync_binary(), "--database-url", db.url(), "tail", kRuns, "--follow", "--after",
                std::to_string(last), "--format", "ndjson", "--poll-ms", "50"});
    const int take = 5 + static_cast<int>(rng() % 40);
    std::string line;
    for (int i = 0; i < take && tail.read_line(line, 3000); ++i) {
      const auto j = json::parse(line);
      all.push_back(j["watermark"]);
      last = j["watermark"];
    }
    tail.kill(SIGKILL);
    tail.wait();
    ++restarts;
  }
  writer.join();
  CHECK(restarts > 3);
  REQUIRE(all.size() == 300);
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i] == static_cast<std::int64_t>(i + 1));
}

TEST_CASE("snapshot then tail from its head is exact under concurrent writes") {
  TestDatabase db;
  write_runs(db, 200, 50);
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    auto sink = Sink::open(db.url());
    for (int i = 0; i < 200; ++i) {
      DocWrite w = upsert(std::to_string(i % 60), R"({"later":)" + std::to_string(i) + "}");
      sink->apply(i % 17 == 0 ? batch_of({remove_doc(std::to_string(i % 60))}) : batch_of({w}));
    }
    writing = false;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto snap = run_oasync({"--database-url", db.url(), "snapshot", kRuns, "--page-size", "7"});
  REQUIRE(snap.exit_code == 0);
  writer.join();
  const auto snapshot = lines(snap.out);
  REQUIRE(snapshot.size() >= 1);
  const auto header = snapshot[0]["snapshot"];
  std::map<std::string, json> state;
  for (std::size_t i = 1; i < snapshot.size(); ++i) state[snapshot[i]["doc_key"]] = snapshot[i];
  const auto tail = run_oasync({"--database-url", db.url(), "tail", kRuns, "--after",
                                std::to_string(header["head"].get<std::int64_t>()), "--epoch",
                                header["epoch"], "--format", "ndjson"});
  REQUIRE(tail.exit_code == 0);
  std::int64_t expected = header["head"].get<std::int64_t>() + 1;
  for (const auto& e : lines(tail.out)) {
    CHECK(e["watermark"] == expected++);  // nothing missed, nothing repeated
    if (e["op"] == "delete") {
      state.erase(e["doc_key"]);
    } else {
      CHECK((!state.count(e["doc_key"]) ||
             state[e["doc_key"]]["doc_version"] == e["doc_version"].get<int>() - 1));
      state[e["doc_key"]] = {{"payload", e["payload"]}, {"doc_version", e["doc_version"]}};
    }
  }
  // Snapshot + tail rebuilt exactly the live docs.
  auto conn = db.connect();
  pqxx::nontransaction tx(*conn);
  const auto rows =
      tx.exec("SELECT doc_key, doc_version, payload::text FROM oasync.docs WHERE NOT deleted");
  CHECK(rows.size() == state.size());
  for (const auto& row : rows) {
    const auto key = row[0].as<std::string>();
    REQUIRE(state.count(key));
    CHECK(state[key]["doc_version"] == row[1].as<int>());
    CHECK(state[key]["payload"] == json::parse(row[2].as<std::string>()));
  }
}

TEST_CASE("snapshot --since is a delta with tombstones: below the delta floor it exits 3") {
  TestDatabase db;
  write_runs(db, 5, 5);  // docs 0..4 at watermarks 1..5
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({remove_doc("1"), upsert("2", R"({"x":1})")}));  // 6, 7
  const auto delta = run_oasync({"--database-url", db.url(), "snapshot", kRuns, "--since", "5"});
  REQUIRE(delta.exit_code == 0);
  const auto out = lines(delta.out);
  REQUIRE(out.size() == 3);
  CHECK(out[0]["snapshot"]["since"] == 5);
  CHECK(out[0]["snapshot"]["head"] == 7);
  CHECK(out[1]["doc_key"] == "run_summary:1");
  CHECK(out[1]["deleted"] == true);
  CHECK(out[2]["doc_key"] == "run_summary:2");
  const auto full = run_oasync({"--database-url", db.url(), "snapshot", kRuns});
  CHECK(lines(full.out).size() == 1 + 4);  // tombstones are not in a full snapshot
  db.scalar("UPDATE oasync.topics SET delta_floor = 6 WHERE topic = 'runtime.run_summaries'");
  const auto breach = run_oasync({"--database-url", db.url(), "snapshot", kRuns, "--since", "5"});
  CHECK(breach.exit_code == 3);
  CHECK(lines(breach.out).at(0)["error"]["stale"]["reason"] == "retention_floor_breach");
}

TEST_CASE("doc get prints the current doc: an unknown key exits 1") {
  TestDatabase db;
  write_runs(db, 3, 2);
  const auto r = run_oasync({"--database-url", db.url(), "doc", "get", "run_summary:0"});
  CHECK(r.exit_code == 0);
  const auto doc = json::parse(r.out);
  CHECK(doc["topic"] == kRuns);
  CHECK(doc["doc_version"] == 2);
  CHECK(doc["last_watermark"] == 3);
  CHECK(doc["deleted"] == false);
  CHECK(doc["payload"] == json::parse(R"({"i":2})"));
  CHECK(doc["payload_hash"] == to_hex(canonicalize(R"({"i":2})").sha256));
  const auto missing = run_oasync({"--database-url", db.url(), "doc", "get", "run_summary:nope"});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err == "oasync: error: no doc with key \"run_summary:nope\"\n");
}

TEST_CASE("doc get: a key in two topics asks for --topic, get_doc returns both with their epochs") {
  TestDatabase db;
  TempFile yaml(
      "topics:\n"
      "  - name: a.runs\n    doc_key_prefix: \"run:\"\n    payload_mode: inline\n"
      "  - name: b.runs\n    doc_key_prefix: \"run:\"\n    payload_mode: pointer\n");
  REQUIRE(run_oasync({"--database-url", db.url(), "topics", "apply", yaml.path}).exit_code == 0);
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("1", R"({"in":"a"})", std::nullopt, "a.runs", "run:"),
                        upsert("1", R"({"in":"b"})", std::nullopt, "b.runs", "run:")}));
  const auto both = run_oasync({"--database-url", db.url(), "doc", "get", "run:1"});
  CHECK(both.exit_code == 2);  // a usage error: the command needs --topic
  CHECK(both.err ==
        "oasync: error: doc key \"run:1\" exists in topics \"a.runs\" and \"b.runs\"; pass "
        "--topic\n");
  const auto b =
      run_oasync({"--database-url", db.url(), "doc", "get", "run:1", "--topic", "b.runs"});
  REQUIRE(b.exit_code == 0);
  CHECK(json::parse(b.out)["payload"] == json::parse(R"({"in":"b"})"));
  // The SQL function a delivery service calls: one row per topic, with the epoch.
  CHECK(db.scalar("SELECT string_agg(g.topic || '=' || (g.epoch = t.epoch)::text, ',' ORDER BY "
                  "g.topic) FROM oasync.get_doc('run:1') g JOIN oasync.topics t USING (topic)") ==
        "a.runs=true,b.runs=true");
  CHECK(db.scalar("SELECT count(*) FROM oasync.get_doc('run:1', 'a.runs')") == "1");
  CHECK(db.scalar("SELECT count(*) FROM oasync.get_doc('run:2')") == "0");
}

TEST_CASE("a 1,000,000-event backlog tails with bounded memory") {
  TestDatabase db;
  db.scalar(
      "WITH e AS (INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op, "
      "payload, payload_hash) SELECT 'runtime.run_summaries', g, 'run_summary:' || (g % 100000), "
      "g / 100000 + 1, 'org:1', 'upsert', json_build_object('run_id', g, 'status', 'running', "
      "'steps', g % 13, 'note', repeat('x', 200)), sha256(g::text::bytea) FROM "
      "generate_series(1, 1000000) g RETURNING 1) "
      "UPDATE oasync.topics SET head = 1000000 WHERE topic = 'runtime.run_summaries'");
  const auto r =
      run_process({"/bin/sh", "-c",
                   "exec \"$0\" --database-url \"$1\" tail runtime.run_summaries --after 0 "
                   "--format ndjson > /dev/null",
                   oasync_binary(), db.url()});
  CHECK(r.exit_code == 0);
  struct rusage usage {};
  // An upper bound: a spawned child also counts this test's RSS at the spawn.
  getrusage(RUSAGE_CHILDREN, &usage);
  MESSAGE("peak RSS of the tail process: " << usage.ru_maxrss / 1024 << " MiB");
  CHECK(usage.ru_maxrss < 128 * 1024);  // KiB; generous: a whole result in memory needs ~400 MiB
}

TEST_CASE("read_events refuses to read above the head: a cursor moved there would skip events") {
  TestDatabase db;
  write_runs(db, 5);
  try {
    db.scalar("SELECT count(*) FROM oasync.read_events('runtime.run_summaries', NULL, 0, 8)");
    FAIL("a read through 8 above head 5 was answered");
  } catch (const pqxx::sql_error& e) {
    CHECK(e.sqlstate() == "OA416");
    CHECK(std::string(e.what()).find("through 8 is above its head 5") != std::string::npos);
  }
  CHECK(db.scalar("SELECT count(*) FROM oasync.read_events('runtime.run_summaries', NULL, 0, 5)") ==
        "5");
  auto conn = db.connect();
  Reader reader(*conn);
  CHECK_THROWS_AS(reader.read({kRuns, "", 0, 6, std::nullopt, 100}), Error);
  CHECK(reader.read({kRuns, "", 0, 5, std::nullopt, 100}).events.size() == 5);
}

TEST_CASE("a payload-mode change with history: every read stays right across it") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  const auto worker = [](const std::string& id, const std::string& payload) {
    return upsert(id, payload, std::nullopt, kWorkerEvents, "codex_worker_event:");
  };
  sink->apply(batch_of({worker("1", R"({"v":1})"), worker("2", R"({"v":1})")}));  // pointer
  // Switch the topic to inline while those events are retained.
  db.scalar(
      "UPDATE oasync.topics SET payload_mode = 'inline', config_revision = "
      "nextval('oasync.config_revisions') WHERE topic = 'runtime.codex_worker_events'");
  sink->apply(batch_of({worker("1", R"({"v":2})")}));
  const auto tail = run_oasync(
      {"--database-url", db.url(), "tail", kWorkerEvents, "--after", "0", "--format", "ndjson"});
  REQUIRE(tail.exit_code == 0);
  const auto out = lines(tail.out);
  REQUIRE(out.size() == 3);
  // The pointer-era events get the doc's current payload, fetched; the inline
  // one carries its own.
  CHECK(out[0]["payload"] == json::parse(R"({"v":2})"));
  CHECK(out[0]["payload_fetched"] == true);
  CHECK(out[1]["payload"] == json::parse(R"({"v":1})"));
  CHECK(out[2]["payload"] == json::parse(R"({"v":2})"));
  CHECK_FALSE(out[2].contains("payload_fetched"));
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}

TEST_CASE("a scope move: the old scope sees the doc go, the new one sees it come, nothing leaks") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  const auto scoped = [](DocWrite w, const std::string& scope) {
    w.scope = scope;
    return w;
  };
  const auto worker = [](const std::string& id, const std::string& payload) {
    return upsert(id, payload, std::nullopt, kWorkerEvents, "codex_worker_event:");
  };
  sink->apply(batch_of({scoped(upsert("a", R"({"secret":"A"})"), "org:A"),
                        scoped(worker("w", R"({"secret":"A"})"), "org:A")}));
  sink->apply(batch_of({scoped(upsert("a", R"({"secret":"B"})"), "org:B"),
                        scoped(worker("w", R"({"secret":"B"})"), "org:B")}));
  for (const std::string topic : {kRuns, kWorkerEvents}) {
    CAPTURE(topic);
    const auto as_a = run_oasync({"--database-url", db.url(), "tail", topic, "--after", "0",
                                  "--format", "ndjson", "--scope", "org:A"});
    REQUIRE(as_a.exit_code == 0);
    const auto a = lines(as_a.out);
    REQUIRE(a.size() == 2);
    CHECK(a[0]["op"] == "upsert");
    CHECK(a[1]["op"] == "delete");
    CHECK(a[1]["watermark"] == 2);
    CHECK(a[1]["scope"] == "org:A");
    CHECK(a[1]["payload"].is_null());
    CHECK(as_a.out.find("secret\":\"B") == std::string::npos);
    CHECK(as_a.out.find("org:B") == std::string::npos);
    const auto as_b = run_oasync({"--database-url", db.url(), "tail", topic, "--after", "0",
                                  "--format", "ndjson", "--scope", "org:B"});
    const auto b = lines(as_b.out);
    REQUIRE(b.size() == 1);
    CHECK(b[0]["op"] == "upsert");
    CHECK(b[0]["payload"] == json::parse(R"({"secret":"B"})"));
    // A's full snapshot and A's delta since 1 agree with A's journal.
    const auto full =
        run_oasync({"--database-url", db.url(), "snapshot", topic, "--scope", "org:A"});
    CHECK(lines(full.out).size() == 1);  // the header only
    const auto delta = run_oasync(
        {"--database-url", db.url(), "snapshot", topic, "--scope", "org:A", "--since", "1"});
    const auto d = lines(delta.out);
    REQUIRE(d.size() == 2);
    CHECK(d[1]["deleted"] == true);
    CHECK(d[1]["scope"] == "org:A");
    CHECK(d[1]["payload"].is_null());
  }
  // A pointer event of A, read after the doc moved to B, carries no payload.
  const auto first = run_oasync({"--database-url", db.url(), "tail", kWorkerEvents, "--after", "0",
                                 "--limit", "1", "--format", "ndjson", "--scope", "org:A"});
  CHECK(lines(first.out).at(0)["payload"].is_null());
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}

TEST_CASE("per scope, replay from any cursor, snapshot, and delta resync agree (random moves)") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  auto conn = db.connect();
  Reader reader(*conn);
  std::mt19937 rng(20261126);
  const std::vector<std::string> scopes{"org:1", "org:2", "org:3", ""};
  using View = std::map<std::string, std::string>;  // doc_key -> payload
  // S's view after replaying (after, head] on top of `view`.
  const auto replay = [&](const std::string& topic, const std::string& scope, View view,
                          std::int64_t after, std::int64_t head) {
    while (after < head) {
      const Page page = reader.read({topic, "", after, head, scope, 7});
      REQUIRE_FALSE(page.stale.has_value());
      for (const Event& e : page.events) {
        CHECK(e.scope == scope);
        if (e.op == Op::delete_) {
          view.erase(e.doc_key);
        } else {
          view[e.doc_key] = e.payload;
        }
      }
      after = page.through;
    }
    return view;
  };
  const auto snapshot = [&](const std::string& topic, const std::string& scope,
                            std::optional<std::int64_t> since, View view, std::int64_t* head) {
    const StaleReason reason = reader.snapshot(
        topic, scope, since, 5, [&](const Reader::SnapshotHeader& h) { *head = h.position.head; },
        [&](const Doc& d) {
          if (d.deleted) {
            view.erase(d.doc_key);
          } else {
            view[d.doc_key] = d.payload;
          }
        });
    REQUIRE(reason == StaleReason::none);
    return view;
  };
  for (const auto& [topic, prefix] : {std::pair<std::string, std::string>{kRuns, "run_summary:"},
                                      {kWorkerEvents, "codex_worker_event:"}}) {
    CAPTURE(topic);
    std::map<std::string, std::map<std::int64_t, View>> views;  // scope -> head -> view
    for (int round = 0; round < 12; ++round) {
      Batch b;
      for (int i = 0; i < 6; ++i) {
        DocWrite w =
            upsert(std::to_string(rng() % 8), fmt::format(R"({{"r":{},"i":{}}})", round, i),
                   std::nullopt, topic, prefix);
        w.scope = scopes[rng() % scopes.size()];
        if (rng() % 5 == 0) w.op = Op::delete_;
        b.writes.push_back(w);
      }
      sink->apply(b);
      for (const std::string& scope : scopes) {
        std::int64_t head = 0;
        const View now = snapshot(topic, scope, std::nullopt, {}, &head);
        // From the beginning.
        CHECK(replay(topic, scope, {}, 0, head) == now);
        // From every earlier point a client of this scope stood at.
        for (const auto& [at, view] : views[scope]) {
          CAPTURE(at);
          CHECK(replay(topic, scope, view, at, head) == now);
          std::int64_t delta_head = 0;
          CHECK(snapshot(topic, scope, at, view, &delta_head) == now);
        }
        views[scope][head] = now;
      }
    }
  }
}
