// Least privilege and hostile strings: what each role may do, scope security,
// and SQL-looking keys, topics and scopes that must stay plain data.
#include <doctest/doctest.h>

#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

// A login role for one test, dropped afterwards (roles are cluster-wide).
class TestRole {
 public:
  TestRole(const TestDatabase& db, const std::string& kind) : db_(db) {
    std::random_device rd;
    name_ = fmt::format("oasync_{}_{:x}", kind, rd());
    db_.scalar("CREATE ROLE " + name_ + " LOGIN");
  }
  ~TestRole() {
    try {
      db_.scalar("DROP OWNED BY " + name_);
      pqxx::connection admin(admin_url());
      pqxx::nontransaction tx(admin);
      tx.exec("DROP ROLE " + name_);
    } catch (...) {
      // A role left in a throwaway cluster is harmless.
    }
  }
  const std::string& name() const { return name_; }
  std::string url() const { return db_.url() + " user='" + name_ + "'"; }

 private:
  const TestDatabase& db_;
  std::string name_;
};

// Runs one statement as `url`; returns "" or the error's first line.
std::string attempt(const std::string& url, const std::string& sql) {
  try {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    tx.exec(sql);
    tx.commit();
    return "";
  } catch (const std::exception& e) {
    std::string m = e.what();
    return m.substr(0, m.find('\n'));
  }
}

}  // namespace

TEST_CASE(
    "grants: the writer runs the sink but cannot drop or purge; the reader reads but cannot "
    "write") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  const auto g = run_oasync(
      {"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader", reader.name()});
  REQUIRE_MESSAGE(g.exit_code == 0, g.err);

  auto sink = Sink::open(writer.url());
  CHECK(sink->apply(batch_of({upsert("a", R"({"n":1})"), upsert("b", "{}")}))[0].outcome ==
        Outcome::applied);
  CHECK(sink->apply(batch_of({remove_doc("b")}))[0].outcome == Outcome::applied);

  CHECK(attempt(writer.url(), "DROP TABLE oasync.events").find("must be owner") !=
        std::string::npos);
  CHECK(attempt(writer.url(), "TRUNCATE oasync.events").find("permission denied") !=
        std::string::npos);
  CHECK(attempt(writer.url(), "DELETE FROM oasync.events").find("permission denied") !=
        std::string::npos);
  CHECK(attempt(writer.url(), "UPDATE oasync.topics SET purged_through = 1")
            .find("permission denied") != std::string::npos);
  CHECK(attempt(writer.url(), "UPDATE oasync.topics SET epoch = gen_random_uuid()")
            .find("permission denied") != std::string::npos);
  const auto purge = run_oasync(
      {"--database-url", writer.url(), "purge", "--older-than", "1s", "--keep-last", "0"});
  CHECK(purge.exit_code == 1);
  CHECK(purge.err.find("permission denied") != std::string::npos);

  const auto tail = run_oasync({"--database-url", reader.url(), "tail", kRuns, "--after", "0",
                                "--format", "ndjson", "--consumer", "reader-1"});
  CHECK(tail.exit_code == 0);
  CHECK(std::count(tail.out.begin(), tail.out.end(), '\n') == 3);
  CHECK(run_oasync({"--database-url", reader.url(), "snapshot", kRuns}).exit_code == 0);
  CHECK(attempt(reader.url(),
                "INSERT INTO oasync.events VALUES ('runtime.run_summaries', 99, "
                "'run_summary:x', 1, '', 'upsert', NULL, NULL)")
            .find("permission denied") != std::string::npos);
  CHECK(attempt(reader.url(), "UPDATE oasync.docs SET doc_version = 9").find("permission denied") !=
        std::string::npos);
  const auto as_sink =
      run_oasync({"--database-url", reader.url(), "sink", "--input", "-"},
                 R"({"topic":"runtime.run_summaries","doc_key":"run_summary:z","payload":{}})"
                 "\n");
  CHECK(as_sink.exit_code == 1);
  CHECK(as_sink.err.find("permission denied") != std::string::npos);
}

TEST_CASE("scope security: a reader that sets its tenant sees only that tenant's docs and events") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name(), "--scope-security", "on"})
              .exit_code == 0);
  auto sink = Sink::open(writer.url());
  DocWrite a = upsert("a", R"({"tenant":"A"})");
  a.scope = "org:A";
  DocWrite b = upsert("b", R"({"tenant":"B"})");
  b.scope = "org:B";
  REQUIRE(sink->apply(batch_of({a, b}))[1].outcome == Outcome::applied);

  const auto as_a = [&](const std::string& sql) {
    pqxx::connection conn(reader.url());
    pqxx::work tx(conn);
    tx.exec("SET LOCAL oasync.scope = 'org:A'");
    const auto r = tx.exec(sql);
    return r[0][0].is_null() ? std::string() : r[0][0].as<std::string>();
  };
  CHECK(as_a("SELECT string_agg(doc_key, ',') FROM oasync.docs") == "run_summary:a");
  CHECK(as_a("SELECT string_agg(doc_key, ',') FROM oasync.events") == "run_summary:a");
  CHECK(as_a("SELECT string_agg(doc_key, ',') FROM oasync.read_events('runtime.run_summaries', "
             "NULL, 0, 2)") == "run_summary:a");
  // No tenant set: nothing at all (fail closed).
  CHECK(attempt(reader.url(),
                "DO $$ BEGIN IF (SELECT count(*) FROM oasync.docs) <> 0 THEN RAISE "
                "'saw rows'; END IF; END $$") == "");
  // The CLI reader with its tenant in the session (PGOPTIONS).
  const auto tail = run_oasync(
      {"--database-url", reader.url(), "tail", kRuns, "--after", "0", "--format", "ndjson"}, {},
      {{"PGOPTIONS", "-c oasync.scope=org:B"}});
  CHECK(tail.exit_code == 0);
  CHECK(tail.out.find("run_summary:b") != std::string::npos);
  CHECK(tail.out.find("run_summary:a") == std::string::npos);
  // Turned off again, the reader sees everything.
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name(), "--scope-security", "off"})
              .exit_code == 0);
  CHECK(as_a("SELECT count(*) FROM oasync.docs") == "2");
}

TEST_CASE("SQL-looking keys, scopes and topics stay plain data through every command") {
  TestDatabase db;
  const std::string nasty_key = "run_summary:'; DROP TABLE oasync.events; --";
  const std::string nasty_scope = "org:1' OR '1'='1";
  nlohmann::json line = {{"topic", kRuns},
                         {"doc_key", nasty_key},
                         {"scope", nasty_scope},
                         {"payload", {{"q", "\"); DELETE FROM oasync.docs; --"}}}};
  nlohmann::json bad_topic = {{"topic", "x'; DROP SCHEMA oasync CASCADE; --"},
                              {"doc_key", "k"},
                              {"payload", nlohmann::json::object()}};
  const auto sink = run_oasync({"--database-url", db.url(), "sink", "--input", "-", "--results"},
                               line.dump() + "\n" + bad_topic.dump() + "\n");
  CHECK(sink.exit_code == 0);
  CHECK(sink.out.find(R"("line":1,"outcome":"applied")") != std::string::npos);
  CHECK(sink.out.find(R"("line":2,"outcome":"rejected","reason":"topic_not_registered")") !=
        std::string::npos);

  const auto get = run_oasync({"--database-url", db.url(), "doc", "get", nasty_key});
  CHECK(get.exit_code == 0);
  CHECK(nlohmann::json::parse(get.out)["scope"] == nasty_scope);
  const auto tail = run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0",
                                "--format", "ndjson", "--scope", nasty_scope});
  CHECK(nlohmann::json::parse(tail.out)["doc_key"] == nasty_key);
  CHECK(run_oasync({"--database-url", db.url(), "tail", "x'; DROP SCHEMA oasync CASCADE; --"})
            .exit_code == 1);
  CHECK(run_oasync({"--database-url", db.url(), "snapshot", kRuns, "--scope", nasty_scope})
            .exit_code == 0);
  CHECK(run_oasync({"--database-url", db.url(), "verify", "x' OR '1'='1"}).exit_code == 4);
  CHECK(
      run_oasync({"--database-url", db.url(), "purge", "--topic", "x'; DROP TABLE oasync.docs; --"})
          .exit_code == 1);
  CHECK(run_oasync({"--database-url", db.url(), "tail", kRuns, "--after", "0", "--consumer",
                    "c'; DROP TABLE oasync.consumers; --"})
            .exit_code == 0);
  CHECK(db.scalar("SELECT name FROM oasync.consumers") == "c'; DROP TABLE oasync.consumers; --");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "1");
  CHECK(db.scalar("SELECT count(*) FROM oasync.topics") == "4");
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}
