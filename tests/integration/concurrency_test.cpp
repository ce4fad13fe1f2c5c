// Many sink processes on overlapping topics and docs, with a reader checking
// commit order while they run.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "journal_check.hpp"
#include "process.hpp"
#include "temp_dir.hpp"
#include "test_db.hpp"

using namespace oasync::test;

namespace {

// NDJSON writes over 150 docs in two topics, in a random order per writer.
std::string writer_input(unsigned seed, int lines) {
  std::mt19937 rng(seed);
  std::string out;
  for (int i = 0; i < lines; ++i) {
    const int doc = static_cast<int>(rng() % 150);
    const bool notification = doc % 3 == 0;
    const char* topic = notification ? "runtime.notifications" : "runtime.run_summaries";
    const char* prefix = notification ? "notification:" : "run_summary:";
    if (rng() % 10 == 0) {
      out += fmt::format(R"({{"topic":"{}","doc_key":"{}{}","op":"delete"}})", topic, prefix, doc);
    } else {
      out += fmt::format(R"({{"topic":"{}","doc_key":"{}{}","payload":{{"writer":{},"i":{}}}}})",
                         topic, prefix, doc, seed, i);
    }
    out += "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("four sink processes on the same docs: dense, commit-ordered, consistent, no deadlock") {
  TestDatabase db;
  std::atomic<bool> done{false};
  std::vector<std::string> order_violations;
  std::atomic<long> observed{0};
  // The reader: each poll must continue exactly where the last one ended.
  std::thread reader([&] {
    auto conn = db.connect();
    std::map<std::string, long> seen{{"runtime.run_summaries", 0}, {"runtime.notifications", 0}};
    bool last_round = false;
    while (!last_round) {
      last_round = done.load();
      for (auto& [topic, last] : seen) {
        pqxx::nontransaction tx(*conn);
        const auto rows = tx.exec_params(
            "SELECT watermark FROM oasync.events WHERE topic = $1 AND watermark > $2 ORDER BY "
            "watermark",
            topic, last);
        for (const auto& row : rows) {
          const long w = row[0].as<long>();
          if (w != last + 1) {
            order_violations.push_back(fmt::format("{}: saw {} right after {}", topic, w, last));
          }
          last = w;
          ++observed;
        }
      }
    }
  });

  std::vector<std::unique_ptr<Child>> writers;
  for (unsigned i = 0; i < 4; ++i) {
    writers.push_back(std::make_unique<Child>(
        std::vector<std::string>{oasync_binary(), "--database-url", db.url(), "sink", "--input",
                                 "-", "--max-batch-writes", std::to_string(20 + i * 7)}));
  }
  std::vector<std::thread> feeders;
  for (unsigned i = 0; i < 4; ++i) {
    feeders.emplace_back([&, i] {
      writers[i]->write(writer_input(i + 1, 3000));
      writers[i]->close_stdin();
    });
  }
  for (auto& f : feeders) f.join();
  for (auto& w : writers) {
    CHECK(w->wait() == 0);
    CHECK(w->stderr_text().find("oasync sink: 3000 lines:") != std::string::npos);
  }
  done = true;
  reader.join();

  CHECK(order_violations.empty());
  for (const auto& v : order_violations) MESSAGE(v);
  CHECK(journal_violations(db).empty());
  for (const auto& v : journal_violations(db)) MESSAGE(v);
  const long events = std::stol(db.scalar("SELECT count(*) FROM oasync.events"));
  CHECK(events > 1000);
  CHECK(observed.load() == events);
}

TEST_CASE("sinks, topics apply and purge at once: one lock order, no deadlock") {
  TestDatabase db(TestDatabase::Setup::migrated);
  // Two catalogs listing the topics in different orders, neither sorted, with
  // different limits: every apply updates both topic rows.
  const auto catalog = [](int limit, bool reversed) {
    const std::string runs = fmt::format(
        "  - name: runtime.run_summaries\n    doc_key_prefix: \"run_summary:\"\n"
        "    payload_mode: inline\n    max_payload_bytes: {}\n"
        "    retention: {{max_age: 1s, min_events: 50, tombstones: 1s}}\n",
        limit);
    const std::string notes = fmt::format(
        "  - name: runtime.notifications\n    doc_key_prefix: \"notification:\"\n"
        "    payload_mode: inline\n    max_payload_bytes: {}\n"
        "    retention: {{max_age: 1s, min_events: 50, tombstones: 1s}}\n",
        limit);
    return "topics:\n" + (reversed ? notes + runs : runs + notes);
  };
  TempFile first(catalog(60000, false), "a.yaml");
  TempFile second(catalog(60001, true), "b.yaml");
  REQUIRE(run_oasync({"--database-url", db.url(), "topics", "apply", first.path}).exit_code == 0);

  std::atomic<bool> done{false};
  std::vector<std::string> failures;
  std::mutex failures_mutex;
  const auto failed = [&](const std::string& what) {
    std::lock_guard lock(failures_mutex);
    failures.push_back(what);
  };
  std::thread registry([&] {
    for (int i = 0; !done; ++i) {
      const auto r = run_oasync(
          {"--database-url", db.url(), "topics", "apply", i % 2 ? first.path : second.path});
      if (r.exit_code != 0) failed("topics apply: " + r.err);
      // Often, but not so often that no sink batch gets through: a sink gives
      // up after SinkOptions::registry_retries registry changes in one batch.
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
    }
  });
  std::thread retention([&] {
    while (!done) {
      const auto r = run_oasync({"--database-url", db.url(), "purge", "--older-than", "0s",
                                 "--keep-last", "100", "--batch-size", "50"});
      if (r.exit_code != 0) failed("purge: " + r.err);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::vector<std::unique_ptr<Child>> writers;
  for (unsigned i = 0; i < 4; ++i) {
    writers.push_back(std::make_unique<Child>(
        std::vector<std::string>{oasync_binary(), "--database-url", db.url(), "sink", "--input",
                                 "-", "--max-batch-writes", std::to_string(10 + i * 5)}));
  }
  std::vector<std::thread> feeders;
  for (unsigned i = 0; i < 4; ++i) {
    feeders.emplace_back([&, i] {
      writers[i]->write(writer_input(i + 11, 3000));
      writers[i]->close_stdin();
    });
  }
  for (auto& f : feeders) f.join();
  for (auto& w : writers) {
    CHECK(w->wait() == 0);
    const std::string err = w->stderr_text();
    INFO(err);
    CHECK(err.find("deadlock") == std::string::npos);
    CHECK(err.find("oasync sink: 3000 lines:") != std::string::npos);
  }
  done = true;
  registry.join();
  retention.join();
  for (const auto& f : failures) MESSAGE(f);
  CHECK(failures.empty());
  const auto verify = run_oasync({"--database-url", db.url(), "verify"});
  CHECK_MESSAGE(verify.exit_code == 0, verify.out);
}
