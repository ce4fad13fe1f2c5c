// Failures in the middle of a batch: a killed sink process and a terminated
// backend leave nothing partial, and a retry is idempotent.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <thread>

#include <pqxx/pqxx>

#include "frames.hpp"
#include "journal_check.hpp"
#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

Batch big_batch(int n, const std::string& tag) {
  Batch b;
  for (int i = 0; i < n; ++i) {
    b.writes.push_back(
        upsert(std::to_string(i), R"({"tag":")" + tag + R"(","i":)" + std::to_string(i) + "}", 1));
  }
  return b;
}

// Waits until a backend of `db` other than ours runs a sink statement.
bool wait_for_active_sink(const TestDatabase& db, int timeout_ms = 20000) {
  for (int waited = 0; waited < timeout_ms; waited += 5) {
    if (db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                  "state = 'active' AND query LIKE '%oasync.docs%' AND pid <> pg_backend_pid()") !=
        "0") {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

}  // namespace

TEST_CASE("a sink process killed mid-batch leaves nothing partial: the retry is idempotent") {
  TestDatabase db;
  const Batch batch = big_batch(20000, "x");
  {
    Child sink({oasync_binary(), "--database-url", db.url(), "sink", "--stdio",
                "--max-batch-writes", "100000"});
    REQUIRE(send_batch(sink, batch));
    REQUIRE(wait_for_active_sink(db));
    sink.kill(SIGKILL);
    CHECK(sink.wait() == -SIGKILL);
  }
  // The backend notices the dead client and rolls back; wait for it to go.
  for (int i = 0; i < 400 && db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                       "current_database() AND pid <> pg_backend_pid()") != "0";
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  const std::string events = db.scalar("SELECT count(*) FROM oasync.events");
  CHECK((events == "0" || events == "20000"));
  CHECK(journal_violations(db).empty());

  Child retry({oasync_binary(), "--database-url", db.url(), "sink", "--stdio", "--max-batch-writes",
               "100000"});
  REQUIRE(send_batch(retry, batch));
  DecodedResult answer;
  REQUIRE(read_answer(retry, answer));
  REQUIRE(answer.results.size() == 20000);
  for (const auto& r : answer.results) {
    CHECK((r.outcome == (events == "0" ? Outcome::applied : Outcome::duplicate)));
  }
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "20000");
  CHECK(db.scalar("SELECT max(doc_version) FROM oasync.docs") == "1");
  CHECK(journal_violations(db).empty());
}

TEST_CASE("a terminated backend fails the batch as retryable: the retry applies it once") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  const Batch batch = big_batch(100000, "y");
  std::atomic<bool> applying{true};
  std::atomic<bool> terminated{false};
  std::thread killer([&] {
    // Terminate the sink's backend while its transaction is open.
    while (applying && !terminated) {
      terminated = db.scalar(
                       "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                       "datname = current_database() AND pid <> pg_backend_pid() AND state IN "
                       "('active', 'idle in transaction') AND query LIKE '%oasync.%'") != "0";
    }
  });
  bool failed = false;
  try {
    sink->apply(batch);
  } catch (const Error& e) {
    failed = true;
    CHECK(e.retryable() == Retryable::yes);
  }
  applying = false;
  killer.join();
  REQUIRE(terminated.load());
  CHECK(failed);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "0");
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "0");
  // The same Sink reconnects and the retry applies every write exactly once.
  const auto results = sink->apply(batch);
  CHECK(results.back().watermark == 100000);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "100000");
  CHECK(sink->apply(batch).front().outcome == Outcome::duplicate);
  CHECK(journal_violations(db).empty());
}

namespace {

// Makes `db` appear under the name `late_name` (it must have no connections),
// and back again when done, so that its destructor finds it.
struct LateDatabase {
  const TestDatabase& db;
  std::string late_name;
  bool moved = false;
  void arrive() {
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("ALTER DATABASE " + tx.quote_name(db.name()) + " RENAME TO " +
            tx.quote_name(late_name));
    moved = true;
  }
  ~LateDatabase() {
    if (!moved) return;
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = " +
            tx.quote(late_name));
    tx.exec("ALTER DATABASE " + tx.quote_name(late_name) + " RENAME TO " +
            tx.quote_name(db.name()));
  }
};

}  // namespace

TEST_CASE("a port sink started before its database answers retryable errors, then applies") {
  TestDatabase db;
  LateDatabase late{db, db.name() + "_late"};
  Child sink({oasync_binary(), "--database-url", with_dbname(admin_url(), late.late_name), "sink",
              "--stdio"});
  const Batch batch = batch_of({upsert("1", R"({"a":1})", 1)});
  REQUIRE(send_batch(sink, batch));
  DecodedResult answer;
  REQUIRE(read_answer(sink, answer));
  REQUIRE(answer.error_code.has_value());
  CHECK(*answer.error_code == "database");
  CHECK(answer.retryable);
  CHECK(answer.error_message.find("cannot connect") != std::string::npos);

  late.arrive();
  REQUIRE(send_batch(sink, batch));
  REQUIRE(read_answer(sink, answer));
  CHECK_FALSE(answer.error_code.has_value());
  REQUIRE(answer.results.size() == 1);
  CHECK(answer.results[0].outcome == Outcome::applied);
  CHECK(answer.results[0].watermark == 1);
  sink.close_stdin();
  CHECK(sink.wait() == 0);
}

TEST_CASE("tail --follow started before its database waits for it, a one-shot tail fails") {
  TestDatabase db;
  LateDatabase late{db, db.name() + "_late"};
  const std::string url = with_dbname(admin_url(), late.late_name);
  const ProcessResult once = run_oasync({"--database-url", url, "tail", kRuns, "--after", "0"});
  CHECK(once.exit_code == 1);
  CHECK(once.err.find("cannot connect") != std::string::npos);

  Child tail({oasync_binary(), "--database-url", url, "tail", kRuns, "--after", "0", "--follow",
              "--format", "ndjson"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  late.arrive();
  auto sink = Sink::open(url);
  sink->apply(batch_of({upsert("1", R"({"a":1})"), upsert("2", R"({"a":2})")}));
  std::string line;
  REQUIRE(tail.read_line(line));
  CHECK(line.find(R"("watermark":1,"doc_key":"run_summary:1")") != std::string::npos);
  REQUIRE(tail.read_line(line));
  CHECK(line.find(R"("watermark":2,"doc_key":"run_summary:2")") != std::string::npos);
  tail.kill(SIGTERM);
  tail.wait();
  CHECK(tail.stderr_text().find("reconnecting in") != std::string::npos);
}
