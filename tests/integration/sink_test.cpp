// The sink's semantics against a real Postgres: every outcome and rejection
// reason, versions and watermarks, tombstones, payload modes, checkpoints and
// fencing, the caller's-transaction variant and the notification.
#include <doctest/doctest.h>

#include <algorithm>

#include <pqxx/pqxx>

#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"
#include "oasync/options.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

std::string events_of(const TestDatabase& db, const std::string& topic = kRuns) {
  return db.scalar(
      "SELECT string_agg(watermark || ':' || doc_key || '@' || doc_version || ':' || op, ' ' ORDER "
      "BY watermark) FROM oasync.events WHERE topic = '" +
      topic + "'");
}

}  // namespace

TEST_CASE("versions count applied changes and watermarks are dense from 1") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  auto r = sink->apply(
      batch_of({upsert("a", R"({"n":1})"), upsert("b", R"({"n":1})"), upsert("a", R"({"n":2})")}));
  REQUIRE(r.size() == 3);
  CHECK(r[0].outcome == Outcome::applied);
  CHECK(r[0].doc_version == 1);
  CHECK(r[0].watermark == 1);
  CHECK(r[1].doc_version == 1);
  CHECK(r[1].watermark == 2);
  CHECK(r[2].doc_version == 2);
  CHECK(r[2].watermark == 3);
  r = sink->apply(batch_of({upsert("a", R"({"n":3})")}));
  CHECK(r[0].doc_version == 3);
  CHECK(r[0].watermark == 4);
  CHECK(events_of(db) ==
        "1:run_summary:a@1:upsert 2:run_summary:b@1:upsert 3:run_summary:a@2:upsert "
        "4:run_summary:a@3:upsert");
  CHECK(db.scalar("SELECT head FROM oasync.topics WHERE topic = 'runtime.run_summaries'") == "4");
  CHECK(db.scalar("SELECT doc_version || ' ' || last_watermark || ' ' || payload::text FROM "
                  "oasync.docs WHERE doc_key = 'run_summary:a'") == R"(3 4 {"n":3})");
  // Each event carries the payload it wrote, not the doc's final one.
  CHECK(db.scalar("SELECT payload::text FROM oasync.events WHERE watermark = 3") == R"({"n":2})");
  CHECK(db.scalar("SELECT encode(payload_hash, 'hex') FROM oasync.events WHERE watermark = 4") ==
        to_hex(canonicalize(R"({"n":3})").sha256));
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs WHERE doc_version = 0") == "0");
}

TEST_CASE("payloads are stored canonical: an equal payload is unchanged, no event") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  auto r = sink->apply(batch_of({upsert("a", R"({ "b": 1, "a": [1, 2] })")}));
  CHECK(r[0].outcome == Outcome::applied);
  CHECK(db.scalar("SELECT payload::text FROM oasync.docs") == R"({"a":[1,2],"b":1})");
  r = sink->apply(batch_of({upsert("a", R"({"a":[1,2],"b":1})")}));
  CHECK(r[0].outcome == Outcome::unchanged);
  CHECK(r[0].doc_version == 1);
  CHECK(r[0].watermark == 0);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "1");
  // A scope change with the same payload is a change.
  DocWrite moved = upsert("a", R"({"a":[1,2],"b":1})");
  moved.scope = "org:7";
  r = sink->apply(batch_of({moved}));
  CHECK(r[0].outcome == Outcome::applied);
  CHECK(db.scalar("SELECT scope FROM oasync.events WHERE watermark = 2") == "org:7");
}

TEST_CASE("a source_seq at or below the stored one is a duplicate: re-sending changes nothing") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  const Batch batch = batch_of({upsert("a", R"({"n":1})", 5), upsert("b", R"({"n":1})", 9)});
  auto r = sink->apply(batch);
  CHECK(r[0].outcome == Outcome::applied);
  r = sink->apply(batch);
  CHECK(r[0].outcome == Outcome::duplicate);
  CHECK(r[1].outcome == Outcome::duplicate);
  CHECK(r[0].doc_version == 1);
  CHECK(r[0].detail == "source_seq 5 is at or below the stored 5 of stream \"run:a\"");
  r = sink->apply(batch_of({upsert("a", R"({"n":0})", 4), upsert("a", R"({"n":6})", 6)}));
  CHECK(r[0].outcome == Outcome::duplicate);
  CHECK(r[1].outcome == Outcome::applied);
  CHECK(r[1].doc_version == 2);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "3");
  CHECK(db.scalar("SELECT source_seq FROM oasync.docs WHERE doc_key = 'run_summary:a'") == "6");
}

TEST_CASE("expected_version is compare-and-set: 0 means create only") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  DocWrite create = upsert("a", R"({"n":1})");
  create.expected_version = 0;
  CHECK(sink->apply(batch_of({create}))[0].outcome == Outcome::applied);
  auto r = sink->apply(batch_of({create}));
  CHECK(r[0].outcome == Outcome::conflict);
  CHECK(r[0].doc_version == 1);
  CHECK(r[0].detail == "expected version 0, doc \"run_summary:a\" is at version 1");
  DocWrite next = upsert("a", R"({"n":2})");
  next.expected_version = 1;
  CHECK(sink->apply(batch_of({next}))[0].outcome == Outcome::applied);
  CHECK(sink->apply(batch_of({next}))[0].outcome == Outcome::conflict);
}

TEST_CASE("every rejection reason, in a batch whose good writes still apply") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  DocWrite unregistered = upsert("a", "{}", std::nullopt, "runtime.nope", "run_summary:");
  DocWrite wrong_prefix = upsert("a", "{}", std::nullopt, kRuns, "worker:");
  DocWrite bare_prefix = upsert("", "{}");
  DocWrite empty_topic = upsert("a", "{}", std::nullopt, "");
  DocWrite long_topic = upsert("a", "{}", std::nullopt, std::string(129, 't'));
  DocWrite nul_key = upsert(std::string("a\0b", 3), "{}");
  DocWrite long_key = upsert(std::string(600, 'k'), "{}");
  DocWrite huge_key = upsert(std::string(10 << 20, 'k'), "{}");
  DocWrite long_scope = upsert("a", "{}");
  long_scope.scope = std::string(129, 's');
  DocWrite nul_scope = upsert("a", "{}");
  nul_scope.scope = std::string("org\0", 4);
  DocWrite array_payload = upsert("a", "[1,2]");
  DocWrite bad_json = upsert("a", "{\"a\":");
  DocWrite missing_payload = upsert("a", "");
  DocWrite too_large = upsert("a", "{\"x\":\"" + std::string(70000, 'x') + "\"}");
  DocWrite deep = upsert("a", "{\"x\":" + std::string(1000, '[') + std::string(1000, ']') + "}");
  DocWrite good = upsert("good", R"({"ok":true})");

  const auto r =
      sink->apply(batch_of({unregistered, wrong_prefix, bare_prefix, empty_topic, long_topic,
                            nul_key, long_key, huge_key, long_scope, nul_scope, array_payload,
                            bad_json, missing_payload, too_large, deep, good}));
  REQUIRE(r.size() == 16);
  const RejectReason expected[] = {
      RejectReason::topic_not_registered, RejectReason::key_prefix_mismatch,
      RejectReason::key_prefix_mismatch,  RejectReason::invalid_topic,
      RejectReason::invalid_topic,        RejectReason::invalid_key,
      RejectReason::invalid_key,          RejectReason::invalid_key,
      RejectReason::invalid_scope,        RejectReason::invalid_scope,
      RejectReason::payload_not_object,   RejectReason::payload_not_object,
      RejectReason::payload_not_object,   RejectReason::payload_too_large,
      RejectReason::payload_not_object};
  for (std::size_t i = 0; i < 15; ++i) {
    CAPTURE(i);
    CHECK(r[i].outcome == Outcome::rejected);
    CHECK(r[i].reason == expected[i]);
    CHECK_FALSE(r[i].detail.empty());
  }
  CHECK(r[0].detail == "topic \"runtime.nope\" is not registered");
  CHECK(r[1].detail ==
        "doc_key \"worker:a\" does not start with \"run_summary:\" followed by an id, as topic "
        "\"runtime.run_summaries\" requires");
  CHECK(r[7].detail == "doc_key must be 1..512 bytes of UTF-8 without NUL (got 10485772 bytes)");
  CHECK(r[13].detail ==
        "payload of doc \"run_summary:a\" is 70008 bytes, topic \"runtime.run_summaries\" allows "
        "65536");
  CHECK(r[14].detail.find("nesting deeper than 64 levels") != std::string::npos);
  CHECK(r[15].outcome == Outcome::applied);
  CHECK(r[15].watermark == 1);
  CHECK(events_of(db) == "1:run_summary:good@1:upsert");
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "1");
}

TEST_CASE("a delete makes a tombstone with a bumped version and a delete event") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("a", R"({"n":1})")}));
  auto r = sink->apply(batch_of({remove_doc("a")}));
  CHECK(r[0].outcome == Outcome::applied);
  CHECK(r[0].doc_version == 2);
  CHECK(db.scalar(
            "SELECT deleted || ' ' || doc_version || ' ' || (payload IS NULL) FROM oasync.docs") ==
        "true 2 true");
  CHECK(events_of(db) == "1:run_summary:a@1:upsert 2:run_summary:a@2:delete");
  // Deleting again, or deleting what never existed, changes nothing.
  r = sink->apply(batch_of({remove_doc("a"), remove_doc("never")}));
  CHECK(r[0].outcome == Outcome::unchanged);
  CHECK(r[1].outcome == Outcome::unchanged);
  CHECK(r[1].doc_version == 0);
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "1");
  // An upsert revives the tombstone as the next version.
  r = sink->apply(batch_of({upsert("a", R"({"n":1})")}));
  CHECK(r[0].outcome == Outcome::applied);
  CHECK(r[0].doc_version == 3);
  CHECK(db.scalar("SELECT deleted::text FROM oasync.docs") == "false");
}

TEST_CASE("pointer topics keep the payload out of the journal") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  const auto r = sink->apply(batch_of(
      {upsert("e1", R"({"line":"hello"})", std::nullopt, kWorkerEvents, "codex_worker_event:")}));
  CHECK(r[0].outcome == Outcome::applied);
  CHECK(db.scalar(
            "SELECT (payload IS NULL) || ' ' || encode(payload_hash, 'hex') FROM oasync.events") ==
        "true " + to_hex(canonicalize(R"({"line":"hello"})").sha256));
  CHECK(db.scalar("SELECT payload::text FROM oasync.docs") == R"({"line":"hello"})");
}

TEST_CASE("watermarks are per topic") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  const auto r = sink->apply(batch_of(
      {upsert("a", "{}"), upsert("e", "{}", std::nullopt, kWorkerEvents, "codex_worker_event:"),
       upsert("b", "{}")}));
  CHECK(r[0].watermark == 1);
  CHECK(r[1].watermark == 1);
  CHECK(r[2].watermark == 2);
}

TEST_CASE("producer checkpoints are stored with the batch, and an older epoch is fenced") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  Batch b = batch_of({upsert("a", R"({"n":1})")});
  b.checkpoint = ProducerCheckpoint{"projector", 2, 100};
  sink->apply(b);
  auto cp = sink->checkpoint("projector");
  REQUIRE(cp.has_value());
  CHECK(cp->epoch == 2);
  CHECK(cp->position == 100);
  CHECK_FALSE(sink->checkpoint("someone-else").has_value());

  Batch zombie = batch_of({upsert("a", R"({"n":99})")});
  zombie.checkpoint = ProducerCheckpoint{"projector", 1, 500};
  try {
    sink->apply(zombie);
    FAIL("a fenced batch was applied");
  } catch (const Error& e) {
    CHECK(e.retryable() == Retryable::no);
    CHECK(std::string(e.what()) ==
          "producer \"projector\" is fenced: epoch 1 is below the stored epoch");
  }
  CHECK(db.scalar("SELECT payload::text FROM oasync.docs") == R"({"n":1})");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "1");
  CHECK(sink->checkpoint("projector")->position == 100);

  Batch newer = batch_of({});
  newer.checkpoint = ProducerCheckpoint{"projector", 3, 700};
  sink->apply(newer);
  CHECK(sink->checkpoint("projector")->epoch == 3);
  CHECK(sink->checkpoint("projector")->position == 700);
}

TEST_CASE("a group isolates a fenced batch: the others commit") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  Batch first = batch_of({upsert("a", "{}")});
  first.checkpoint = ProducerCheckpoint{"p", 5, 1};
  sink->apply(first);
  Batch ok1 = batch_of({upsert("b", "{}")});
  Batch zombie = batch_of({upsert("c", "{}")});
  zombie.checkpoint = ProducerCheckpoint{"p", 4, 2};
  Batch ok2 = batch_of({upsert("d", "{}")});
  const auto results = sink->apply_group({&ok1, &zombie, &ok2});
  REQUIRE(results.size() == 3);
  CHECK_FALSE(results[0].error.has_value());
  REQUIRE(results[1].error.has_value());
  CHECK(std::string(results[1].error->what()).find("fenced") != std::string::npos);
  CHECK_FALSE(results[2].error.has_value());
  CHECK(results[0].results[0].watermark == 2);
  CHECK(results[2].results[0].watermark == 3);
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs WHERE doc_key = 'run_summary:c'") == "0");
}

TEST_CASE(
    "apply_within joins the caller's transaction: rollback leaves nothing, commit keeps all") {
  TestDatabase db;
  auto conn = db.connect();
  Sink sink(*conn);
  {
    pqxx::work tx(*conn);
    tx.exec("CREATE TABLE public.runtime_state (x int)");
    const auto r = sink.apply_within(tx, batch_of({upsert("a", "{}")}));
    CHECK(r[0].outcome == Outcome::applied);
    tx.abort();
  }
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "0");
  CHECK(db.scalar("SELECT head FROM oasync.topics WHERE topic = 'runtime.run_summaries'") == "0");
  {
    pqxx::work tx(*conn);
    tx.exec("CREATE TABLE public.runtime_state (x int)");
    tx.exec("INSERT INTO public.runtime_state VALUES (1)");
    const auto r = sink.apply_within(tx, batch_of({upsert("a", "{}")}));
    CHECK(r[0].watermark == 1);
    tx.commit();
  }
  CHECK(db.scalar("SELECT count(*) FROM public.runtime_state") == "1");
  CHECK(events_of(db) == "1:run_summary:a@1:upsert");
}

TEST_CASE("listeners are notified after commit, once per topic per transaction") {
  TestDatabase db;
  auto listener = db.connect();
  {
    pqxx::nontransaction tx(*listener);
    tx.exec(std::string("LISTEN ") + kNotifyChannel);
  }
  struct Receiver : pqxx::notification_receiver {
    using notification_receiver::notification_receiver;
    std::vector<std::string> payloads;
    void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
  } receiver(*listener, kNotifyChannel);

  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("a", "{}"), upsert("b", "{}"),
                        upsert("e", "{}", std::nullopt, kWorkerEvents, "codex_worker_event:")}));
  sink->apply(batch_of({upsert("a", "{}")}));  // unchanged: no notification
  sink->apply(batch_of({upsert("c", "{}")}));
  for (int i = 0; i < 50 && receiver.payloads.size() < 3; ++i)
    listener->await_notification(0, 100000);
  listener->get_notifs();
  std::vector<std::string> got = receiver.payloads;
  std::sort(got.begin(), got.end());
  CHECK(got == std::vector<std::string>{R"({"topic":"runtime.codex_worker_events","head":1})",
                                        R"({"topic":"runtime.run_summaries","head":2})",
                                        R"({"topic":"runtime.run_summaries","head":3})"});

  SinkOptions quiet;
  quiet.notify = Notify::off;
  auto silent = Sink::open(db.url(), quiet);
  silent->apply(batch_of({upsert("d", "{}")}));
  listener->await_notification(0, 300000);
  CHECK(receiver.payloads.size() == 3);
}

TEST_CASE("an unchanged write still advances its stream: an older resend is a duplicate") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  DocWrite b6 = upsert("a", R"({"state":"B"})", 6);
  DocWrite b8 = upsert("a", R"({"state":"B"})", 8);
  DocWrite a7 = upsert("a", R"({"state":"A"})", 7);
  CHECK(sink->apply(batch_of({b6}))[0].outcome == Outcome::applied);
  CHECK(sink->apply(batch_of({b8}))[0].outcome == Outcome::unchanged);
  CHECK(db.scalar("SELECT source_seq FROM oasync.docs") == "8");
  const auto late = sink->apply(batch_of({a7}));
  CHECK(late[0].outcome == Outcome::duplicate);
  CHECK(db.scalar("SELECT payload::text FROM oasync.docs") == R"({"state":"B"})");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "1");

  // A delete of a doc that never existed is unchanged too, and its position
  // is kept (in a version-0 row no reader sees), so an older upsert of the
  // stream that arrives later does not create the doc.
  DocWrite gone = remove_doc("x");
  gone.source_stream = "run:x";
  gone.source_seq = 5;
  CHECK(sink->apply(batch_of({gone}))[0].outcome == Outcome::unchanged);
  const auto older = sink->apply(batch_of({upsert("x", R"({"n":1})", 4)}));
  CHECK(older[0].outcome == Outcome::duplicate);
  CHECK(sink->apply(batch_of({upsert("x", R"({"n":1})", 6)}))[0].doc_version == 1);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "2");
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}

TEST_CASE("a delete keeps the doc's scope, so that scope's readers see the tombstone") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  DocWrite a = upsert("a", R"({"n":1})");
  a.scope = "org:1";
  sink->apply(batch_of({a}));
  sink->apply(batch_of({remove_doc("a")}));  // a delete written without a scope
  CHECK(db.scalar("SELECT scope || ' ' || op FROM oasync.events WHERE watermark = 2") ==
        "org:1 delete");
  CHECK(db.scalar("SELECT scope FROM oasync.docs") == "org:1");
}

TEST_CASE("a scope move is one event that records the scope left, and an exit row for it") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  DocWrite a = upsert("a", R"({"n":1})");
  a.scope = "org:A";
  sink->apply(batch_of({a}));
  a.scope = "org:B";
  const auto moved = sink->apply(batch_of({a}));  // same payload, new scope: a change
  CHECK(moved[0].outcome == Outcome::applied);
  CHECK(moved[0].doc_version == 2);
  CHECK(db.scalar("SELECT scope || ' <- ' || previous_scope FROM oasync.events WHERE watermark = "
                  "2") == "org:B <- org:A");
  CHECK(db.scalar("SELECT scope || ' ' || watermark || ' ' || doc_version FROM "
                  "oasync.scope_exits") == "org:A 2 2");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events WHERE previous_scope IS NOT NULL") == "1");
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}

TEST_CASE("a second apply_within in one transaction is refused before it locks anything") {
  TestDatabase db;
  auto conn = db.connect();
  Sink sink(*conn);
  pqxx::work tx(*conn);
  CHECK(sink.apply_within(tx, batch_of({upsert("a", "{}")}))[0].outcome == Outcome::applied);
  try {
    sink.apply_within(tx, batch_of({upsert("b", "{}")}));
    FAIL("a second apply_within was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Code::refused);
    CHECK(std::string(e.what()).find("already ran apply_within") != std::string::npos);
  }
  tx.abort();
  // A new transaction may again.
  pqxx::work next(*conn);
  CHECK(sink.apply_within(next, batch_of({upsert("b", "{}")}))[0].watermark == 1);
  next.commit();
}

TEST_CASE("a group isolates a batch that always fails with a retryable error: the others commit") {
  TestDatabase db;
  // Any write of doc "full" fails as if the disk were full (SQLSTATE 53100,
  // retryable): the group fails, and so does that batch alone, every time.
  db.scalar(R"SQL(
CREATE FUNCTION public.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'no space left' USING ERRCODE = '53100'; END $$;
CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON oasync.docs FOR EACH ROW
WHEN (NEW.doc_key = 'run_summary:full') EXECUTE FUNCTION public.disk_full();
)SQL");
  auto sink = Sink::open(db.url());
  Batch b1 = batch_of({upsert("1", "{}")}), b2 = batch_of({upsert("2", "{}")}),
        bad = batch_of({upsert("full", "{}")}), b3 = batch_of({upsert("3", "{}")}),
        b4 = batch_of({upsert("4", "{}")});
  const auto results = sink->apply_group({&b1, &b2, &bad, &b3, &b4});
  REQUIRE(results.size() == 5);
  for (std::size_t i : {0u, 1u, 3u, 4u}) {
    CAPTURE(i);
    CHECK_FALSE(results[i].error.has_value());
    CHECK(results[i].results.at(0).outcome == Outcome::applied);
  }
  REQUIRE(results[2].error.has_value());
  CHECK(results[2].error->retryable() == Retryable::yes);
  CHECK(results[2].error->sqlstate() == "53100");
  CHECK(db.scalar("SELECT string_agg(doc_key, ',' ORDER BY doc_key) FROM oasync.docs") ==
        "run_summary:1,run_summary:2,run_summary:3,run_summary:4");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "4");
}
