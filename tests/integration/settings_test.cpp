// An operator's database settings: oasync's own sessions pin what they rely
// on, and a caller's connection that cannot work is refused with a clear
// message.
#include <doctest/doctest.h>

#include <future>
#include <thread>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

void set_default(const TestDatabase& db, const std::string& name, const std::string& value) {
  pqxx::connection admin(admin_url());
  pqxx::nontransaction tx(admin);
  tx.exec("ALTER DATABASE " + tx.quote_name(db.name()) + " SET " + name + " = " + tx.quote(value));
}

// Read over a connection of oasync's own (UTF-8 whatever the defaults).
std::string utf8_scalar(const TestDatabase& db, const std::string& sql) {
  auto conn = oasync::connect(db.url());
  pqxx::nontransaction tx(*conn);
  const auto r = tx.exec(sql);
  return r.empty() || r[0][0].is_null() ? "" : r[0][0].as<std::string>();
}

DocWrite in_scope(DocWrite w, const std::string& scope) {
  w.scope = scope;
  return w;
}

}  // namespace

TEST_CASE("client_encoding LATIN1 as the database's default: keys and scopes stay what was sent") {
  TestDatabase db;
  set_default(db, "client_encoding", "LATIN1");
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({in_scope(upsert("\u00fc", R"({"n":"\u00fc"})"), "org:\u00fc")}));
  const auto r = run_oasync({"--database-url", db.url(), "sink", "--input", "-"},
                            R"({"topic":"runtime.run_summaries","doc_key":"run_summary:é",)"
                            R"("scope":"org:é","payload":{"n":1}})"
                            "\n",
                            {{"PGCLIENTENCODING", "LATIN1"}});
  REQUIRE(r.exit_code == 0);
  CHECK(utf8_scalar(db,
                    "SELECT string_agg(doc_key || ' ' || scope, ',' ORDER BY doc_key) FROM "
                    "oasync.docs") ==
        "run_summary:\u00e9 org:\u00e9,run_summary:\u00fc org:\u00fc");
  CHECK(utf8_scalar(db, "SELECT count(*) FROM oasync.events WHERE scope = 'org:\u00fc'") == "1");
  // The CLI reads them back as they are.
  const auto got = run_oasync({"--database-url", db.url(), "doc", "get", "run_summary:\u00fc"}, {},
                              {{"PGCLIENTENCODING", "LATIN1"}});
  CHECK(got.exit_code == 0);
  CHECK(got.out.find("org:\u00fc") != std::string::npos);
  const auto verified = run_oasync({"--database-url", db.url(), "verify"});
  CHECK(verified.exit_code == 0);
}

TEST_CASE("apply_within and a borrowed connection refuse a client_encoding other than UTF8") {
  TestDatabase db;
  pqxx::connection conn(db.url());
  {
    pqxx::nontransaction set(conn);
    set.exec("SET client_encoding = 'LATIN1'");
  }
  Sink sink(conn);
  {
    pqxx::work tx(conn);
    try {
      sink.apply_within(tx, batch_of({upsert("a", "{}")}));
      FAIL("a LATIN1 connection was accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Code::invalid_argument);
      CHECK(std::string(e.what()).find("client_encoding is \"LATIN1\"") != std::string::npos);
    }
  }
  CHECK_THROWS_AS(sink.apply(batch_of({upsert("a", "{}")})), Error);
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "0");
}

TEST_CASE("apply_within refuses a transaction that is not READ COMMITTED") {
  TestDatabase db;
  auto conn = db.connect();
  Sink sink(*conn);
  pqxx::transaction<pqxx::repeatable_read> tx(*conn);
  try {
    sink.apply_within(tx, batch_of({upsert("a", "{}")}));
    FAIL("a REPEATABLE READ transaction was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Code::invalid_argument);
    CHECK(std::string(e.what()).find("needs a READ COMMITTED transaction; this one is repeatable "
                                     "read") != std::string::npos);
  }
}

TEST_CASE("the sink's transactions are READ COMMITTED whatever the database's default") {
  for (const char* level : {"repeatable read", "serializable"}) {
    CAPTURE(level);
    TestDatabase db;
    set_default(db, "default_transaction_isolation", level);
    // Two sinks on the same docs of one topic, one of them on a borrowed
    // connection whose libpqxx transaction began with the default.
    // (Its pqxx connection keeps the database's default isolation.)
    pqxx::connection borrowed_conn(db.url());
    {
      pqxx::nontransaction set(borrowed_conn);
      set.exec("SET client_encoding = 'UTF8'");
    }
    Sink borrowed(borrowed_conn);
    auto own = Sink::open(db.url());
    const auto write = [](Sink& sink, int from) {
      for (int i = 0; i < 60; ++i) {
        sink.apply(
            batch_of({upsert(std::to_string(i % 5), fmt::format(R"({{"n":{}}})", from + i))}));
      }
    };
    auto other = std::async(std::launch::async, [&] { write(borrowed, 1000); });
    write(*own, 0);
    other.get();
    CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "120");
  }
}

TEST_CASE("operator timeouts do not end oasync's work half way") {
  TestDatabase db;
  set_default(db, "lock_timeout", "10ms");
  set_default(db, "statement_timeout", "50ms");
  set_default(db, "idle_in_transaction_session_timeout", "20ms");
  set_default(db, "idle_session_timeout", "100ms");
  auto sink = Sink::open(db.url());
  sink->apply(batch_of({upsert("a", "{}")}));
  // A doc held by another transaction for longer than lock_timeout: the sink
  // waits for it.
  auto holder = db.connect();
  pqxx::work hold(*holder);
  hold.exec("SET LOCAL idle_in_transaction_session_timeout = 0");
  hold.exec("SELECT 1 FROM oasync.docs WHERE doc_key = 'run_summary:a' FOR UPDATE");
  auto waiting = std::async(std::launch::async,
                            [&] { return sink->apply(batch_of({upsert("a", R"({"n":2})")})); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  hold.commit();
  CHECK(waiting.get()[0].outcome == Outcome::applied);
  // Idle for longer than idle_session_timeout: the sink's session is still there.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(sink->apply(batch_of({upsert("a", R"({"n":3})")}))[0].doc_version == 3);
  // A Sink on a borrowed connection that keeps the database's timeouts: its
  // own transaction runs without them.
  pqxx::connection plain(db.url());
  {
    pqxx::nontransaction set(plain);
    set.exec("SET client_encoding = 'UTF8'");
  }
  Sink borrowed(plain);
  auto holder2 = db.connect();
  pqxx::work hold2(*holder2);
  hold2.exec("SELECT 1 FROM oasync.docs WHERE doc_key = 'run_summary:a' FOR UPDATE");
  auto waiting2 = std::async(std::launch::async,
                             [&] { return borrowed.apply(batch_of({upsert("a", R"({"n":4})")})); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  hold2.commit();
  CHECK(waiting2.get()[0].doc_version == 4);
  // The CLI's operations too.
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
  CHECK(run_oasync({"--database-url", db.url(), "tail", "runtime.run_summaries", "--after", "0",
                    "--limit", "3"})
            .exit_code == 0);
}

TEST_CASE(
    "a pooler's DISCARD ALL on the caller's connection: apply_within and a borrowed Sink go "
    "on") {
  TestDatabase db;
  auto conn = db.connect();
  Sink sink(*conn);
  int n = 0;
  for (const char* reset : {"DISCARD ALL", "DEALLOCATE ALL"}) {
    CAPTURE(reset);
    const auto fresh = [&] { return batch_of({upsert(std::to_string(++n), "{}")}); };
    {
      pqxx::work tx(*conn);
      sink.apply_within(tx, fresh());
      tx.commit();
    }
    {
      pqxx::nontransaction tx(*conn);
      tx.exec(reset);
      tx.exec("SET client_encoding = 'UTF8'");
    }
    {
      pqxx::work tx(*conn);
      CHECK(sink.apply_within(tx, fresh())[0].outcome == Outcome::applied);
      tx.commit();
    }
    sink.apply(fresh());
    {
      pqxx::nontransaction tx(*conn);
      tx.exec(reset);
    }
    CHECK(sink.apply(fresh())[0].outcome == Outcome::applied);
  }
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "8");
}

TEST_CASE("migrate refuses a database whose server encoding is not UTF8") {
  TestDatabase db(TestDatabase::Setup::empty);
  const std::string name = db.name() + "_latin1";
  {
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + tx.quote_name(name) +
            " TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'");
  }
  const auto r = run_oasync({"--database-url", with_dbname(admin_url(), name), "migrate"});
  {
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE " + tx.quote_name(name));
  }
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("server encoding is LATIN1") != std::string::npos);
}
