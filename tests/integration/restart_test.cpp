// Postgres restarted (immediate mode: a crash) under a running sink. This
// binary runs alone (ctest RUN_SERIAL): the restart would break other tests.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "frames.hpp"
#include "journal_check.hpp"
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
