// Least privilege and hostile strings: what each role may do, scope security,
// and SQL-looking keys, topics and scopes that must stay plain data.
#include <doctest/doctest.h>

#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "oasync/error.hpp"
#include "oasync/reader.hpp"
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
    "grants: the writer runs the sink but cannot drop or purge, the reader reads but cannot "
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
  const auto snapshot = run_oasync({"--database-url", reader.url(), "snapshot", kRuns});
  CHECK_MESSAGE(snapshot.exit_code == 0, snapshot.err);
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
  REQUIRE(
      run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                  reader.name(), "--scope-security", "on", "--scope", "org:A", "--scope", "org:B"})
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

namespace {

// Runs `sql` as `url` after `setup` (SET statements) in one transaction and
// returns the first column of the first row ("" for none or NULL), or the
// error's first line prefixed with "error: ".
std::string as_role(const std::string& url, const std::string& setup, const std::string& sql) {
  try {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    if (!setup.empty()) tx.exec(setup);
    const auto r = tx.exec(sql);
    tx.commit();
    if (r.empty() || r[0][0].is_null()) return "";
    return r[0][0].as<std::string>();
  } catch (const std::exception& e) {
    std::string m = e.what();
    return "error: " + m.substr(0, m.find('\n'));
  }
}

}  // namespace

TEST_CASE("scope security binds scopes to roles: a session narrows, never widens") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  TestRole server(db, "s");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name(), "--server", server.name(), "--scope-security", "on", "--scope",
                      "org:A"})
              .exit_code == 0);
  auto sink = Sink::open(writer.url());
  DocWrite a = upsert("a", R"({"tenant":"A"})");
  a.scope = "org:A";
  DocWrite b = upsert("b", R"({"tenant":"B"})");
  b.scope = "org:B";
  DocWrite u = upsert("u", R"({"tenant":"none"})");  // unscoped
  sink->apply(batch_of({a, b, u}));
  const std::string docs = "SELECT string_agg(doc_key, ',' ORDER BY doc_key) FROM oasync.docs";
  CHECK(as_role(reader.url(), "SET LOCAL oasync.scope = 'org:A'", docs) == "run_summary:a");
  // Claiming a scope the role is not bound to shows nothing.
  CHECK(as_role(reader.url(), "SET LOCAL oasync.scope = 'org:B'", docs) == "");
  // No scope named, or a RESET one (current_setting gives ''): nothing.
  CHECK(as_role(reader.url(), "", docs) == "");
  CHECK(as_role(reader.url(), "SET oasync.scope = 'org:A'; RESET oasync.scope", docs) == "");
  // Unscoped docs need a binding to '' as well.
  CHECK(as_role(reader.url(), "SET LOCAL oasync.unscoped = on", docs) == "");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name(), "--scope", "org:A", "--scope", ""})
              .exit_code == 0);
  CHECK(as_role(reader.url(), "SET LOCAL oasync.unscoped = on", docs) == "run_summary:u");
  // The bindings and other roles' bindings stay private.
  CHECK(as_role(reader.url(), "", "SELECT count(*) FROM oasync.scope_bindings")
            .find("permission denied") != std::string::npos);
  CHECK(as_role(reader.url(), "SET LOCAL oasync.scope = 'org:A'",
                "SELECT oasync.session_scope('" + server.name() + "')") == "");
  // The trusted server reads every scope and enforces them itself.
  CHECK(as_role(server.url(), "", docs) == "run_summary:a,run_summary:b,run_summary:u");
  // A second reader, bound to B: each reader keeps its own scope.
  TestRole reader_b(db, "rb");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader_b.name(), "--scope-security", "on", "--scope", "org:B"})
              .exit_code == 0);
  CHECK(as_role(reader_b.url(), "SET LOCAL oasync.scope = 'org:B'", docs) == "run_summary:b");
  CHECK(as_role(reader_b.url(), "SET LOCAL oasync.scope = 'org:A'", docs) == "");
  CHECK(as_role(reader.url(), "SET LOCAL oasync.scope = 'org:A'", docs) == "run_summary:a");
  CHECK(as_role(server.url(), "", docs) == "run_summary:a,run_summary:b,run_summary:u");
  // The read functions follow the same rows.
  CHECK(as_role(reader.url(), "SET LOCAL oasync.scope = 'org:A'",
                "SELECT string_agg(doc_key, ',') FROM oasync.read_events('runtime.run_summaries', "
                "NULL, 0, 3)") == "run_summary:a");
  CHECK(as_role(reader.url(), "SET LOCAL oasync.scope = 'org:A'",
                "SELECT count(*) FROM oasync.get_doc('run_summary:b')") == "0");
}

TEST_CASE("scope security: a doc moved to another tenant shows the old tenant only its exit") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name(), "--scope-security", "on", "--scope", "org:A"})
              .exit_code == 0);
  auto sink = Sink::open(writer.url());
  DocWrite w = upsert("w", R"({"secret":"A"})", std::nullopt, kWorkerEvents, "codex_worker_event:");
  w.scope = "org:A";
  DocWrite r = upsert("r", R"({"secret":"A"})");
  r.scope = "org:A";
  sink->apply(batch_of({w, r}));
  w.payload = r.payload = R"({"secret":"B"})";
  w.scope = r.scope = "org:B";
  sink->apply(batch_of({w, r}));
  const std::string set_a = "SET LOCAL oasync.scope = 'org:A'";
  for (const std::string topic : {kRuns, kWorkerEvents}) {
    CAPTURE(topic);
    // Through the function: A's view, with or without naming the scope.
    // (A pointer topic's payload is fetched from the doc, which is B's now:
    // A gets none.)
    const std::string expected =
        topic == kRuns ? R"(upsert:{"secret":"A"} delete:null)" : "upsert:null delete:null";
    for (const std::string scope_arg : {"NULL", "'org:A'"}) {
      CHECK(as_role(reader.url(), set_a,
                    "SELECT string_agg(op || ':' || coalesce(payload::text, 'null'), ' ' ORDER BY "
                    "watermark) FROM oasync.read_events('" +
                        topic + "', NULL, 0, 2, " + scope_arg + ")") == expected);
    }
    // Directly: no row of B's, no payload or hash of B's.
    CHECK(as_role(reader.url(), set_a,
                  "SELECT count(*) FROM oasync.events WHERE topic = '" + topic +
                      "' AND scope <> 'org:A'") == "0");
    CHECK(as_role(reader.url(), set_a,
                  "SELECT count(*) FROM oasync.scope_exits WHERE topic = '" + topic + "'") == "1");
  }
  const auto tail = run_oasync(
      {"--database-url", reader.url(), "tail", kWorkerEvents, "--after", "0", "--format", "ndjson"},
      {}, {{"PGOPTIONS", "-c oasync.scope=org:A"}});
  CHECK(tail.exit_code == 0);
  CHECK(tail.out.find("secret\":\"B") == std::string::npos);
  CHECK(tail.out.find("\"op\":\"delete\"") != std::string::npos);
}

TEST_CASE("scope security: a bound reader sees no version-0 row, though it carries its scope") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name(), "--scope-security", "on", "--scope", "org:victim"})
              .exit_code == 0);
  auto sink = Sink::open(writer.url());
  // A delete with seq 10 of a doc that never existed keeps the stream's
  // position in a version-0 row; the upsert with seq 5 is a duplicate that
  // never applies, but the row was created in its scope.
  DocWrite gone = remove_doc("v");
  gone.source_stream = "run:v";
  gone.source_seq = 10;
  DocWrite late = upsert("v", R"({"secret":1})", 5);
  late.scope = "org:victim";
  const auto results = sink->apply(batch_of({gone, late}));
  REQUIRE(results[0].outcome == Outcome::unchanged);
  REQUIRE(results[1].outcome == Outcome::duplicate);
  REQUIRE(db.scalar("SELECT scope || '/' || doc_version || '/' || source_seq FROM oasync.docs "
                    "WHERE doc_key = 'run_summary:v'") == "org:victim/0/10");
  const std::string set_victim = "SET LOCAL oasync.scope = 'org:victim'";
  CHECK(as_role(reader.url(), set_victim,
                "SELECT count(*) FROM oasync.docs WHERE doc_key = 'run_summary:v'") == "0");
  CHECK(as_role(reader.url(), set_victim, "SELECT count(*) FROM oasync.docs") == "0");
  // The writer, trusted, still sees it: the sink reads stream positions.
  CHECK(as_role(writer.url(), "",
                "SELECT count(*) FROM oasync.docs WHERE doc_key = 'run_summary:v'") == "1");
}

TEST_CASE("migrate hides version-0 rows under a scope policy made before it") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name(), "--scope-security", "on", "--scope", "org:victim"})
              .exit_code == 0);
  // The docs policy as grants made it before 0010, and 0010 not yet applied.
  db.scalar(R"SQL(ALTER POLICY oasync_scope_read ON oasync.docs
                  USING ((SELECT oasync.session_trusted(CURRENT_USER))
                         OR scope = (SELECT oasync.session_scope(CURRENT_USER)
                                     COLLATE pg_catalog."default")))SQL");
  db.scalar("DELETE FROM oasync.schema_migrations WHERE version = 10");
  db.scalar(
      "INSERT INTO oasync.docs (topic, doc_key, scope, doc_version, last_watermark, "
      "source_stream, source_seq) VALUES ('runtime.run_summaries', 'run_summary:v', "
      "'org:victim', 0, 0, 'run:v', 10)");
  const std::string set_victim = "SET LOCAL oasync.scope = 'org:victim'";
  REQUIRE(as_role(reader.url(), set_victim, "SELECT count(*) FROM oasync.docs") == "1");
  REQUIRE(run_oasync({"--database-url", db.url(), "migrate"}).exit_code == 0);
  CHECK(as_role(reader.url(), set_victim, "SELECT count(*) FROM oasync.docs") == "0");
  CHECK(as_role(writer.url(), "", "SELECT count(*) FROM oasync.docs") == "1");
}

TEST_CASE("consumers: the reader writes positions only through ack_consumer, forward only") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name()})
              .exit_code == 0);
  auto sink = Sink::open(writer.url());
  sink->apply(batch_of({upsert("a", "{}"), upsert("b", "{}"), upsert("c", "{}")}));
  const std::string epoch =
      db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
  const auto ack = [&](const std::string& e, int w) {
    return as_role(reader.url(), "",
                   fmt::format("SELECT oasync.ack_consumer('web', 'runtime.run_summaries', '{}', "
                               "{})::text",
                               e, w));
  };
  CHECK(ack(epoch, 2) == "");
  CHECK(ack(epoch, 1) == "");  // backwards: ignored
  CHECK(db.scalar("SELECT watermark FROM oasync.consumers") == "2");
  CHECK(ack("00000000-0000-0000-0000-000000000000", 0).find("is not the current epoch") !=
        std::string::npos);
  CHECK(ack(epoch, 9).find("outside 0..3") != std::string::npos);
  CHECK(db.scalar("SELECT watermark FROM oasync.consumers") == "2");
  for (const char* sql :
       {"INSERT INTO oasync.consumers (name, topic, epoch, watermark, last_seen) VALUES ('x', "
        "'runtime.run_summaries', gen_random_uuid(), 0, 'infinity')",
        "UPDATE oasync.consumers SET watermark = 0",
        "UPDATE oasync.consumers SET last_seen = 'infinity'", "DELETE FROM oasync.consumers"}) {
    CAPTURE(sql);
    CHECK(as_role(reader.url(), "", sql).find("permission denied") != std::string::npos);
  }
  CHECK(db.scalar("SELECT last_seen <= now() FROM oasync.consumers") == "t");
}

TEST_CASE("the writer deletes no doc, its placeholders still go") {
  TestDatabase db;
  TestRole writer(db, "w");
  TestRole reader(db, "r");
  REQUIRE(run_oasync({"--database-url", db.url(), "grants", "--writer", writer.name(), "--reader",
                      reader.name()})
              .exit_code == 0);
  auto sink = Sink::open(writer.url());
  sink->apply(batch_of({upsert("a", "{}")}));
  CHECK(as_role(writer.url(), "", "DELETE FROM oasync.docs").find("permission denied") !=
        std::string::npos);
  // A conflicting create leaves a placeholder behind, which the sink removes.
  DocWrite create_only = upsert("b", "{}");
  create_only.expected_version = 5;
  CHECK(sink->apply(batch_of({create_only}))[0].outcome == Outcome::conflict);
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "1");
  // drop_placeholders removes version-0 rows and nothing else.
  CHECK(as_role(writer.url(), "",
                "SELECT oasync.drop_placeholders(ARRAY(SELECT ctid FROM oasync.docs WHERE doc_key "
                "= 'run_summary:a'))") == "0");
  CHECK(db.scalar("SELECT count(*) FROM oasync.docs") == "1");
}

TEST_CASE(
    "a hostile search_path changes nothing: the sink and the reads resolve no name through it") {
  TestDatabase db;
  // Lookalikes of what oasync's statements use, each failing loudly if called.
  db.scalar(R"SQL(
CREATE SCHEMA evil;
CREATE FUNCTION evil.boom(text, text) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil operator called'; END$$;
CREATE OPERATOR evil.= (leftarg = text, rightarg = text, function = evil.boom);
CREATE OPERATOR evil.<> (leftarg = text, rightarg = text, function = evil.boom);
CREATE FUNCTION evil.boom8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil bigint operator called'; END$$;
CREATE OPERATOR evil.= (leftarg = bigint, rightarg = bigint, function = evil.boom8);
CREATE OPERATOR evil.> (leftarg = bigint, rightarg = bigint, function = evil.boom8);
CREATE OPERATOR evil.<= (leftarg = bigint, rightarg = bigint, function = evil.boom8);
CREATE FUNCTION evil.cat(text, text) RETURNS text LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil || called'; END$$;
CREATE OPERATOR evil.|| (leftarg = text, rightarg = text, function = evil.cat);
CREATE FUNCTION evil.encode(bytea, text) RETURNS text LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil encode called'; END$$;
CREATE FUNCTION evil.decode(text, text) RETURNS bytea LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil decode called'; END$$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil now called'; END$$;
CREATE FUNCTION evil.json_to_recordset(json) RETURNS SETOF record LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil json_to_recordset called'; END$$;
CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil pg_notify called'; END$$;
CREATE DOMAIN evil.json AS pg_catalog.text CHECK (false);
CREATE DOMAIN evil.uuid AS pg_catalog.text CHECK (false);
CREATE DOMAIN evil.text AS pg_catalog.text CHECK (false);
)SQL");
  auto conn = db.connect();
  {
    pqxx::nontransaction tx(*conn);
    tx.exec("SET search_path = evil, pg_catalog, public");
  }
  Sink sink(*conn);
  DocWrite moved = upsert("a", R"({"n":2})", 2);
  moved.scope = "org:2";
  const auto r = sink.apply(batch_of({upsert("a", R"({"n":1})", 1), moved, upsert("b", "{}"),
                                      remove_doc("never"), remove_doc("b")}));
  CHECK(r[0].outcome == Outcome::applied);
  CHECK(r[1].outcome == Outcome::applied);
  CHECK(r[4].outcome == Outcome::applied);
  pqxx::work tx(*conn);
  Sink second(*conn);
  CHECK(second.apply_within(tx, batch_of({upsert("c", "{}")}))[0].watermark == 5);
  tx.commit();
  Reader reader(*conn);
  CHECK(reader.check(kRuns, "", 5).resumable());
  CHECK(reader.read({kRuns, "", 0, 5, std::nullopt, 100}).events.size() == 5);
  CHECK(reader.read({kRuns, "", 0, 5, std::string("org:2"), 100}).events.size() == 1);
  CHECK(reader.find_doc("run_summary:a", std::nullopt).size() == 1);
  std::int64_t docs = 0;
  CHECK(reader.snapshot(
            kRuns, std::nullopt, std::nullopt, 10, [](const auto&) {},
            [&](const Doc&) { ++docs; }) == StaleReason::none);
  CHECK(docs == 2);
  CHECK(run_oasync({"--database-url", db.url(), "verify"}).exit_code == 0);
}
