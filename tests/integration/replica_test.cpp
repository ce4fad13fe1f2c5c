// A real streaming replica beside the test cluster: a failover that loses
// history forks the topics' epochs at their first write, and `tail --follow`
// works on a hot standby. This binary runs alone (ctest RUN_SERIAL): a base
// backup copies the whole cluster.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <thread>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "oasync/reader.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "replica.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

std::int64_t write_n(Sink& sink, int from, int n) {
  Batch b;
  for (int i = from; i < from + n; ++i) {
    b.writes.push_back(upsert(std::to_string(i), R"({"i":)" + std::to_string(i) + "}"));
  }
  return sink.apply(b).back().watermark;
}

}  // namespace

TEST_CASE("a failover that lost history: cursors past the fork go stale, those below resume") {
  TestDatabase db;
  auto primary = Sink::open(db.url());
  REQUIRE(write_n(*primary, 0, 5) == 5);
  Replica replica;
  replica.catch_up();
  replica.cut();
  // Written on the primary only: a client reads them, then the primary dies.
  REQUIRE(write_n(*primary, 5, 3) == 8);
  const std::string epoch =
      db.scalar("SELECT epoch FROM oasync.topics WHERE topic = 'runtime.run_summaries'");
  replica.promote();

  const std::string url = replica.url(db.name());
  auto conn = std::make_unique<pqxx::connection>(url);
  Reader reader(*conn);
  // Before any write on the new timeline: the lost cursor is ahead of the head.
  CHECK(reader.check(kRuns, epoch, 8).reason == StaleReason::cursor_ahead);
  CHECK(reader.check(kRuns, epoch, 5).resumable());

  auto promoted = Sink::open(url);
  REQUIRE(write_n(*promoted, 100, 4) == 9);  // watermarks 6..9 again, on the new history
  const ResumeCheck lost = reader.check(kRuns, epoch, 8);
  CHECK(lost.reason == StaleReason::epoch_changed);
  CHECK(lost.position.epoch != epoch);
  CHECK(reader.check(kRuns, epoch, 6).reason == StaleReason::epoch_changed);
  // Events 1..5 exist on both histories: that cursor resumes, in the new epoch.
  const ResumeCheck below = reader.check(kRuns, epoch, 5);
  CHECK(below.resumable());
  CHECK(below.position.epoch == lost.position.epoch);
  const auto tail = run_oasync({"--database-url", url, "tail", kRuns, "--after", "5", "--epoch",
                                epoch, "--format", "ndjson"});
  CHECK(tail.exit_code == 0);
  CHECK(tail.out.find(R"("watermark":6,"doc_key":"run_summary:100")") != std::string::npos);
  const auto stale = run_oasync({"--database-url", url, "tail", kRuns, "--after", "8", "--epoch",
                                 epoch, "--format", "ndjson"});
  CHECK(stale.exit_code == 3);
  CHECK(stale.out.find(R"("reason":"epoch_changed")") != std::string::npos);
  pqxx::nontransaction tx(*conn);
  CHECK(tx.exec1("SELECT valid_through FROM oasync.epoch_history WHERE topic = "
                 "'runtime.run_summaries'")[0]
            .as<std::int64_t>() == 5);
  // Topics nobody wrote to since keep their epoch until their first write.
  CHECK(tx.exec1("SELECT count(*) FROM oasync.epoch_history")[0].as<int>() == 1);
  CHECK(run_oasync({"--database-url", url, "verify"}).exit_code == 0);
}

TEST_CASE("tail --follow on a hot standby polls, and prints what the primary writes") {
  TestDatabase db;
  auto primary = Sink::open(db.url());
  write_n(*primary, 0, 2);
  Replica replica;
  replica.catch_up();
  Child follower({oasync_binary(), "--database-url", replica.url(db.name()), "tail", kRuns,
                  "--after", "0", "--follow", "--poll-ms", "100", "--format", "ndjson"});
  std::string line;
  REQUIRE(follower.read_line(line, 10000));
  CHECK(nlohmann::json::parse(line)["watermark"] == 1);
  REQUIRE(follower.read_line(line, 10000));
  CHECK(nlohmann::json::parse(line)["watermark"] == 2);
  write_n(*primary, 2, 1);
  REQUIRE(follower.read_line(line, 10000));
  CHECK(nlohmann::json::parse(line)["watermark"] == 3);
  follower.kill(SIGTERM);
  follower.wait();
  CHECK(follower.stderr_text().find("LISTEN") == std::string::npos);
}

int main(int argc, char** argv) {
  if (!Replica::available()) {
    std::fprintf(stderr,
                 "replica tests: cannot run: they start a replica of the throwaway server that "
                 "scripts/with-postgres starts, and an existing database given by "
                 "OASYNC_DATABASE_URL is never copied; run them under scripts/with-postgres\n");
    return 1;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
