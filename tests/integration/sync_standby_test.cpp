// Synchronous replication, which the whole test cluster shares: these cases
// run alone (RUN_SERIAL). A COMMIT that waits for a synchronous standby that
// never answers is the hardest lost commit: the transaction is committed
// locally, yet it stays "in progress" for as long as its backend waits.
#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <thread>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "cut_proxy.hpp"
#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "replica.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

// Sets synchronous_standby_names for the cluster while it lives.
class SyncStandbys {
 public:
  explicit SyncStandbys(const std::string& names) { set(names); }
  ~SyncStandbys() {
    try {
      set("");
    } catch (...) {
      // The cluster is thrown away after the suite anyway.
    }
  }
  SyncStandbys(const SyncStandbys&) = delete;
  SyncStandbys& operator=(const SyncStandbys&) = delete;

 private:
  static void set(const std::string& names) {
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("SET synchronous_commit = local");
    tx.exec("ALTER SYSTEM SET synchronous_standby_names = " + tx.quote(names));
    tx.exec("SELECT pg_reload_conf()");
    // The reload reaches every backend at its next command; wait until the
    // setting is what we asked for.
    for (int i = 0; i < 200; ++i) {
      if (tx.exec1("SELECT current_setting('synchronous_standby_names')")[0].as<std::string>() ==
          names) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
};

// Waits until a backend of `db` waits for synchronous replication; its pid.
int wait_for_syncrep(const TestDatabase& db) {
  pqxx::connection admin(admin_url());
  for (int i = 0; i < 1000; ++i) {
    pqxx::nontransaction tx(admin);
    const auto r = tx.exec_params(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'SyncRep'",
        db.name());
    if (!r.empty()) return r[0][0].as<int>();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("no backend waited for synchronous replication");
  return 0;
}

int events_of(const TestDatabase& db, const std::string& key) {
  return std::stoi(db.scalar("SELECT count(*) FROM oasync.events WHERE doc_key = '" + key + "'"));
}

}  // namespace

TEST_CASE(
    "a COMMIT waiting for a synchronous standby, its backend terminated: committed, answered "
    "once") {
  TestDatabase db;
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("warm", "{}")}));
  std::future<std::vector<WriteResult>> answer;
  {
    SyncStandbys nobody("nobody");
    answer = std::async(std::launch::async,
                        [&] { return sink->apply(batch_of({upsert("s", R"({"n":1})")})); });
    const int pid = wait_for_syncrep(db);
    // The server warns "the transaction has already committed locally" and ends the session.
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec_params("SELECT pg_terminate_backend($1)", pid);
    const auto results = answer.get();
    REQUIRE(results.size() == 1);
    CHECK(results[0].outcome == Outcome::applied);
    CHECK(results[0].watermark == 2);
  }
  CHECK(events_of(db, "run_summary:s") == 1);
}

TEST_CASE(
    "a COMMIT waiting for a synchronous standby, its connection cut: the sink terminates the "
    "waiting backend and answers committed") {
  TestDatabase db;
  CutProxy proxy;
  SinkOptions options;
  options.lost_commit_timeout_ms = 20000;
  auto sink = Sink::open(proxy.url(db.name()), options);
  sink->apply(batch_of({upsert("warm", "{}")}));
  {
    SyncStandbys nobody("nobody");
    auto answer = std::async(std::launch::async,
                             [&] { return sink->apply(batch_of({upsert("p", R"({"n":1})")})); });
    wait_for_syncrep(db);
    proxy.cut_all();
    const auto results = answer.get();
    REQUIRE(results.size() == 1);
    CHECK(results[0].outcome == Outcome::applied);
    CHECK(results[0].watermark == 2);
  }
  CHECK(events_of(db, "run_summary:p") == 1);
}

TEST_CASE("synchronous_commit remote_apply with a real standby changes nothing") {
  REQUIRE(Replica::available());
  TestDatabase db;
  Replica replica;
  SyncStandbys any("*");
  {
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("ALTER DATABASE " + tx.quote_name(db.name()) +
            " SET synchronous_commit = remote_apply");
  }
  auto sink = Sink::open(db.url());
  for (int i = 0; i < 20; ++i) {
    const auto r =
        sink->apply(batch_of({upsert(std::to_string(i % 4), fmt::format(R"({{"n":{}}})", i))}));
    CHECK(r[0].watermark == i + 1);
  }
  // Applied on the standby before each commit returned.
  pqxx::connection standby(replica.url(db.name()));
  pqxx::nontransaction tx(standby);
  CHECK(tx.exec1("SELECT count(*) FROM oasync.events")[0].as<int>() == 20);
  const auto tail = run_oasync({"--database-url", db.url(), "tail", "runtime.run_summaries",
                                "--after", "0", "--limit", "20"});
  CHECK(tail.exit_code == 0);
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}
