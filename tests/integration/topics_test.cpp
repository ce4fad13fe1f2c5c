// oasync topics apply/list against a real Postgres.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "oasync/sink.hpp"
#include "process.hpp"
#include "temp_dir.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using oasync::test::run_oasync;
using oasync::test::TestDatabase;

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
  CHECK(db.scalar("SELECT max(config_revision) FROM oasync.topics") == "1");
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
  CHECK(db.scalar(
            "SELECT config_revision FROM oasync.topics WHERE topic = 'runtime.run_summaries'") ==
        "2");
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
