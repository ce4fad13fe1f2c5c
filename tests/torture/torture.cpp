// The torture run of scripts/torture: everything that can go wrong, at once,
// against a throwaway Postgres, then a check that nothing was lost, doubled,
// reordered or left partial.
//
// While it runs:
//   - writer threads drive `oasync sink --stdio` processes with random batches
//     over a few shared docs: upserts, deletes, stale source seqs, expected-
//     version conflicts, invalid writes, malformed frames; each batch carries a
//     marker write (a new doc per attempt) that shows whether it committed;
//   - writers SIGKILL their own sink at random moments, then resend the batch
//     (a duplicate if it had committed) or abandon it;
//   - a fault thread terminates random backends and restarts Postgres with
//     `pg_ctl restart -m immediate`;
//   - a purge thread runs `oasync purge` every few seconds;
//   - consumer threads follow each topic with `oasync tail --follow`, are
//     SIGKILLed at random and resume from their last printed watermark.
// Afterwards it checks the invariants listed at check_journal() and
// check_consumers(), runs `oasync verify`, prints the counts, and exits 1 if
// there was any violation.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "frames.hpp"
#include "process.hpp"
#include "test_db.hpp"

using namespace oasync;
using namespace oasync::test;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------- settings

struct Settings {
  double seconds = 40;
  int writers = 4;
  int consumers_per_topic = 2;
  int docs = 24;  // per topic: few, so that writers collide
  std::uint64_t seed = 0;
  // Damage the journal after the run (delete the newest event of a topic) and
  // succeed only if the checks notice: shows the checker can fail.
  bool sabotage = false;
};

constexpr int kTopics = 3;

std::string data_topic(int t) {
  return fmt::format("torture.t{}", t);
}
std::string data_prefix(int t) {
  return fmt::format("t{}:", t);
}
std::string marker_topic(int writer) {
  return fmt::format("torture.batches.w{}", writer);
}
// Topic index of writer w's marker topic (data topics are 0..kTopics-1).
int marker_index(int writer) {
  return kTopics + writer;
}

// The catalog: small payload limit (so "too large" is cheap to provoke), no
// tombstone retention (purged tombstones would restart versions).
std::string catalog(int writers) {
  std::string text = "topics:\n";
  const auto add = [&](const std::string& name, const std::string& prefix) {
    text += fmt::format(
        "  - name: {}\n    doc_key_prefix: \"{}\"\n    payload_mode: inline\n"
        "    max_payload_bytes: 4096\n",
        name, prefix);
  };
  for (int t = 0; t < kTopics; ++t) add(data_topic(t), data_prefix(t));
  for (int w = 0; w < writers; ++w) add(marker_topic(w), "batch:");
  return text;
}

// ---------------------------------------------------------------- report

struct Counters {
  std::atomic<std::uint64_t> batches{0}, attempts{0}, resent_after_fault{0}, resent_after_ack{0},
      abandoned{0}, writes_sent{0}, malformed_frames{0}, error_answers{0};
  std::atomic<std::uint64_t> outcomes[5] = {};  // by oasync::Outcome
  std::atomic<std::uint64_t> sink_kills{0}, terminations{0}, restarts{0}, purges{0},
      purge_failures{0}, consumer_kills{0}, consumer_exits{0}, stale_cursors{0}, consumer_events{0};
};

class Violations {
 public:
  void add(std::string what) {
    std::lock_guard lock(mutex_);
    ++count_;
    if (lines_.size() < 50) lines_.push_back(std::move(what));
  }
  std::uint64_t count() const {
    std::lock_guard lock(mutex_);
    return count_;
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mutex_);
    return lines_;
  }

 private:
  mutable std::mutex mutex_;
  std::uint64_t count_ = 0;
  std::vector<std::string> lines_;
};

// ---------------------------------------------------------------- ledger

// What the sinks acknowledged, and what was sent without an acknowledgement.
// An attempt is one send of a batch: key = batch * 1000 + attempt number.
enum class Invalid { none, wrong_prefix, unknown_topic, not_object, too_large, empty_key };

struct Sent {
  int topic = 0;  // data topic index, or marker_index(writer)
  int doc = 0;    // doc number within the topic; -1 for the marker
  Op op = Op::upsert;
  Invalid invalid = Invalid::none;
  std::optional<std::int64_t> expected;
  std::int64_t seq = 0;  // source seq (stream "wN" of writer N)
};

// The rejection an invalid write must get.
RejectReason reason_for(Invalid invalid) {
  switch (invalid) {
    case Invalid::none:
      return RejectReason::none;
    case Invalid::wrong_prefix:
      return RejectReason::key_prefix_mismatch;
    case Invalid::unknown_topic:
      return RejectReason::topic_not_registered;
    case Invalid::not_object:
      return RejectReason::payload_not_object;
    case Invalid::too_large:
      return RejectReason::payload_too_large;
    case Invalid::empty_key:
      return RejectReason::invalid_key;
  }
  return RejectReason::none;
}

struct Applied {
  std::int64_t attempt = 0;
  std::int32_t doc = 0;  // -1: marker
  std::int16_t index = 0;
  Op op = Op::upsert;
  std::int64_t version = 0;
};

std::int64_t position_key(int topic, std::int64_t watermark) {
  return (std::int64_t{topic} << 44) | watermark;
}

struct Ledger {
  std::mutex mutex;
  // (topic, watermark) of every write acknowledged as applied.
  std::unordered_map<std::int64_t, Applied> applied;
  // Attempts answered with per-write results.
  std::unordered_set<std::int64_t> acked;
  // Attempts sent but never answered with results (killed sink, error answer).
  std::unordered_map<std::int64_t, std::vector<Sent>> unacked;
};

// ---------------------------------------------------------------- database

// Runs one query with one parameter on a fresh connection; nullopt when the
// server is away (restarting, or the backend was terminated).
std::optional<pqxx::result> try_query(const std::string& url, const std::string& sql,
                                      const std::string& param = {}) {
  try {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    return param.empty() ? tx.exec(sql) : tx.exec_params(sql, param);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::int64_t floor_of(const std::string& url, const std::string& topic,
                      const std::atomic<bool>& give_up) {
  while (!give_up) {
    if (auto r =
            try_query(url, "SELECT purged_through FROM oasync.topics WHERE topic = $1", topic)) {
      return (*r)[0][0].as<std::int64_t>();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return -1;
}

// ---------------------------------------------------------------- writers

// A batch and where its attempts stand.
struct Job {
  std::int64_t batch = 0;
  std::vector<Sent> plan;  // the writes, then the marker
  int first_attempt = 1;
  int attempt = 1;
  std::int64_t key() const { return batch * 1000 + attempt; }
};

class Writer {
 public:
  Writer(int id, const Settings& settings, const std::string& url, Counters& counters,
         Violations& violations, Ledger& ledger)
      : id_(id),
        settings_(settings),
        url_(url),
        counters_(counters),
        violations_(violations),
        ledger_(ledger),
        rng_(settings.seed * 1000 + static_cast<std::uint64_t>(id)),
        known_(static_cast<std::size_t>(kTopics * settings.docs), 0) {}

  void run(const std::atomic<bool>& stop) {
    start_sink();
    while (!stop) {
      // Mostly one batch at a time; sometimes several frames back to back,
      // which the sink may commit together (group commit).
      std::vector<Job> jobs(static_cast<std::size_t>(chance(0.2) ? uniform(2, 4) : 1));
      for (Job& job : jobs) job = new_job();
      std::vector<Job> answered;
      drive(std::move(jobs), answered, stop);
      // Now and then the producer resends a batch it already had answered,
      // as a projector does after losing its own bookkeeping.
      std::vector<Job> again;
      for (Job job : answered) {
        if (!chance(0.03)) continue;
        ++counters_.resent_after_ack;
        job.first_attempt = job.attempt = 500;
        again.push_back(std::move(job));
      }
      std::vector<Job> ignored;
      drive(std::move(again), ignored, stop);
      std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 3000)));
    }
    sink_->close_stdin();
    const int code = sink_->wait();
    if (code != 0) {
      violations_.add(fmt::format("writer {}: sink exited with {} on end of input: {}", id_, code,
                                  sink_->stderr_text()));
    }
  }

 private:
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  std::int64_t uniform(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng_);
  }

  void start_sink() {
    sink_ = std::make_unique<Child>(
        std::vector<std::string>{oasync_binary(), "--database-url", url_, "sink", "--stdio"});
  }

  // A new batch: its writes, then its marker.
  Job new_job() {
    ++counters_.batches;
    Job job;
    job.batch = std::int64_t{id_ + 1} * 1'000'000'000 + ++batches_;
    std::vector<Sent>& plan = job.plan;
    const int n = static_cast<int>(uniform(1, 12));
    for (int i = 0; i < n; ++i) {
      Sent s;
      s.topic = static_cast<int>(uniform(0, kTopics - 1));
      s.doc = static_cast<int>(uniform(0, settings_.docs - 1));
      s.op = chance(0.1) ? Op::delete_ : Op::upsert;
      if (chance(0.04)) s.invalid = static_cast<Invalid>(uniform(1, 5));
      if (s.invalid == Invalid::not_object || s.invalid == Invalid::too_large) s.op = Op::upsert;
      if (chance(0.1)) s.expected = known_[slot(s)];
      // Now and then a stale seq, as from a producer replaying old events.
      s.seq = chance(0.05) && next_seq_ > 1 ? uniform(1, next_seq_ - 1) : next_seq_++;
      plan.push_back(s);
    }
    Sent marker;
    marker.topic = marker_index(id_);
    marker.doc = -1;
    marker.expected = 0;
    plan.push_back(marker);
    return job;
  }

  std::size_t slot(const Sent& s) const {
    return static_cast<std::size_t>(s.topic * settings_.docs + s.doc);
  }

  // The job's current attempt as a batch; the payloads name their attempt.
  Batch encode(const Job& job) const {
    const std::int64_t batch = job.batch;
    const int attempt = job.attempt;
    const std::vector<Sent>& plan = job.plan;
    Batch b;
    for (std::size_t i = 0; i + 1 < plan.size(); ++i) {
      const Sent& s = plan[i];
      DocWrite w;
      w.topic = data_topic(s.topic);
      w.doc_key = data_prefix(s.topic) + std::to_string(s.doc);
      w.op = s.op;
      w.source_stream = fmt::format("w{}", id_);
      w.source_seq = s.seq;
      w.expected_version = s.expected;
      // The payload names the write: batch, attempt, index, stream and seq.
      w.payload =
          fmt::format(R"({{"a":{},"b":{},"i":{},"q":{},"s":"w{}","pad":"{}"}})", attempt, batch, i,
                      s.seq, id_, std::string(static_cast<std::size_t>((batch + i) % 97), 'x'));
      switch (s.invalid) {
        case Invalid::none:
          break;
        case Invalid::wrong_prefix:
          w.doc_key = "nope:" + std::to_string(s.doc);
          break;
        case Invalid::unknown_topic:
          w.topic = "torture.unregistered";
          break;
        case Invalid::not_object:
          w.payload = "[1,2]";
          break;
        case Invalid::too_large:
          w.payload = R"({"big":")" + std::string(5000, 'y') + "\"}";
          break;
        case Invalid::empty_key:
          w.doc_key.clear();
          break;
      }
      b.writes.push_back(std::move(w));
    }
    // The marker: a new doc per attempt, so its event shows the commit.
    DocWrite m;
    m.topic = marker_topic(id_);
    m.doc_key = fmt::format("batch:{}.{}", batch, attempt);
    m.payload = fmt::format(R"({{"a":{},"b":{}}})", attempt, batch);
    m.expected_version = 0;
    b.writes.push_back(std::move(m));
    return b;
  }

  // Sends the jobs' attempts until each is answered (moved to `answered`)
  // or abandoned.
  void drive(std::vector<Job> jobs, std::vector<Job>& answered, const std::atomic<bool>& stop) {
    while (!jobs.empty()) {
      jobs = send_round(std::move(jobs), answered, stop);
      if (!jobs.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // One attempt of each job, as frames back to back; returns the jobs that
  // need another attempt.
  std::vector<Job> send_round(std::vector<Job> jobs, std::vector<Job>& answered,
                              const std::atomic<bool>& stop) {
    std::vector<Job> live;
    for (Job& job : jobs) {
      if (job.attempt - job.first_attempt > 300 || (stop && job.attempt > job.first_attempt)) {
        ++counters_.abandoned;
      } else {
        live.push_back(std::move(job));
      }
    }
    if (live.empty()) return {};
    if (chance(0.01)) send_malformed();
    bool sent = true;
    for (const Job& job : live) {
      ++counters_.attempts;
      counters_.writes_sent += job.plan.size();
      {
        std::lock_guard lock(ledger_.mutex);
        ledger_.unacked.emplace(job.key(), job.plan);
      }
      sent = sent && send_batch(*sink_, encode(job));
    }
    std::vector<Job> retry;
    const auto again = [&](Job& job) {
      ++job.attempt;
      ++counters_.resent_after_fault;
      retry.push_back(std::move(job));
    };
    if (!sent || chance(0.02)) {
      // SIGKILL at a random moment: before, during or after the commit.
      std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 20000)));
      restart_sink();
      for (Job& job : live) {
        if (chance(0.3)) {
          ++counters_.abandoned;
        } else {
          again(job);
        }
      }
      return retry;
    }
    bool lost = false;
    for (Job& job : live) {
      DecodedResult answer;
      if (lost || !read_answer(*sink_, answer, 120000)) {
        if (!lost) {
          violations_.add(fmt::format("writer {}: the sink gave no answer within 120 s: {}", id_,
                                      sink_->stderr_text()));
          restart_sink();
          lost = true;
        }
        again(job);
      } else if (answer.error_code) {
        ++counters_.error_answers;
        again(job);
      } else {
        record(job.key(), job.plan, answer);
        answered.push_back(std::move(job));
      }
    }
    return retry;
  }

  void restart_sink() {
    sink_->kill(SIGKILL);
    sink_->wait();
    ++counters_.sink_kills;
    start_sink();
  }

  void send_malformed() {
    ++counters_.malformed_frames;
    DecodedResult answer;
    if (!sink_->write(encode_frame("\x0a\xff\xff\xff\xff\x0f garbage")) ||
        !read_answer(*sink_, answer)) {
      return;  // the sink died (a fault); the batch send notices
    }
    if (answer.error_code != "malformed_frame") {
      violations_.add(fmt::format("writer {}: a malformed frame was answered with \"{}\"", id_,
                                  answer.error_code.value_or("results")));
    }
  }

  // Checks the answer against what was sent and records it in the ledger.
  void record(std::int64_t key, const std::vector<Sent>& plan, const DecodedResult& answer) {
    if (answer.results.size() != plan.size()) {
      violations_.add(fmt::format("writer {}: {} results for {} writes", id_, answer.results.size(),
                                  plan.size()));
      return;
    }
    std::lock_guard lock(ledger_.mutex);
    ledger_.unacked.erase(key);
    ledger_.acked.insert(key);
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const Sent& s = plan[i];
      const WriteResult& r = answer.results[i];
      ++counters_.outcomes[static_cast<int>(r.outcome)];
      const std::string where = fmt::format("writer {} attempt {} write {}", id_, key, i);
      const RejectReason want = reason_for(s.invalid);
      if (s.invalid != Invalid::none) {
        if (r.outcome != Outcome::rejected || r.reason != want) {
          violations_.add(fmt::format("{}: invalid write answered {} {} (want rejected {})", where,
                                      to_string(r.outcome), to_string(r.reason), to_string(want)));
        }
        continue;
      }
      if (r.outcome == Outcome::rejected) {
        violations_.add(
            fmt::format("{}: valid write rejected: {} {}", where, to_string(r.reason), r.detail));
        continue;
      }
      if (r.outcome == Outcome::conflict && !s.expected) {
        violations_.add(where + ": conflict without an expected version");
      }
      if (s.doc < 0 && (r.outcome != Outcome::applied || r.doc_version != 1)) {
        violations_.add(fmt::format("{}: marker answered {} version {}", where,
                                    to_string(r.outcome), r.doc_version));
      }
      if (r.outcome == Outcome::applied) {
        if (s.expected && r.doc_version != *s.expected + 1) {
          violations_.add(fmt::format("{}: expected version {} applied as version {}", where,
                                      *s.expected, r.doc_version));
        }
        if (r.watermark <= 0) violations_.add(where + ": applied without a watermark");
        const auto [it, inserted] = ledger_.applied.emplace(
            position_key(s.topic, r.watermark),
            Applied{key, s.doc, static_cast<std::int16_t>(i), s.op, r.doc_version});
        if (!inserted) {
          violations_.add(fmt::format("{}: watermark {} acknowledged twice", where, r.watermark));
        }
      }
      if (s.doc >= 0) known_[slot(s)] = r.doc_version;
    }
  }

  int id_;
  const Settings& settings_;
  std::string url_;
  Counters& counters_;
  Violations& violations_;
  Ledger& ledger_;
  std::mt19937_64 rng_;
  std::unique_ptr<Child> sink_;
  std::vector<std::int64_t> known_;  // last version this writer saw, per doc
  std::int64_t next_seq_ = 1;
  std::int64_t batches_ = 0;
};

// ---------------------------------------------------------------- consumers

// One printed event, kept compactly.
struct Seen {
  std::int64_t watermark;
  std::int32_t doc;
  std::int64_t version;
};

int doc_number(const std::string& key, int topic) {
  const std::string prefix = data_prefix(topic);
  if (key.rfind(prefix, 0) != 0) return -1;
  try {
    return std::stoi(key.substr(prefix.size()));
  } catch (const std::exception&) {
    return -1;
  }
}

class Consumer {
 public:
  Consumer(int topic, int id, const Settings& settings, const std::string& url, Counters& counters,
           Violations& violations)
      : topic_(topic),
        id_(id),
        url_(url),
        counters_(counters),
        violations_(violations),
        rng_(settings.seed * 7777 + static_cast<std::uint64_t>(topic * 100 + id)) {}

  // Follows, is killed, resumes; until `stop`, then until it printed `target`
  // (set once the writers stopped) or `give_up`.
  void run(const std::atomic<bool>& stop, const std::atomic<std::int64_t>& target,
           const std::atomic<bool>& give_up) {
    while (!give_up) {
      const bool final_phase = stop.load();
      if (final_phase && target >= 0 && last_ >= target) return;
      const std::int64_t floor_before = floor_of(url_, data_topic(topic_), give_up);
      Child tail({oasync_binary(), "--database-url", url_, "tail", data_topic(topic_), "--follow",
                  "--after", std::to_string(last_), "--format", "ndjson", "--poll-ms", "200",
                  "--page-size", "500"});
      const auto deadline = Clock::now() + std::chrono::milliseconds(
                                               std::uniform_int_distribution<int>(300, 4000)(rng_));
      bool first = true;
      bool stale = false;
      std::string line;
      while (!give_up && (final_phase || (!stop && Clock::now() < deadline))) {
        if (final_phase && target >= 0 && last_ >= target) break;
        if (!tail.read_line(line, 100)) {
          if (tail.at_eof()) break;
          continue;
        }
        const json message = json::parse(line, nullptr, false);
        if (message.is_discarded()) {
          violations_.add(fmt::format("{}: unparsable line {}", name(), line.substr(0, 200)));
          continue;
        }
        if (message.contains("heartbeat")) continue;
        if (message.contains("error")) {
          stale = true;
          on_stale(message["error"]);
          break;
        }
        if (!message.contains("watermark") || !message.contains("doc_key")) {
          violations_.add(fmt::format("{}: unexpected line {}", name(), line.substr(0, 200)));
          continue;
        }
        const std::int64_t w = message["watermark"].get<std::int64_t>();
        if (first && last_ < floor_before) {
          violations_.add(fmt::format(
              "{}: resumed after {} below the floor {} and was not told the cursor is stale",
              name(), last_, floor_before));
        }
        first = false;
        if (w != last_ + 1) {
          violations_.add(fmt::format("{}: printed watermark {} right after {}", name(), w, last_));
        }
        seen_.push_back(Seen{w, doc_number(message["doc_key"].get<std::string>(), topic_),
                             message["doc_version"].get<std::int64_t>()});
        last_ = w;
        ++counters_.consumer_events;
      }
      if (!tail.at_eof()) {
        tail.kill(SIGKILL);
        tail.wait();
        if (!final_phase) ++counters_.consumer_kills;
      } else {
        const int code = tail.wait();
        if (!(stale && code == 3)) {
          ++counters_.consumer_exits;
          last_exit_ = fmt::format("exit {}: {}", code, tail.stderr_text());
        }
      }
      if (!stop) {
        std::this_thread::sleep_for(
            std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 2500)(rng_)));
      }
    }
  }

  int topic() const { return topic_; }
  std::int64_t last() const { return last_; }
  const std::vector<Seen>& seen() const { return seen_; }
  std::string name() const { return fmt::format("consumer {} of {}", id_, data_topic(topic_)); }
  const std::string& last_exit() const { return last_exit_; }

 private:
  // The rule: a cursor is stale exactly when it is below the floor.
  void on_stale(const json& error) {
    ++counters_.stale_cursors;
    const json& s = error.value("stale", json::object());
    const std::int64_t floor = s.value("floor", std::int64_t{-1});
    const std::string reason = s.value("reason", std::string());
    if (reason != "retention_floor_breach" || !(last_ < floor)) {
      violations_.add(
          fmt::format("{}: cursor {} reported stale ({}, floor {})", name(), last_, reason, floor));
    }
    // Resync: a client takes a snapshot; here the consumer goes on from the floor.
    if (floor > last_) last_ = floor;
  }

  int topic_;
  int id_;
  std::string url_;
  Counters& counters_;
  Violations& violations_;
  std::mt19937_64 rng_;
  std::int64_t last_ = 0;
  std::vector<Seen> seen_;
  std::string last_exit_;
};

// ---------------------------------------------------------------- faults

void run_faults(const Settings& settings, const std::string& admin, const std::string& dbname,
                Counters& counters, Violations& violations, const std::atomic<bool>& stop) {
  std::mt19937_64 rng(settings.seed * 31 + 5);
  const auto now = Clock::now;
  const auto seconds = [&](double lo, double hi) {
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(std::uniform_real_distribution<double>(lo, hi)(rng)));
  };
  // Restarts: in a short run two, at about a third and two thirds; in a long
  // one every 45 to 90 seconds.
  const bool short_run = settings.seconds < 120;
  auto next_restart = now() + (short_run ? std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(settings.seconds / 3))
                                         : seconds(45, 90));
  auto next_terminate = now() + seconds(0.3, 1.5);
  const char* pg_ctl = std::getenv("OASYNC_PG_CTL");
  const char* datadir = std::getenv("OASYNC_PG_DATADIR");
  while (!stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (now() >= next_terminate) {
      next_terminate = now() + seconds(0.3, 1.5);
      if (auto r = try_query(admin,
                             "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                             "(SELECT pid FROM pg_stat_activity WHERE datname = $1 AND "
                             "backend_type = 'client backend' AND pid <> pg_backend_pid() "
                             "ORDER BY random() LIMIT 1) AS victim",
                             dbname)) {
        counters.terminations += (*r)[0][0].as<std::uint64_t>();
      }
    }
    if (now() >= next_restart) {
      next_restart = now() + (short_run ? std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(settings.seconds / 3))
                                        : seconds(45, 90));
      const std::string command =
          fmt::format("{} restart -m immediate -w -t 120 -D {} >/dev/null 2>&1", pg_ctl, datadir);
      if (std::system(command.c_str()) == 0) {
        ++counters.restarts;
      } else {
        violations.add("pg_ctl restart -m immediate failed: " + command);
      }
    }
  }
}

void run_purges(const Settings& settings, const std::string& url, Counters& counters,
                const std::atomic<bool>& stop) {
  std::mt19937_64 rng(settings.seed * 17 + 3);
  while (!stop) {
    const int pause_ms = std::uniform_int_distribution<int>(1000, 3000)(rng);
    for (int slept = 0; slept < pause_ms && !stop; slept += 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (stop) break;
    std::vector<std::string> args{"--database-url", url,  "purge",        "--older-than", "2s",
                                  "--keep-last",    "50", "--batch-size", "500"};
    for (int t = 0; t < kTopics; ++t) {
      args.push_back("--topic");
      args.push_back(data_topic(t));
    }
    const ProcessResult r = run_oasync(args);
    ++(r.exit_code == 0 ? counters.purges : counters.purge_failures);
  }
}

// ---------------------------------------------------------------- checks

struct Event {
  std::string doc_key;
  std::int64_t version = 0;
  Op op = Op::upsert;
  std::int64_t attempt = -1;  // from the payload; -1 for deletes
  int index = -1;
  std::string stream;
  std::int64_t seq = 0;
  std::int64_t committed_us = 0;
};

struct Journal {
  // Per topic index: watermark -> event (data and marker topics).
  std::vector<std::map<std::int64_t, Event>> events;
  std::vector<std::int64_t> floors, heads;
};

Journal load_journal(const std::string& url, int writers) {
  Journal j;
  const int topics = kTopics + writers;
  j.events.resize(static_cast<std::size_t>(topics));
  j.floors.resize(static_cast<std::size_t>(topics));
  j.heads.resize(static_cast<std::size_t>(topics));
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  for (int t = 0; t < topics; ++t) {
    const std::string topic = t < kTopics ? data_topic(t) : marker_topic(t - kTopics);
    const pqxx::row pos =
        tx.exec_params1("SELECT purged_through, head FROM oasync.topics WHERE topic = $1", topic);
    j.floors[static_cast<std::size_t>(t)] = pos[0].as<std::int64_t>();
    j.heads[static_cast<std::size_t>(t)] = pos[1].as<std::int64_t>();
    const pqxx::result rows = tx.exec_params(
        "SELECT watermark, doc_key, doc_version, op, (payload->>'b')::bigint * 1000 + "
        "(payload->>'a')::bigint, (payload->>'i')::int, payload->>'s', (payload->>'q')::bigint, "
        "(extract(epoch FROM committed_at) * 1000000)::bigint FROM oasync.events WHERE topic = $1",
        topic);
    auto& out = j.events[static_cast<std::size_t>(t)];
    for (const auto& row : rows) {
      Event e;
      e.doc_key = row[1].as<std::string>();
      e.version = row[2].as<std::int64_t>();
      e.op = row[3].as<std::string>() == "delete" ? Op::delete_ : Op::upsert;
      if (!row[4].is_null()) e.attempt = row[4].as<std::int64_t>();
      if (!row[5].is_null()) e.index = row[5].as<int>();
      if (!row[6].is_null()) e.stream = row[6].as<std::string>();
      if (!row[7].is_null()) e.seq = row[7].as<std::int64_t>();
      e.committed_us = row[8].as<std::int64_t>();
      out.emplace(row[0].as<std::int64_t>(), std::move(e));
    }
  }
  tx.commit();
  return j;
}

std::string doc_key_of(int topic, int doc, std::int64_t attempt) {
  if (doc < 0) return fmt::format("batch:{}.{}", attempt / 1000, attempt % 1000);
  return data_prefix(topic) + std::to_string(doc);
}

// Invariants of the journal against the ledger:
//  1. every write acknowledged as applied is present at its acknowledged
//     watermark with its doc, version and op (unless purge removed it);
//  2. every event of a data topic comes from an attempt whose marker committed
//     in the same transaction (all or nothing), and an answered attempt's
//     events are exactly the writes answered as applied;
//  3. a delete event no answer accounts for belongs to an unanswered attempt
//     that committed in its transaction and deleted that doc;
//  4. per doc, no two consecutive upserts of one source stream have a
//     non-increasing seq (a duplicate was never applied).
void check_journal(const Journal& j, const Ledger& ledger, Violations& violations) {
  for (const auto& [position, a] : ledger.applied) {
    const int t = static_cast<int>(position >> 44);
    const std::int64_t w = position & ((std::int64_t{1} << 44) - 1);
    if (w <= j.floors[static_cast<std::size_t>(t)]) continue;
    const auto& events = j.events[static_cast<std::size_t>(t)];
    const auto it = events.find(w);
    const std::string key = doc_key_of(t, a.doc, a.attempt);
    if (it == events.end()) {
      violations.add(
          fmt::format("acknowledged write {} v{} at watermark {} is missing", key, a.version, w));
      continue;
    }
    const Event& e = it->second;
    if (e.doc_key != key || e.version != a.version || e.op != a.op ||
        (a.op == Op::upsert && (e.attempt != a.attempt || (a.doc >= 0 && e.index != a.index)))) {
      violations.add(fmt::format(
          "watermark {}: acknowledged {} v{} (attempt {} write {}), journal has {} v{} (attempt "
          "{} write {})",
          w, key, a.version, a.attempt, a.index, e.doc_key, e.version, e.attempt, e.index));
    }
  }
  // Markers: attempt -> commit time.
  std::unordered_map<std::int64_t, std::int64_t> marker_commit;
  std::unordered_multimap<std::int64_t, std::int64_t> attempts_at;  // commit time -> attempt
  for (std::size_t t = kTopics; t < j.events.size(); ++t) {
    for (const auto& [w, e] : j.events[t]) {
      marker_commit[e.attempt] = e.committed_us;
      attempts_at.emplace(e.committed_us, e.attempt);
    }
  }
  std::unordered_set<std::int64_t> applied_writes;  // attempt * 64 + index
  for (const auto& [position, a] : ledger.applied) applied_writes.insert(a.attempt * 64 + a.index);

  for (int t = 0; t < kTopics; ++t) {
    std::map<std::string, std::map<std::int64_t, const Event*>> chains;
    for (const auto& [w, e] : j.events[static_cast<std::size_t>(t)]) {
      chains[e.doc_key][e.version] = &e;
      if (e.op == Op::upsert) {
        const auto m = marker_commit.find(e.attempt);
        if (m == marker_commit.end() || m->second != e.committed_us) {
          violations.add(fmt::format("{} watermark {}: attempt {} has no marker in its transaction",
                                     data_topic(t), w, e.attempt));
        }
        if (ledger.acked.count(e.attempt) != 0 &&
            applied_writes.count(e.attempt * 64 + e.index) == 0) {
          violations.add(
              fmt::format("{} watermark {}: write {} of answered attempt {} is in the "
                          "journal but was not answered as applied",
                          data_topic(t), w, e.index, e.attempt));
        }
        continue;
      }
      if (ledger.applied.count(position_key(t, w)) != 0) continue;
      bool explained = false;
      const auto [from, to] = attempts_at.equal_range(e.committed_us);
      for (auto it = from; it != to && !explained; ++it) {
        const auto u = ledger.unacked.find(it->second);
        if (u == ledger.unacked.end()) continue;
        for (const Sent& s : u->second) {
          if (s.topic == t && s.op == Op::delete_ && s.invalid == Invalid::none &&
              data_prefix(t) + std::to_string(s.doc) == e.doc_key) {
            explained = true;
          }
        }
      }
      if (!explained) {
        violations.add(fmt::format("{} watermark {}: delete of {} v{} that no write accounts for",
                                   data_topic(t), w, e.doc_key, e.version));
      }
    }
    for (const auto& [key, chain] : chains) {
      const Event* previous = nullptr;
      for (const auto& [version, e] : chain) {
        if (previous != nullptr && previous->version + 1 == version && previous->op == Op::upsert &&
            e->op == Op::upsert && previous->stream == e->stream && e->seq <= previous->seq) {
          violations.add(fmt::format("{} {} v{}: seq {} of stream {} applied after seq {}",
                                     data_topic(t), key, version, e->seq, e->stream,
                                     previous->seq));
        }
        previous = e;
      }
    }
  }
}

// Every consumer printed every retained event exactly once, in order, as the
// journal has it; the events it printed that purge removed since agree with
// what the sinks acknowledged.
void check_consumers(const Journal& j, const Ledger& ledger,
                     const std::vector<std::unique_ptr<Consumer>>& consumers,
                     Violations& violations) {
  for (const auto& c : consumers) {
    const auto t = static_cast<std::size_t>(c->topic());
    const std::int64_t floor = j.floors[t];
    const std::int64_t head = j.heads[t];
    std::int64_t retained = 0;
    std::int64_t mismatches = 0;
    for (const Seen& s : c->seen()) {
      const std::string key = data_prefix(c->topic()) + std::to_string(s.doc);
      if (s.watermark > floor) {
        ++retained;
        const auto it = j.events[t].find(s.watermark);
        if (it == j.events[t].end() || it->second.doc_key != key ||
            it->second.version != s.version) {
          ++mismatches;
        }
      } else if (const auto a = ledger.applied.find(position_key(c->topic(), s.watermark));
                 a != ledger.applied.end() &&
                 (a->second.doc != s.doc || a->second.version != s.version)) {
        ++mismatches;
      }
    }
    if (retained != head - floor) {
      violations.add(fmt::format("{}: printed {} of the {} retained events {}..{} (last {}; {})",
                                 c->name(), retained, head - floor, floor + 1, head, c->last(),
                                 c->last_exit()));
    }
    if (mismatches != 0) {
      violations.add(
          fmt::format("{}: {} printed events disagree with the journal", c->name(), mismatches));
    }
  }
}

// Waits until the server answers again (after a restart), up to two minutes.
bool server_up(const std::string& url) {
  for (int i = 0; i < 1200; ++i) {
    if (try_query(url, "SELECT 1")) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

int usage(const char* message) {
  std::fprintf(stderr,
               "oasync_torture: %s\n"
               "usage: oasync_torture [--seconds N] [--writers N] [--consumers N] [--seed N] "
               "[--sabotage]\n",
               message);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings;
  settings.seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--sabotage") {
      settings.sabotage = true;
      continue;
    }
    if (i + 1 >= argc) return usage(("missing value after " + arg).c_str());
    const std::string value = argv[++i];
    try {
      if (arg == "--seconds") {
        settings.seconds = std::stod(value);
      } else if (arg == "--writers") {
        settings.writers = std::stoi(value);
      } else if (arg == "--consumers") {
        settings.consumers_per_topic = std::stoi(value);
      } else if (arg == "--seed") {
        settings.seed = std::stoull(value);
      } else {
        return usage(("unknown option " + arg).c_str());
      }
    } catch (const std::exception&) {
      return usage(("bad value \"" + value + "\" for " + arg).c_str());
    }
  }
  if (settings.seconds <= 0 || settings.writers < 1 || settings.writers > 16 ||
      settings.consumers_per_topic < 1 || settings.consumers_per_topic > 8) {
    return usage("--seconds must be positive, --writers 1..16, --consumers 1..8");
  }
  if (std::getenv("OASYNC_PG_CTL") == nullptr || std::getenv("OASYNC_PG_DATADIR") == nullptr) {
    std::fprintf(stderr,
                 "SKIPPED: the torture run restarts PostgreSQL and needs the throwaway server "
                 "that scripts/with-postgres starts (OASYNC_PG_CTL, OASYNC_PG_DATADIR).\n");
    return 77;
  }

  TestDatabase db(TestDatabase::Setup::migrated);
  {
    const std::string path = fmt::format("/tmp/oasync-torture-{}.yaml", getpid());
    std::ofstream(path) << catalog(settings.writers);
    const ProcessResult applied = run_oasync({"--database-url", db.url(), "topics", "apply", path});
    std::remove(path.c_str());
    if (applied.exit_code != 0) {
      std::fprintf(stderr, "oasync_torture: topics apply failed: %s\n", applied.err.c_str());
      return 1;
    }
  }
  std::printf(
      "torture: %.0f s, %d writers, %d consumers per topic, %d topics x %d docs, seed %llu\n",
      settings.seconds, settings.writers, settings.consumers_per_topic, kTopics, settings.docs,
      static_cast<unsigned long long>(settings.seed));
  std::fflush(stdout);

  Counters counters;
  Violations violations;
  Ledger ledger;
  std::atomic<bool> stop_faults{false}, stop_writers{false}, give_up{false};
  std::vector<std::atomic<std::int64_t>> targets(kTopics);
  for (auto& target : targets) target = -1;

  std::vector<std::unique_ptr<Writer>> writers;
  std::vector<std::unique_ptr<Consumer>> consumers;
  std::vector<std::thread> writer_threads, consumer_threads;
  for (int w = 0; w < settings.writers; ++w) {
    writers.push_back(
        std::make_unique<Writer>(w, settings, db.url(), counters, violations, ledger));
    writer_threads.emplace_back(
        [&, w] { writers[static_cast<std::size_t>(w)]->run(stop_writers); });
  }
  for (int t = 0; t < kTopics; ++t) {
    for (int c = 0; c < settings.consumers_per_topic; ++c) {
      consumers.push_back(
          std::make_unique<Consumer>(t, c, settings, db.url(), counters, violations));
    }
  }
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    consumer_threads.emplace_back([&, i] {
      consumers[i]->run(stop_writers, targets[static_cast<std::size_t>(consumers[i]->topic())],
                        give_up);
    });
  }
  std::thread faults(
      [&] { run_faults(settings, admin_url(), db.name(), counters, violations, stop_faults); });
  std::thread purges([&] { run_purges(settings, db.url(), counters, stop_faults); });

  const auto started = Clock::now();
  const auto end = started + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(settings.seconds));
  auto next_progress = started + std::chrono::seconds(60);
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (Clock::now() >= next_progress) {
      next_progress += std::chrono::seconds(60);
      std::printf(
          "  %3.0f min: %llu batches, %llu sink kills, %llu restarts, %llu purges, "
          "%llu consumer events, %llu violations\n",
          std::chrono::duration<double>(Clock::now() - started).count() / 60,
          static_cast<unsigned long long>(counters.batches.load()),
          static_cast<unsigned long long>(counters.sink_kills.load()),
          static_cast<unsigned long long>(counters.restarts.load()),
          static_cast<unsigned long long>(counters.purges.load()),
          static_cast<unsigned long long>(counters.consumer_events.load()),
          static_cast<unsigned long long>(violations.count()));
      std::fflush(stdout);
    }
  }
  // Quiesce: faults and purges first, then the writers (their last batch is
  // answered or abandoned), then the consumers catch up with the heads.
  stop_faults = true;
  faults.join();
  purges.join();
  if (!server_up(db.url())) violations.add("the server did not come back after the last restart");
  stop_writers = true;
  for (auto& t : writer_threads) t.join();
  if (auto heads = try_query(db.url(), "SELECT topic, head FROM oasync.topics")) {
    for (const auto& row : *heads) {
      for (int t = 0; t < kTopics; ++t) {
        if (row[0].as<std::string>() == data_topic(t)) {
          targets[static_cast<std::size_t>(t)] = row[1].as<std::int64_t>();
        }
      }
    }
  }
  std::thread watchdog([&] {
    for (int i = 0; i < 1200 && !give_up; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    give_up = true;
  });
  for (auto& t : consumer_threads) t.join();
  give_up = true;
  watchdog.join();

  if (settings.sabotage) {
    pqxx::connection conn(db.url());
    pqxx::work tx(conn);
    tx.exec_params(
        "DELETE FROM oasync.events WHERE topic = $1 AND watermark = (SELECT max(watermark) FROM "
        "oasync.events WHERE topic = $1)",
        data_topic(0));
    tx.commit();
  }
  const Journal journal = load_journal(db.url(), settings.writers);
  check_journal(journal, ledger, violations);
  check_consumers(journal, ledger, consumers, violations);
  const ProcessResult verify = run_oasync({"--database-url", db.url(), "verify"});
  if (verify.exit_code != 0) {
    violations.add(
        fmt::format("oasync verify exited {}:\n{}{}", verify.exit_code, verify.out, verify.err));
  }

  std::int64_t purged = 0;
  std::int64_t events = 0;
  for (int t = 0; t < kTopics; ++t) {
    purged += journal.floors[static_cast<std::size_t>(t)];
    events += journal.heads[static_cast<std::size_t>(t)];
  }
  const auto n = [](const std::atomic<std::uint64_t>& v) {
    return static_cast<unsigned long long>(v.load());
  };
  std::printf(
      "  batches %llu (attempts %llu; resent after a fault %llu, after an answer %llu; "
      "abandoned %llu)\n"
      "  writes sent %llu; acknowledged: applied %llu, unchanged %llu, duplicate %llu, "
      "conflict %llu, rejected %llu\n"
      "  malformed frames %llu, retryable error answers %llu\n"
      "  sink kills (SIGKILL) %llu\n"
      "  backend terminations %llu\n"
      "  postgres restarts (-m immediate) %llu\n"
      "  purges %llu (failed under faults %llu); events %lld, purged %lld\n"
      "  consumer restarts (SIGKILL) %llu, other consumer exits %llu, stale cursors %llu, "
      "events printed %llu\n"
      "  oasync verify: %s\n",
      n(counters.batches), n(counters.attempts), n(counters.resent_after_fault),
      n(counters.resent_after_ack), n(counters.abandoned), n(counters.writes_sent),
      n(counters.outcomes[0]), n(counters.outcomes[1]), n(counters.outcomes[2]),
      n(counters.outcomes[3]), n(counters.outcomes[4]), n(counters.malformed_frames),
      n(counters.error_answers), n(counters.sink_kills), n(counters.terminations),
      n(counters.restarts), n(counters.purges), n(counters.purge_failures),
      static_cast<long long>(events), static_cast<long long>(purged), n(counters.consumer_kills),
      n(counters.consumer_exits), n(counters.stale_cursors), n(counters.consumer_events),
      verify.exit_code == 0 ? "clean" : "PROBLEMS");
  for (const auto& c : consumers) {
    if (!c->last_exit().empty()) {
      std::printf("  last other exit of %s: %s", c->name().c_str(), c->last_exit().c_str());
    }
  }
  for (const std::string& line : violations.lines()) std::printf("  VIOLATION: %s\n", line.c_str());
  std::printf("  violations %llu\n", static_cast<unsigned long long>(violations.count()));
  if (settings.sabotage) {
    std::printf("  sabotage (deleted the newest event of %s): %s\n", data_topic(0).c_str(),
                violations.count() > 0 ? "detected" : "NOT DETECTED");
    return violations.count() > 0 ? 0 : 1;
  }
  return violations.count() == 0 ? 0 : 1;
}
