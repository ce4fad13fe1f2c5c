// A connection lost at each step of the sink's protocol, through a proxy
// that cuts it at a chosen message (tests/support/cut_proxy.hpp): every
// entry point answers what really happened, and nothing is applied twice.
#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <thread>

#include <pqxx/pqxx>

#include "commit_outcome.hpp"
#include "cut_proxy.hpp"
#include "frames.hpp"
#include "oasync/error.hpp"
#include "oasync/oasync.h"
#include "oasync/sink.hpp"
#include "oasync/wire.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;
using Cut = CutProxy::Cut;
using Direction = CutProxy::Direction;
using Forward = CutProxy::Forward;

namespace {

// The server's reply to COMMIT, dropped (the commit happened, its answer is lost).
Cut before_commit_reply() {
  return {Direction::to_client, 'C', "COMMIT", Forward::no, CutProxy::Action::close};
}
// Forwarded, then the connection goes: only the final sync is lost.
Cut after_commit_reply() {
  return {Direction::to_client, 'C', "COMMIT", Forward::yes, CutProxy::Action::close};
}
// Round trip 1 never reaches the server whole (its statement is parsed, or
// bound, and the rest is lost).
Cut in_round_trip_1() {
  return {Direction::to_server, '\0', "sink_read_docs", Forward::no, CutProxy::Action::close};
}
// Round trip 1 completed; round trip 2 (with its COMMIT) never arrives.
Cut between_round_trips() {
  return {Direction::to_server, '\0', "sink_lock_topics", Forward::no, CutProxy::Action::close};
}

SinkOptions quick() {
  SinkOptions o;
  o.lost_commit_timeout_ms = 20000;
  return o;
}

int events_of(const TestDatabase& db, const std::string& key) {
  return std::stoi(db.scalar("SELECT count(*) FROM oasync.events WHERE doc_key = '" + key + "'"));
}

std::string watermarks_of(const TestDatabase& db, const std::string& key) {
  return db.scalar(
      "SELECT string_agg(watermark::text || ':' || doc_version::text, ',' ORDER BY watermark) "
      "FROM oasync.events WHERE doc_key = '" +
      key + "'");
}

// A create-if-absent write and an unconditional one.
Batch two_writes(const std::string& tag) {
  DocWrite created = upsert(tag + "c", R"({"n":1})");
  created.expected_version = 0;
  return batch_of({created, upsert(tag + "u", R"({"n":2})")});
}

void check_applied_once(const TestDatabase& db, const std::string& tag,
                        const std::vector<WriteResult>& results) {
  REQUIRE(results.size() == 2);
  CHECK(results[0].outcome == Outcome::applied);
  CHECK(results[1].outcome == Outcome::applied);
  CHECK(events_of(db, "run_summary:" + tag + "c") == 1);
  CHECK(events_of(db, "run_summary:" + tag + "u") == 1);
  // The answered watermarks are the journal's.
  CHECK(watermarks_of(db, "run_summary:" + tag + "c") ==
        std::to_string(results[0].watermark) + ":1");
  CHECK(watermarks_of(db, "run_summary:" + tag + "u") ==
        std::to_string(results[1].watermark) + ":1");
}

}  // namespace

TEST_CASE("a lost COMMIT reply: the sink asks the server and answers the real outcomes, once") {
  TestDatabase db;
  CutProxy proxy;
  auto sink = Sink::open(proxy.url(db.name()), quick());
  sink->apply(batch_of({upsert("warm", "{}")}));
  proxy.arm(before_commit_reply());
  const auto results = sink->apply(two_writes("a"));
  CHECK(proxy.fired() == 1);
  check_applied_once(db, "a", results);
  // The next batch goes on, on a new connection, after the recovered ones.
  const auto next = sink->apply(batch_of({upsert("after", "{}")}));
  CHECK(next[0].watermark == results[1].watermark + 1);
}

TEST_CASE(
    "a lost COMMIT reply, and the connection that reads the watermarks back lost too: "
    "answered once, never as not applied") {
  TestDatabase db;
  CutProxy proxy;
  auto sink = Sink::open(proxy.url(db.name()), quick());
  proxy.arm(before_commit_reply());
  // The statement that reads them back (sent unprepared on a new session).
  proxy.then(
      {Direction::to_server, '\0', "k.i, e.watermark", Forward::no, CutProxy::Action::close});
  const auto results = sink->apply(two_writes("r"));
  CHECK(proxy.fired() == 2);
  check_applied_once(db, "r", results);
}

TEST_CASE(
    "settling a lost COMMIT is bounded: a network that stalls while the sink asks ends in "
    "outcome_unknown") {
  TestDatabase db;
  CutProxy proxy;
  SinkOptions options = quick();
  options.lost_commit_timeout_ms = 2000;
  auto sink = Sink::open(proxy.url(db.name()), options);
  proxy.arm(before_commit_reply());
  proxy.then({Direction::to_server, '\0', "pg_xact_status", Forward::no, CutProxy::Action::stall});
  try {
    sink->apply(two_writes("q"));
    FAIL("answered as applied");
  } catch (const Error& e) {
    CHECK(e.code() == Code::outcome_unknown);
    CHECK(std::string(e.what()).find("whether transaction") != std::string::npos);
  }
  // The stall still holds: the answer came from the bound, not from the network.
  CHECK(proxy.fired() == 2);
  proxy.release();
  CHECK(events_of(db, "run_summary:qc") == 1);
}

TEST_CASE("a Sink that owns its connection and also runs apply_within on a caller's: both go on") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  auto conn = db.connect();
  for (int i = 0; i < 3; ++i) {
    CHECK(sink->apply(batch_of({upsert("o" + std::to_string(i), "{}")}))[0].outcome ==
          Outcome::applied);
    pqxx::work tx(*conn);
    CHECK(sink->apply_within(tx, batch_of({upsert("w" + std::to_string(i), "{}")}))[0].outcome ==
          Outcome::applied);
    tx.commit();
  }
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "6");
}

TEST_CASE("a lost sync after COMMIT's reply: committed, answered without asking") {
  TestDatabase db;
  CutProxy proxy;
  auto sink = Sink::open(proxy.url(db.name()), quick());
  sink->apply(batch_of({upsert("warm", "{}")}));
  const int connections = proxy.connections();
  proxy.arm(after_commit_reply());
  const auto results = sink->apply(two_writes("b"));
  CHECK(proxy.fired() == 1);
  // Answered without a new connection: nothing was asked.
  CHECK(proxy.connections() == connections);
  check_applied_once(db, "b", results);
}

TEST_CASE("a connection lost in round trip 1 or between the round trips: not applied, retryable") {
  for (const Cut& cut : {in_round_trip_1(), between_round_trips()}) {
    CAPTURE(cut.contains);
    TestDatabase db;
    CutProxy proxy;
    auto sink = Sink::open(proxy.url(db.name()), quick());
    proxy.arm(cut);
    try {
      sink->apply(two_writes("c"));
      FAIL("the lost batch was answered as applied");
    } catch (const Error& e) {
      CHECK(e.code() == Code::database);
      CHECK(e.retryable() == Retryable::yes);
    }
    CHECK(events_of(db, "run_summary:cc") == 0);
    CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "0");
    // Sending it again applies it once.
    check_applied_once(db, "c", sink->apply(two_writes("c")));
  }
}

TEST_CASE("apply_group: a group whose COMMIT reply was lost is answered once, never re-run") {
  TestDatabase db;
  CutProxy proxy;
  auto sink = Sink::open(proxy.url(db.name()), quick());
  const Batch b1 = batch_of({upsert("g1", "{}")});
  const Batch b2 = batch_of({upsert("g2", "{}")});
  const Batch b3 = batch_of({upsert("g1", R"({"v":2})")});
  proxy.arm(before_commit_reply());
  const auto out = sink->apply_group({&b1, &b2, &b3});
  CHECK(proxy.fired() == 1);
  REQUIRE(out.size() == 3);
  for (const auto& g : out) {
    CHECK_FALSE(g.error);
    REQUIRE(g.results.size() == 1);
    CHECK(g.results[0].outcome == Outcome::applied);
  }
  CHECK(watermarks_of(db, "run_summary:g1") == "1:1,3:2");
  CHECK(watermarks_of(db, "run_summary:g2") == "2:1");
}

TEST_CASE("apply_group: a group that did not commit is split and re-run, each batch once") {
  TestDatabase db;
  CutProxy proxy;
  auto sink = Sink::open(proxy.url(db.name()), quick());
  const Batch b1 = batch_of({upsert("h1", "{}")});
  const Batch b2 = batch_of({upsert("h2", "{}")});
  proxy.arm(between_round_trips());
  const auto out = sink->apply_group({&b1, &b2});
  CHECK(proxy.fired() == 1);
  REQUIRE(out.size() == 2);
  CHECK_FALSE(out[0].error);
  CHECK_FALSE(out[1].error);
  CHECK(events_of(db, "run_summary:h1") == 1);
  CHECK(events_of(db, "run_summary:h2") == 1);
}

TEST_CASE("oasync sink --stdio and NDJSON: a lost COMMIT reply is answered with the results") {
  TestDatabase db;
  CutProxy proxy;
  SUBCASE("stdio") {
    Child sink({oasync_binary(), "--database-url", proxy.url(db.name()), "sink", "--stdio"});
    DecodedResult warm;
    REQUIRE(send_batch(sink, batch_of({upsert("warm", "{}")})));
    REQUIRE(read_answer(sink, warm));
    proxy.arm(before_commit_reply());
    // Two frames back to back: grouped or not, each is answered once.
    REQUIRE(send_batch(sink, two_writes("s")));
    REQUIRE(send_batch(sink, batch_of({upsert("s2", "{}")})));
    DecodedResult first, second;
    REQUIRE(read_answer(sink, first));
    REQUIRE(read_answer(sink, second));
    CHECK_FALSE(first.error_code);
    CHECK_FALSE(second.error_code);
    check_applied_once(db, "s", first.results);
    CHECK(events_of(db, "run_summary:s2") == 1);
    sink.close_stdin();
    CHECK(sink.wait() == 0);
  }
  SUBCASE("ndjson") {
    proxy.arm(before_commit_reply());
    const auto r = run_oasync(
        {"--database-url", proxy.url(db.name()), "sink", "--input", "-", "--results"},
        R"({"topic":"runtime.run_summaries","doc_key":"run_summary:n1","payload":{"a":1}})"
        "\n");
    CHECK(r.exit_code == 0);
    CHECK(r.out.find(R"("outcome":"applied")") != std::string::npos);
    CHECK(events_of(db, "run_summary:n1") == 1);
  }
  CHECK(proxy.fired() == 1);
}

TEST_CASE("the C ABI: a lost COMMIT reply is answered with the results") {
  TestDatabase db;
  CutProxy proxy;
  char* error = nullptr;
  oasync_sink* sink = oasync_sink_open(proxy.url(db.name()).c_str(), &error);
  REQUIRE(sink != nullptr);
  proxy.arm(before_commit_reply());
  const std::string request = encode_batch(two_writes("x"));
  std::uint8_t* response = nullptr;
  std::size_t length = 0;
  REQUIRE(oasync_sink_apply(sink, reinterpret_cast<const std::uint8_t*>(request.data()),
                            request.size(), &response, &length) == 0);
  const DecodedResult answer =
      decode_results(std::string(reinterpret_cast<const char*>(response), length));
  oasync_free(response);
  oasync_sink_close(sink);
  CHECK(proxy.fired() == 1);
  CHECK_FALSE(answer.error_code);
  check_applied_once(db, "x", answer.results);
}

TEST_CASE("a Sink on a borrowed connection: a lost COMMIT is outcome_unknown, naming the xid") {
  TestDatabase db;
  CutProxy proxy;
  auto conn = connect_as_caller(proxy.url(db.name()));
  Sink sink(*conn);
  proxy.arm(before_commit_reply());
  try {
    sink.apply(two_writes("w"));
    FAIL("a lost commit on a borrowed connection was answered");
  } catch (const Error& e) {
    CHECK(e.code() == Code::outcome_unknown);
    const std::string m = e.what();
    CHECK(m.find("cannot reconnect it") != std::string::npos);
    const auto at = m.find("pg_xact_status('");
    REQUIRE(at != std::string::npos);
    const std::string xid = m.substr(at + 16, m.find('\'', at + 16) - at - 16);
    CHECK(db.scalar("SELECT pg_xact_status('" + xid + "')") == "committed");
  }
  CHECK(events_of(db, "run_summary:wc") == 1);
}

TEST_CASE("apply_within: a connection lost during the batch loses the caller's transaction whole") {
  TestDatabase db;
  CutProxy proxy;
  {
    auto conn = connect_as_caller(proxy.url(db.name()));
    Sink sink(*conn);
    pqxx::work tx(*conn);
    tx.exec("CREATE TABLE public.mine (n int)");
    proxy.arm(between_round_trips());
    try {
      sink.apply_within(tx, two_writes("t"));
      FAIL("apply_within answered a lost round trip");
    } catch (const Error& e) {
      CHECK(e.code() == Code::database);
      CHECK(e.retryable() == Retryable::yes);
    }
    CHECK_THROWS(tx.commit());
  }
  CHECK(events_of(db, "run_summary:tc") == 0);
  CHECK(db.scalar("SELECT to_regclass('public.mine') IS NULL") == "t");
  // Lost at the caller's own COMMIT: libpqxx says the commit is in doubt.
  {
    auto conn = connect_as_caller(proxy.url(db.name()));
    Sink sink(*conn);
    pqxx::work tx(*conn);
    const auto results = sink.apply_within(tx, two_writes("t"));
    CHECK(results[0].outcome == Outcome::applied);
    proxy.arm(before_commit_reply());
    CHECK_THROWS_AS(tx.commit(), pqxx::in_doubt_error);
  }
  CHECK(events_of(db, "run_summary:tc") == 1);
}

TEST_CASE(
    "a stalled network between the round trips: the server frees the locks, the sink learns "
    "that nothing committed") {
  TestDatabase db;
  CutProxy proxy;
  SinkOptions options = quick();
  options.stalled_session_timeout_ms = 1000;
  auto stalled = Sink::open(proxy.url(db.name()), options);
  // The server has answered round trip 1: idle in transaction, holding the
  // docs' locks. (A black hole in the middle of a round trip leaves it
  // waiting for the rest instead; there the session's TCP keepalives end
  // it, which a proxy on this machine cannot show: its kernel answers them.)
  proxy.arm({Direction::to_server, '\0', "sink_lock_topics", Forward::no, CutProxy::Action::stall});
  auto first = std::async(std::launch::async, [&] { return stalled->apply(two_writes("k")); });
  while (proxy.fired() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // Another writer of the same docs waits for their locks, which the server
  // frees when it ends the idle transaction.
  auto other = Sink::open(db.url());
  const auto results = other->apply(two_writes("k"));
  CHECK(results[0].outcome == Outcome::applied);
  CHECK(results[0].doc_version == 1);
  proxy.release();
  try {
    first.get();
    FAIL("the stalled batch was answered as applied");
  } catch (const Error& e) {
    CHECK(e.code() == Code::database);
    CHECK(std::string(e.what()).find("did not commit") != std::string::npos);
  }
  CHECK(events_of(db, "run_summary:kc") == 1);
}

TEST_CASE(
    "commit status: an id from another server, another timeline or the future proves "
    "nothing") {
  TestDatabase db;
  const std::string system_id =
      db.scalar("SELECT system_identifier::text FROM pg_control_system()");
  const std::int64_t timeline = std::stoll(db.scalar("SELECT oasync.current_timeline()"));
  const std::string started = db.scalar("SELECT pg_postmaster_start_time()::text");
  const std::string committed_xid = [&] {
    auto conn = db.connect();
    pqxx::work tx(*conn);
    const std::string xid = tx.exec1("SELECT pg_current_xact_id()::text")[0].as<std::string>();
    tx.exec("CREATE TABLE public.t (n int)");
    tx.commit();
    return xid;
  }();
  const auto status = [&](internal::TransactionIdentity who) {
    return internal::find_commit_status(db.url(), who, std::chrono::milliseconds(3000));
  };
  CHECK(status({committed_xid, 1, system_id, timeline, started}).status ==
        internal::CommitStatus::committed);
  const auto other_server = status({committed_xid, 1, "1", timeline, started});
  CHECK(other_server.status == internal::CommitStatus::unknown);
  CHECK(other_server.detail.find("not server 1") != std::string::npos);
  CHECK(status({committed_xid, 1, system_id, timeline + 1, started}).status ==
        internal::CommitStatus::unknown);
  const auto future = status({"999999999999", 1, system_id, timeline, started});
  CHECK(future.status == internal::CommitStatus::unknown);
  CHECK(future.detail.find("in the future") != std::string::npos);
  const std::string aborted_xid = [&] {
    auto conn = db.connect();
    pqxx::work tx(*conn);
    const std::string xid = tx.exec1("SELECT pg_current_xact_id()::text")[0].as<std::string>();
    tx.abort();
    return xid;
  }();
  CHECK(status({aborted_xid, 1, system_id, timeline, started}).status ==
        internal::CommitStatus::aborted);
}
