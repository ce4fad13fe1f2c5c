// oasync migrate against a real Postgres: idempotence, the advisory lock,
// checksum drift, rollback of a failing file, and schema/schema.sql.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "oasync/migrate.hpp"
#include "process.hpp"
#include "temp_dir.hpp"
#include "test_db.hpp"

using oasync::test::run_oasync;
using oasync::test::TestDatabase;

namespace {

// A migrations folder.
class TempDir : public oasync::test::TempDir {
 public:
  void copy_bundled() const {
    for (const auto& m : oasync::bundled_migrations()) write(m.name, m.sql);
  }
};

// What `migrate` prints when it applies every bundled migration, with `verb`.
std::string plan_text(const std::string& verb) {
  std::string out;
  for (const auto& m : oasync::bundled_migrations()) out += verb + " " + m.name + "\n";
  return out;
}

std::string nothing_to_do() {
  return "nothing to do: all " + std::to_string(oasync::bundled_migrations().size()) +
         " migrations are applied";
}

std::string bundled_count() {
  return std::to_string(oasync::bundled_migrations().size());
}

}  // namespace

TEST_CASE("migrate applies once: the second run has nothing to do") {
  TestDatabase db(TestDatabase::Setup::empty);
  const auto first = run_oasync({"--database-url", db.url(), "migrate"});
  CHECK(first.exit_code == 0);
  CHECK(first.out == plan_text("applied"));
  const auto second = run_oasync({"--database-url", db.url(), "migrate"});
  CHECK(second.exit_code == 0);
  CHECK(second.out == nothing_to_do() + "\n");
  CHECK(db.scalar("SELECT count(*) FROM oasync.schema_migrations") == bundled_count());
  CHECK(db.scalar("SELECT sha256 FROM oasync.schema_migrations WHERE version = 1") ==
        oasync::bundled_migrations().at(0).sha256);
  const auto status = run_oasync({"--database-url", db.url(), "migrate", "--status"});
  CHECK(status.exit_code == 0);
  CHECK(status.out.find("0001  0001_init.sql") == 0);
  CHECK(status.out.find("applied") != std::string::npos);
}

TEST_CASE("migrate --dry-run and --status change nothing") {
  TestDatabase db(TestDatabase::Setup::empty);
  const auto dry = run_oasync({"--database-url", db.url(), "migrate", "--dry-run"});
  CHECK(dry.exit_code == 0);
  CHECK(dry.out == plan_text("would apply"));
  const auto status = run_oasync({"--database-url", db.url(), "migrate", "--status"});
  CHECK(status.out.find("pending") != std::string::npos);
  CHECK(db.scalar("SELECT to_regclass('oasync.topics')::text") == "");
}

TEST_CASE("two migrators started at once: one applies, the other finds nothing to do") {
  TestDatabase db(TestDatabase::Setup::empty);
  // Hold the advisory lock so both migrators queue behind it, then let go.
  auto blocker = db.connect();
  pqxx::nontransaction hold(*blocker);
  hold.exec_params("SELECT pg_advisory_lock($1)", oasync::kMigrateLockKey);
  oasync::test::Child a({oasync::test::oasync_binary(), "--database-url", db.url(), "migrate"});
  oasync::test::Child b({oasync::test::oasync_binary(), "--database-url", db.url(), "migrate"});
  // Both must have tried for the lock (they poll) before it is released.
  const std::string tried =
      "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_try_advisory_lock%' "
      "AND pid <> pg_backend_pid()";
  for (int i = 0; i < 200 && db.scalar(tried) != "2"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  CHECK(db.scalar(tried) == "2");
  hold.exec_params("SELECT pg_advisory_unlock($1)", oasync::kMigrateLockKey);
  std::string out_a, out_b;
  a.read_line(out_a);
  b.read_line(out_b);
  CHECK(a.wait() == 0);
  CHECK(b.wait() == 0);
  std::vector<std::string> outs{out_a, out_b};
  std::sort(outs.begin(), outs.end());
  CHECK(outs[0] == "applied " + oasync::bundled_migrations().front().name);
  CHECK(outs[1] == nothing_to_do());
  CHECK(db.scalar("SELECT count(*) FROM oasync.schema_migrations") == bundled_count());
}

TEST_CASE("an applied migration whose text changed is refused, and nothing after it runs") {
  TestDatabase db(TestDatabase::Setup::empty);
  TempDir dir;
  dir.copy_bundled();
  REQUIRE(run_oasync({"--database-url", db.url(), "migrate", "--dir", dir.path()}).exit_code == 0);
  dir.write("0001_init.sql", oasync::bundled_migrations().at(0).sql + "\n-- edited\n");
  dir.write("9001_more.sql", "CREATE TABLE oasync.more (x int);\n");
  const auto r = run_oasync({"--database-url", db.url(), "migrate", "--dir", dir.path()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("oasync: error: 0001_init.sql: applied earlier, but its text has changed") == 0);
  CHECK(db.scalar("SELECT to_regclass('oasync.more')::text") == "");
  CHECK(db.scalar("SELECT count(*) FROM oasync.schema_migrations") == bundled_count());
}

TEST_CASE("a failing migration rolls back whole and names the file and line") {
  TestDatabase db(TestDatabase::Setup::empty);
  TempDir dir;
  dir.copy_bundled();
  dir.write("9001_broken.sql",
            "-- creates a table, then fails\n"
            "CREATE TABLE oasync.half_done (x int);\n"
            "\n"
            "INSERT INTO oasync.half_done VALUES ('not a number');\n");
  const auto r = run_oasync({"--database-url", db.url(), "migrate", "--dir", dir.path()});
  CHECK(r.exit_code == 1);
  CHECK(r.out == "");
  CHECK(r.err.find("oasync: error: 9001_broken.sql:4: ") == 0);
  CHECK(r.err.find("invalid input syntax for type integer") != std::string::npos);
  CHECK(r.err.find("rolled back: nothing of 9001_broken.sql was applied") != std::string::npos);
  CHECK(db.scalar("SELECT to_regclass('oasync.half_done')::text") == "");
  // The bundled ones stay applied; the broken one is still pending.
  CHECK(db.scalar("SELECT count(*) FROM oasync.schema_migrations") == bundled_count());
  CHECK(db.scalar("SELECT count(*) FROM oasync.schema_migrations WHERE version = 9001") == "0");
}

TEST_CASE("migrate re-running a concurrent-index migration drops its own invalid indexes only") {
  TestDatabase db;
  // Two rows of one topic: a unique index on topic fails on them, and a
  // failed CREATE INDEX CONCURRENTLY leaves its index behind, invalid.
  db.scalar(
      "INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op) VALUES "
      "('runtime.run_summaries', 1, 'run_summary:1', 1, '', 'upsert'), "
      "('runtime.run_summaries', 2, 'run_summary:1', 2, '', 'upsert')");
  // An operator's own index, being built by hand.
  CHECK_THROWS(
      db.scalar("CREATE UNIQUE INDEX CONCURRENTLY operator_events_topic ON oasync.events (topic)"));
  // 0008's index, as a failed build of it would have left it.
  db.scalar("DROP INDEX oasync.events_topic_scope_watermark");
  CHECK_THROWS(db.scalar(
      "CREATE UNIQUE INDEX CONCURRENTLY events_topic_scope_watermark ON oasync.events (topic)"));
  const std::string invalid =
      "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_index i JOIN pg_class c ON "
      "c.oid = i.indexrelid WHERE NOT i.indisvalid";
  REQUIRE(db.scalar(invalid) == "events_topic_scope_watermark,operator_events_topic");
  // 0008 to run again, as after its failed build.
  db.scalar("DELETE FROM oasync.schema_migrations WHERE version = 8");
  const auto r = run_oasync({"--database-url", db.url(), "migrate"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "applied 0008_scoped_read_indexes.sql\n");
  // The migration's own index is rebuilt, valid; the operator's is left alone.
  CHECK(db.scalar(invalid) == "operator_events_topic");
  CHECK(db.scalar("SELECT pg_get_indexdef('oasync.events_topic_scope_watermark'::regclass)") ==
        "CREATE INDEX events_topic_scope_watermark ON oasync.events USING btree (topic, scope, "
        "watermark)");
}

TEST_CASE("badly named migration files are refused") {
  TestDatabase db(TestDatabase::Setup::empty);
  TempDir dir;
  dir.write("1_init.sql", "SELECT 1;");
  const auto r = run_oasync({"--database-url", db.url(), "migrate", "--dir", dir.path()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("1_init.sql: migration files are named NNNN_name.sql") != std::string::npos);
}

TEST_CASE("schema/schema.sql is exactly what the migrations produce") {
  TestDatabase db(TestDatabase::Setup::migrated);
  const auto dump =
      oasync::test::run_process({"pg_dump", "--schema-only", "--no-owner", "--no-privileges",
                                 "--schema=oasync", "--dbname", db.url()});
  REQUIRE_MESSAGE(dump.exit_code == 0, dump.err);
  std::ifstream in(oasync::test::source_dir() + "/schema/schema.sql");
  std::stringstream committed;
  committed << in.rdbuf();
  // Compare without comments, SET lines and blank lines: pg_dump's preamble
  // carries versions that need not match.
  const auto normalise = [](const std::string& text) {
    std::stringstream s(text), out;
    std::string line;
    while (std::getline(s, line)) {
      if (line.empty() || line.rfind("--", 0) == 0 || line.rfind("SET ", 0) == 0 ||
          line.rfind("\\restrict", 0) == 0 || line.rfind("\\unrestrict", 0) == 0 ||
          line.rfind("SELECT pg_catalog.set_config", 0) == 0) {
        continue;
      }
      out << line << "\n";
    }
    return out.str();
  };
  CHECK_MESSAGE(normalise(dump.out) == normalise(committed.str()),
                "schema/schema.sql drifted from the migrations; regenerate it with "
                "scripts/dump-schema");
}
