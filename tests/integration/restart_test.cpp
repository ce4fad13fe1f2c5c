// Postgres restarted (immediate mode: a crash) under a running sink. This
// binary runs alone (ctest RUN_SERIAL): the restart would break other tests.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>

#include "cut_proxy.hpp"
#include "frames.hpp"
#include "journal_check.hpp"
#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

Batch frame_batch(int frame) {
  Batch b;
  for (int i = 0; i < 2000; ++i) {
    b.writes.push_back(upsert(std::to_string(frame) + "_" + std::to_string(i),
                              R"({"frame":)" + std::to_string(frame) + "}", frame));
  }
  return b;
}

}  // namespace

TEST_CASE(
    "pg_ctl restart -m immediate mid-stream: batches fail retryable, retries apply exactly once") {
  TestDatabase db;
  Child sink({oasync_binary(), "--database-url", db.url(), "sink", "--stdio"});
  // Keep frames flowing while the server crashes and comes back.
  std::thread restarter([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const std::string command = std::string(std::getenv("OASYNC_PG_CTL")) +
                                " restart -m immediate -w -D " + std::getenv("OASYNC_PG_DATADIR") +
                                " >/dev/null 2>&1";
    CHECK(std::system(command.c_str()) == 0);
  });
  int retryable_failures = 0;
  for (int frame = 1; frame <= 30; ++frame) {
    for (int attempt = 0;; ++attempt) {
      REQUIRE(attempt < 100);
      REQUIRE(send_batch(sink, frame_batch(frame)));
      DecodedResult answer;
      REQUIRE(read_answer(sink, answer));
      if (answer.error_code) {
        CHECK(answer.retryable);
        ++retryable_failures;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      REQUIRE(answer.results.size() == 2000);
      const auto outcome = answer.results.front().outcome;
      CHECK((outcome == Outcome::applied || outcome == Outcome::duplicate));
      break;
    }
  }
  restarter.join();
  sink.close_stdin();
  CHECK(sink.wait() == 0);
  MESSAGE("retryable failures during the restart: " << retryable_failures);
  CHECK(retryable_failures > 0);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "60000");
  CHECK(db.scalar("SELECT max(doc_version) FROM oasync.docs") == "1");
  CHECK(journal_violations(db).empty());
}

namespace {

void restart_immediately() {
  const std::string command = std::string(std::getenv("OASYNC_PG_CTL")) +
                              " restart -m immediate -w -D " + std::getenv("OASYNC_PG_DATADIR") +
                              " >/dev/null 2>&1";
  REQUIRE(std::system(command.c_str()) == 0);
}

// A batch whose COMMIT reply is lost, and whose settling is held back (the
// first statement of the sink's new connection stalls) until PostgreSQL
// crashed and came back: the answer the sink then gives.
std::future<std::vector<WriteResult>> lose_commit_across_a_restart(CutProxy& proxy, Sink& sink,
                                                                   const Batch& batch) {
  using Cut = CutProxy::Cut;
  const int before = proxy.fired();
  proxy.arm(Cut{CutProxy::Direction::to_client, 'C', "COMMIT", CutProxy::Forward::no,
                CutProxy::Action::close});
  proxy.then(Cut{CutProxy::Direction::to_server, '\0', "pg_control_system", CutProxy::Forward::no,
                 CutProxy::Action::stall});
  auto answer = std::async(std::launch::async, [&sink, batch] { return sink.apply(batch); });
  while (proxy.fired() < before + 2) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  restart_immediately();
  proxy.release();
  return answer;
}

}  // namespace

TEST_CASE(
    "a lost COMMIT, then a crash restart: the server's word counts only with the batch's "
    "writes found in the journal") {
  TestDatabase db;
  CutProxy proxy;
  SinkOptions options;
  options.lost_commit_timeout_ms = 60000;
  auto sink = Sink::open(proxy.url(db.name()), options);
  sink->apply(batch_of({upsert("warm", "{}")}));
  // With events: found, so the committed batch is answered with its results.
  const auto results =
      lose_commit_across_a_restart(proxy, *sink, batch_of({upsert("a", R"({"n":1})")})).get();
  REQUIRE(results.size() == 1);
  CHECK(results[0].outcome == Outcome::applied);
  CHECK(results[0].watermark == 2);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events WHERE doc_key = 'run_summary:a'") == "1");
  // Only a stream position, no event: nothing in the journal can prove it.
  DocWrite position = remove_doc("never");
  position.source_stream = "run:never";
  position.source_seq = 1;
  auto unproven = lose_commit_across_a_restart(proxy, *sink, batch_of({position}));
  try {
    unproven.get();
    FAIL("a batch without events was answered after a restart");
  } catch (const Error& e) {
    CHECK(e.code() == Code::outcome_unknown);
    CHECK(std::string(e.what()).find("the batch wrote no event to find") != std::string::npos);
  }
  CHECK(proxy.fired() == 4);
}

int main(int argc, char** argv) {
  if (std::getenv("OASYNC_PG_CTL") == nullptr || std::getenv("OASYNC_PG_DATADIR") == nullptr) {
    std::fprintf(stderr,
                 "restart tests: cannot run: they restart PostgreSQL and need the throwaway server "
                 "that scripts/with-postgres starts (OASYNC_PG_CTL, OASYNC_PG_DATADIR are not "
                 "set); an existing database given by OASYNC_DATABASE_URL is never restarted\n");
    return 1;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
