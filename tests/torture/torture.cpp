// The torture run of scripts/torture: everything that can go wrong, at once,
// against a throwaway Postgres, then a check that nothing was lost, doubled,
// reordered, left partial, shown to another tenant, or overwritten by a
// reprojection.
//
// Topics: three data topics of 24 docs each (torture.t0 and t1 inline,
// torture.t2 in pointer mode), one marker topic per writer, and a scratch
// topic that comes and goes. Docs belong to three tenants (scopes org:0..2).
//
// While it runs:
//   - writer threads drive `oasync sink --stdio` processes with random batches
//     over the shared docs: upserts, deletes, stale source seqs, expected-
//     version conflicts, invalid writes, malformed frames; each batch carries a
//     marker write (a new doc per attempt) that shows whether it committed.
//     Every write has a scope, usually its doc's tenant and sometimes another
//     one (the doc moves), and its payload names that scope; some writes go to
//     the scratch topic, registered or not;
//   - writers SIGKILL their own sink at random moments, then resend the batch
//     (a duplicate if it had committed) or abandon it;
//   - one more writer applies its batches in-process with Sink::apply_within
//     inside its own transaction, which also inserts its attempt into
//     public.torture_state; it aborts some transactions instead of committing,
//     and sometimes tries a second apply_within first, which must be refused;
//   - a fault thread terminates random backends (of the standby too) and
//     restarts Postgres with `pg_ctl restart -m immediate`;
//   - the stdio writers reach Postgres through a proxy (cut_proxy.hpp) that
//     a cut thread arms again and again to lose a connection at COMMIT's
//     reply (before it or after it), in round trip 1, or between the round
//     trips: a sink then answers what really happened, and the checks see
//     every acknowledged write exactly once and every write answered "not
//     applied" zero times;
//   - a purge thread runs `oasync purge` every few seconds;
//   - a reprojection thread runs `oasync reproject torture.t0 --as-of W` or the
//     Reprojection class with a desired set of some of t0's docs (payloads
//     {"reproject":RUN,...}), and records each run's as_of and time window; a
//     recorder reads t0's events as they commit, before purge removes them;
//   - a registry thread runs `oasync topics apply` with catalogs that register
//     and remove the scratch topic (a removal is refused while it has docs or
//     events) and flip the data topics' max_payload_bytes between 4096 and
//     4097, and `oasync topics reset-epoch` on a data topic;
//   - consumers follow each data topic with `oasync tail --follow --epoch E`,
//     are SIGKILLed at random and resume from their last printed watermark
//     (in the new epoch after an epoch_changed): two per topic reading
//     everything, one per topic logged in as a reader role bound to one tenant
//     under scope security (PGOPTIONS -c oasync.scope=...), and one on a hot
//     standby (a streaming replica);
//   - `oasync serve` serves the data topics (delivery.hpp): followers with the
//     official @durable-streams/client (tests/e2e/torture-follower.mjs), one
//     per topic and tenant plus three through a sabotaging proxy
//     (tests/e2e/torture-proxy.mjs), long-poll and SSE, some with
//     on_stale=reset, and sync:v1 sockets with the official phoenix client
//     (one per tenant, and one with encoding=json), a channel per topic, on
//     tokens that expire every few seconds, while the server is SIGKILLed or
//     drained with SIGTERM and started again, its hub session is terminated,
//     sessions are revoked, and raw clients stop reading (requests and
//     sockets) or hang up mid-response; each follower records every response
//     or batch.
// Afterwards it checks the invariants listed at check_journal(),
// check_reprojections(), check_consumers(), check_scoped_consumers() and
// check_state() and Delivery::check() (every follower response against its
// tenant's view of the journal, versions, tenants, stale answers, the final
// state against `oasync snapshot --scope`, the server's peak RSS), runs
// `oasync verify`, prints the counts, and exits 1 if there was any violation.
// --sabotage damages the run on purpose (deletes an event, leaks a scope,
// clobbers a live write; or, through the proxy, skips, leaks or repeats one
// delivered event) and succeeds only if it is noticed.
#include <unistd.h>

#include <array>
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
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "cut_proxy.hpp"
#include "delivery.hpp"
#include "frames.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/reproject.hpp"
#include "oasync/sink.hpp"
#include "process.hpp"
#include "replica.hpp"
#include "test_db.hpp"

using namespace oasync;
using namespace oasync::test;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------- settings

// What --sabotage damages; each must be noticed.
enum class Sabotage {
  none,
  // After the run, the newest event of torture.t0 is deleted.
  deleted_event,
  // During the run, one scoped reader loses its binding while a permissive
  // policy lets its role read every row: its follower sees other tenants.
  leaked_scope,
  // After the run, a reprojection-marked write without expected_version lands
  // on a doc changed after that reprojection's as_of.
  clobbered_write,
  // The sabotaging proxy in front of `oasync serve` (delivery.hpp) drops one
  // update from a response to one follower; adds another tenant's doc to
  // one; repeats a change after a server restart.
  delivery_skip,
  delivery_leak,
  delivery_repeat,
  // A sync:v1 channel follower leaves one update out of what it records of
  // a batch (the checks of the channel's batches must notice).
  delivery_channel_skip,
};

const char* to_string(Sabotage s) {
  switch (s) {
    case Sabotage::none:
      return "none";
    case Sabotage::deleted_event:
      return "delete";
    case Sabotage::leaked_scope:
      return "scope";
    case Sabotage::clobbered_write:
      return "clobber";
    case Sabotage::delivery_skip:
      return "skip";
    case Sabotage::delivery_leak:
      return "leak";
    case Sabotage::delivery_repeat:
      return "repeat";
    case Sabotage::delivery_channel_skip:
      return "channel-skip";
  }
  return "none";
}

struct Settings {
  double seconds = 40;
  int writers = 4;  // stdio writers; one more writes in-process (apply_within)
  int consumers_per_topic = 2;
  int docs = 24;  // per topic: few, so that writers collide
  std::uint64_t seed = 0;
  Sabotage sabotage = Sabotage::none;
  // Writer ids 0..writers-1 drive sinks; id `writers` uses apply_within.
  int writer_ids() const { return writers + 1; }
};

constexpr int kTopics = 3;
constexpr int kReprojected = 0;   // the data topic the reprojection thread rewrites
constexpr int kPointer = 2;       // the data topic in pointer mode
constexpr int kStandbyTopic = 2;  // the topic the standby's follower reads
constexpr int kTenants = 3;
constexpr int kScratch = 99;  // Sent::topic of a write to the scratch topic
constexpr int kScratchDocs = 4;
constexpr const char* kScratchTopic = "torture.scratch";
constexpr int kPayloadLimit = 4096;  // flipped to 4097 and back by the registry thread

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
std::string tenant(int k) {
  return fmt::format("org:{}", k);
}

// Microseconds since the Unix epoch, the clock of committed_at.
std::int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The catalog: small payload limit (so "too large" is cheap to provoke), no
// tombstone retention for the ledger's topics (their versions never restart).
// The scratch topic purges everything after a second, so that it can be
// emptied and removed.
struct CatalogShape {
  bool scratch = false;
  int max_payload_bytes = kPayloadLimit;  // of the data topics
};

std::string catalog(int writer_ids, const CatalogShape& shape) {
  std::string text = "topics:\n";
  const auto add = [&](const std::string& name, const std::string& prefix, const char* mode,
                       int limit, const char* retention) {
    text += fmt::format(
        "  - name: {}\n    doc_key_prefix: \"{}\"\n    payload_mode: {}\n"
        "    max_payload_bytes: {}\n{}",
        name, prefix, mode, limit, retention);
  };
  for (int t = 0; t < kTopics; ++t) {
    add(data_topic(t), data_prefix(t), t == kPointer ? "pointer" : "inline",
        shape.max_payload_bytes, "");
  }
  for (int w = 0; w < writer_ids; ++w) add(marker_topic(w), "batch:", "inline", kPayloadLimit, "");
  if (shape.scratch) {
    add(kScratchTopic, "s:", "inline", kPayloadLimit,
        "    retention:\n      max_age: 1s\n      min_events: 0\n      tombstones: 1s\n");
  }
  return text;
}

// ---------------------------------------------------------------- report

struct Counters {
  std::atomic<std::uint64_t> batches{0}, attempts{0}, resent_after_fault{0}, resent_after_ack{0},
      abandoned{0}, writes_sent{0}, malformed_frames{0}, error_answers{0}, unknown_answers{0},
      commit_cuts{0};
  std::atomic<std::uint64_t> outcomes[5] = {};  // by oasync::Outcome
  std::atomic<std::uint64_t> scratch_applied{0}, scratch_unregistered{0};
  std::atomic<std::uint64_t> within_commits{0}, within_aborts{0}, within_second_refused{0},
      within_errors{0};
  std::atomic<std::uint64_t> sink_kills{0}, terminations{0}, standby_terminations{0}, restarts{0},
      purges{0}, purge_failures{0};
  std::atomic<std::uint64_t> reprojections{0}, reprojection_failures{0}, reproject_unchanged{0},
      reproject_changed{0}, reproject_created{0}, reproject_deleted{0}, reproject_skipped{0};
  std::atomic<std::uint64_t> limit_changes{0}, scratch_created{0}, scratch_removed{0},
      removals_refused{0}, registry_failures{0}, epoch_resets{0}, epoch_reset_failures{0};
  std::atomic<std::uint64_t> consumer_kills{0}, consumer_exits{0}, stale_cursors{0},
      epoch_changes_seen{0}, consumer_events{0}, scoped_events{0}, standby_events{0};
};

class Violations {
 public:
  // What a violation is about; a sabotage must be noticed by its own kind.
  enum class Kind { general, scope_leak, clobber, delivery };

  void add(std::string what, Kind kind = Kind::general) {
    std::lock_guard lock(mutex_);
    ++count_;
    ++by_kind_[kind];
    if (lines_.size() < 50) lines_.push_back(std::move(what));
  }
  std::uint64_t count() const {
    std::lock_guard lock(mutex_);
    return count_;
  }
  std::uint64_t count(Kind kind) const {
    std::lock_guard lock(mutex_);
    const auto it = by_kind_.find(kind);
    return it == by_kind_.end() ? 0 : it->second;
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mutex_);
    return lines_;
  }

 private:
  mutable std::mutex mutex_;
  std::uint64_t count_ = 0;
  std::map<Kind, std::uint64_t> by_kind_;
  std::vector<std::string> lines_;
};
using Kind = Violations::Kind;

// ---------------------------------------------------------------- ledger

// What the sinks acknowledged, and what was sent without an acknowledgement.
// An attempt is one send of a batch: key = batch * 1000 + attempt number.
enum class Invalid {
  none,
  wrong_prefix,
  unknown_topic,
  not_object,
  too_large,
  empty_key,
  long_scope
};

struct Sent {
  int topic = 0;  // data topic index, kScratch, or marker_index(writer)
  int doc = 0;    // doc number within the topic; -1 for the marker
  Op op = Op::upsert;
  Invalid invalid = Invalid::none;
  std::optional<std::int64_t> expected;
  std::int64_t seq = 0;  // source seq (stream "wN" of writer N)
  int tenant = 0;        // the write's scope
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
    case Invalid::long_scope:
      return RejectReason::invalid_scope;
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

// A write to the pointer topic, found again by its payload hash: pointer
// events carry no payload.
struct PointerWrite {
  std::int64_t attempt = 0;
  std::int16_t index = 0;
  std::int16_t writer = 0;
  std::int16_t tenant = 0;
  std::int64_t seq = 0;
};

std::int64_t position_key(int topic, std::int64_t watermark) {
  return (std::int64_t{topic} << 44) | watermark;
}

// The first 8 bytes of a SHA-256, as a number (big-endian).
std::uint64_t hash_key(const std::array<std::uint8_t, 32>& digest) {
  std::uint64_t key = 0;
  for (int i = 0; i < 8; ++i) key = (key << 8) | digest[static_cast<std::size_t>(i)];
  return key;
}

struct Ledger {
  std::mutex mutex;
  // (topic, watermark) of every write acknowledged as applied.
  std::unordered_map<std::int64_t, Applied> applied;
  // Attempts answered with per-write results (committed).
  std::unordered_set<std::int64_t> acked;
  // Attempts sent but never answered with results (killed sink, error answer),
  // and the apply_within writer's aborted or failed transactions.
  std::unordered_map<std::int64_t, std::vector<Sent>> unacked;
  // Attempts answered with an error that says nothing of it was applied
  // (any code but "outcome_unknown"), with the answer.
  std::unordered_map<std::int64_t, std::string> refused;
  // Every valid upsert sent to the pointer topic, by hash_key of its payload.
  std::unordered_map<std::uint64_t, PointerWrite> pointer_writes;
};

// Epochs a reset-epoch replaced (or may have: recorded before it runs).
class EpochLog {
 public:
  void retire(int topic, const std::string& epoch) {
    std::lock_guard lock(mutex_);
    retired_[topic].insert(epoch);
  }
  bool retired(int topic, const std::string& epoch) const {
    std::lock_guard lock(mutex_);
    const auto it = retired_.find(topic);
    return it != retired_.end() && it->second.count(epoch) != 0;
  }

 private:
  mutable std::mutex mutex_;
  std::map<int, std::set<std::string>> retired_;
};

// One reprojection of torture.t0: what it was asked for, and when it ran.
struct ReprojectRun {
  int run = 0;
  std::int64_t as_of = 0;
  std::int64_t start_us = 0;   // wall clock before its first transaction
  std::int64_t end_us = 0;     // and after its last
  std::map<int, int> desired;  // doc -> tenant
  bool via_cli = false;
  bool completed = false;
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

// Sleeps about `ms` milliseconds unless `stop` is set first; false if it was.
bool pause_unless(const std::atomic<bool>& stop, int ms) {
  for (int slept = 0; slept < ms && !stop; slept += 50) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return !stop;
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

// How a writer reaches the sink.
enum class Transport {
  // An `oasync sink --stdio` child process, killed now and then.
  stdio,
  // Sink::apply_within in the writer's own transaction, in-process.
  apply_within,
};

class Writer {
 public:
  Writer(int id, Transport transport, const Settings& settings, const std::string& url,
         Counters& counters, Violations& violations, Ledger& ledger,
         const std::atomic<bool>& scratch_writes)
      : id_(id),
        transport_(transport),
        settings_(settings),
        url_(url),
        counters_(counters),
        violations_(violations),
        ledger_(ledger),
        scratch_writes_(scratch_writes),
        rng_(settings.seed * 1000 + static_cast<std::uint64_t>(id)),
        known_(static_cast<std::size_t>(kTopics * settings.docs), 0) {}

  void run(const std::atomic<bool>& stop) {
    if (transport_ == Transport::apply_within) {
      run_within(stop);
      return;
    }
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
      // Usually the doc's own tenant; sometimes another one, which moves it.
      s.tenant = static_cast<int>(uniform(0, kTenants - 1));
      if (scratch_writes_ && chance(0.03)) {
        // The scratch topic, registered or not at this moment.
        s.topic = kScratch;
        s.doc = static_cast<int>(uniform(0, kScratchDocs - 1));
        s.op = chance(0.5) ? Op::delete_ : Op::upsert;
        s.seq = next_seq_++;
        plan.push_back(s);
        continue;
      }
      s.topic = static_cast<int>(uniform(0, kTopics - 1));
      s.doc = static_cast<int>(uniform(0, settings_.docs - 1));
      if (chance(0.8)) s.tenant = s.doc % kTenants;
      s.op = chance(0.1) ? Op::delete_ : Op::upsert;
      if (chance(0.04)) s.invalid = static_cast<Invalid>(uniform(1, 6));
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

  // The job's current attempt as a batch; the payloads name their attempt
  // and their scope.
  Batch encode(const Job& job) const {
    const std::int64_t batch = job.batch;
    const int attempt = job.attempt;
    const std::vector<Sent>& plan = job.plan;
    Batch b;
    for (std::size_t i = 0; i + 1 < plan.size(); ++i) {
      const Sent& s = plan[i];
      DocWrite w;
      if (s.topic == kScratch) {
        w.topic = kScratchTopic;
        w.doc_key = "s:" + std::to_string(s.doc);
      } else {
        w.topic = data_topic(s.topic);
        w.doc_key = data_prefix(s.topic) + std::to_string(s.doc);
      }
      w.scope = tenant(s.tenant);
      w.op = s.op;
      w.source_stream = fmt::format("w{}", id_);
      w.source_seq = s.seq;
      w.expected_version = s.expected;
      // The payload names the write: batch, attempt, index, stream, seq and
      // scope (so that a payload shown to another tenant is visible).
      w.payload = fmt::format(R"({{"a":{},"b":{},"i":{},"q":{},"s":"w{}","sc":"{}","pad":"{}"}})",
                              attempt, batch, i, s.seq, id_, w.scope,
                              std::string(static_cast<std::size_t>((batch + i) % 97), 'x'));
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
        case Invalid::long_scope:
          w.scope = std::string(kMaxScopeBytes + 1, 'z');
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

  // Notes an attempt as sent and not (yet) answered, with the hashes of its
  // pointer-topic payloads.
  void note_sent(const Job& job, const Batch& batch) {
    std::vector<std::pair<std::uint64_t, PointerWrite>> pointers;
    for (std::size_t i = 0; i + 1 < job.plan.size(); ++i) {
      const Sent& s = job.plan[i];
      if (s.topic != kPointer || s.op != Op::upsert || s.invalid != Invalid::none) continue;
      pointers.emplace_back(
          hash_key(canonicalize(batch.writes[i].payload).sha256),
          PointerWrite{job.key(), static_cast<std::int16_t>(i), static_cast<std::int16_t>(id_),
                       static_cast<std::int16_t>(s.tenant), s.seq});
    }
    ++counters_.attempts;
    counters_.writes_sent += job.plan.size();
    std::lock_guard lock(ledger_.mutex);
    ledger_.unacked.emplace(job.key(), job.plan);
    for (const auto& [key, write] : pointers) ledger_.pointer_writes.emplace(key, write);
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
      const Batch batch = encode(job);
      note_sent(job, batch);
      sent = sent && send_batch(*sink_, batch);
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
        if (*answer.error_code == "outcome_unknown") {
          ++counters_.unknown_answers;
        } else {
          std::lock_guard lock(ledger_.mutex);
          ledger_.refused.emplace(job.key(), *answer.error_code + ": " + answer.error_message);
        }
        again(job);
      } else {
        record(job.key(), job.plan, answer.results);
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

  // The apply_within writer: one batch per transaction, which also records
  // the attempt in public.torture_state; some transactions are aborted.
  void run_within(const std::atomic<bool>& stop) {
    while (!stop) {
      drive_within(new_job(), stop);
      std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 3000)));
    }
    sink_within_.reset();
    conn_.reset();
  }

  void drive_within(Job job, const std::atomic<bool>& stop) {
    for (;;) {
      if (job.attempt - job.first_attempt > 300 || (stop && job.attempt > job.first_attempt)) {
        ++counters_.abandoned;
        return;
      }
      const Batch batch = encode(job);
      note_sent(job, batch);
      try {
        if (!conn_) {
          conn_ = oasync::connect(url_);
          sink_within_ = std::make_unique<Sink>(*conn_);
        }
        pqxx::work tx(*conn_);
        tx.exec_params("INSERT INTO public.torture_state (attempt) VALUES ($1)", job.key());
        const std::vector<WriteResult> results = sink_within_->apply_within(tx, batch);
        if (chance(0.03)) {
          // One apply_within per transaction: a second one is refused.
          try {
            sink_within_->apply_within(tx, batch);
            violations_.add(
                fmt::format("writer {}: a second apply_within in one transaction "
                            "was not refused",
                            id_));
          } catch (const Error& e) {
            if (e.code() != Code::refused) throw;
            ++counters_.within_second_refused;
          }
          tx.abort();
          ++counters_.within_aborts;
          return;
        }
        if (chance(0.15)) {
          tx.abort();
          ++counters_.within_aborts;
          return;
        }
        tx.commit();
        ++counters_.within_commits;
        record(job.key(), job.plan, results);
        return;
      } catch (const std::exception&) {
        // A fault: the attempt may have committed (a lost COMMIT) or not;
        // either way its state row and its marker go together.
        ++counters_.within_errors;
        sink_within_.reset();
        conn_.reset();
        ++job.attempt;
        ++counters_.resent_after_fault;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }

  // Checks the answer against what was sent and records it in the ledger.
  void record(std::int64_t key, const std::vector<Sent>& plan,
              const std::vector<WriteResult>& results) {
    if (results.size() != plan.size()) {
      violations_.add(
          fmt::format("writer {}: {} results for {} writes", id_, results.size(), plan.size()));
      return;
    }
    std::lock_guard lock(ledger_.mutex);
    ledger_.unacked.erase(key);
    ledger_.acked.insert(key);
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const Sent& s = plan[i];
      const WriteResult& r = results[i];
      ++counters_.outcomes[static_cast<int>(r.outcome)];
      const std::string where = fmt::format("writer {} attempt {} write {}", id_, key, i);
      if (s.topic == kScratch) {
        // Registered or not: applied or the like, or rejected as unregistered.
        if (r.outcome == Outcome::rejected) {
          if (r.reason == RejectReason::topic_not_registered) {
            ++counters_.scratch_unregistered;
          } else {
            violations_.add(fmt::format("{}: scratch write rejected: {} {}", where,
                                        to_string(r.reason), r.detail));
          }
        } else if (r.outcome == Outcome::conflict) {
          violations_.add(where + ": scratch write conflicted without an expected version");
        } else if (r.outcome == Outcome::applied) {
          ++counters_.scratch_applied;
        }
        continue;
      }
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
  Transport transport_;
  const Settings& settings_;
  std::string url_;
  Counters& counters_;
  Violations& violations_;
  Ledger& ledger_;
  const std::atomic<bool>& scratch_writes_;
  std::mt19937_64 rng_;
  std::unique_ptr<Child> sink_;
  // Transport::apply_within: the writer's own connection and sink on it.
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<Sink> sink_within_;
  std::vector<std::int64_t> known_;  // last version this writer saw, per doc
  std::int64_t next_seq_ = 1;
  std::int64_t batches_ = 0;
};

// ---------------------------------------------------------------- consumers

// One printed event, kept compactly.
struct Seen {
  std::int64_t watermark;
  std::int32_t doc;
  bool deleted;
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

// Who a consumer is and how it reads.
struct ConsumerSpec {
  int topic = 0;
  std::string name;
  std::string url;
  std::string epoch;  // the topic's epoch at the start
  // Scoped: logs in as a reader role bound to this tenant, under scope
  // security, and names the tenant in its session (PGOPTIONS).
  std::optional<int> tenant;
  bool standby = false;  // reads a hot standby
};

class Consumer {
 public:
  Consumer(ConsumerSpec spec, std::uint64_t seed, Counters& counters, Violations& violations,
           const EpochLog& epochs)
      : spec_(std::move(spec)),
        epoch_(spec_.epoch),
        counters_(counters),
        violations_(violations),
        epochs_(epochs),
        rng_(seed) {}

  // Follows, is killed, resumes; until `stop`, then until it has read up to
  // `target` (set once the writers stopped) or `give_up`.
  void run(const std::atomic<bool>& stop, const std::atomic<std::int64_t>& target,
           const std::atomic<bool>& give_up) {
    const std::string topic = data_topic(spec_.topic);
    while (!give_up) {
      const bool final_phase = stop.load();
      if (final_phase && target >= 0 && resume_ >= target) return;
      const std::int64_t floor_before = floor_of(spec_.url, topic, give_up);
      std::vector<std::string> argv{oasync_binary(), "--database-url",
                                    spec_.url,       "tail",
                                    topic,           "--follow",
                                    "--after",       std::to_string(resume_),
                                    "--epoch",       epoch_,
                                    "--format",      "ndjson",
                                    "--poll-ms",     spec_.standby ? "100" : "200",
                                    "--page-size",   "500"};
      std::map<std::string, std::string> env;
      if (spec_.tenant) {
        // A scoped view skips watermarks: heartbeats say how far it has read.
        argv.insert(argv.end(), {"--heartbeat", "1"});
        env["PGOPTIONS"] = "-c oasync.scope=" + tenant(*spec_.tenant);
      }
      Child tail(argv, env);
      const auto deadline = Clock::now() + std::chrono::milliseconds(
                                               std::uniform_int_distribution<int>(300, 4000)(rng_));
      bool first = true;
      bool stale = false;
      std::string line;
      while (!give_up && (final_phase || (!stop && Clock::now() < deadline))) {
        if (final_phase && target >= 0 && resume_ >= target) break;
        if (!tail.read_line(line, 100)) {
          if (tail.at_eof()) break;
          continue;
        }
        const json message = json::parse(line, nullptr, false);
        if (message.is_discarded()) {
          violations_.add(fmt::format("{}: unparsable line {}", name(), line.substr(0, 200)));
          continue;
        }
        if (message.contains("heartbeat")) {
          on_heartbeat(message["heartbeat"]);
          continue;
        }
        if (message.contains("error")) {
          stale = true;
          on_stale(message["error"]);
          break;
        }
        if (!message.contains("watermark") || !message.contains("doc_key")) {
          violations_.add(fmt::format("{}: unexpected line {}", name(), line.substr(0, 200)));
          continue;
        }
        on_event(message, first, floor_before);
        first = false;
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

  const ConsumerSpec& spec() const { return spec_; }
  int topic() const { return spec_.topic; }
  std::int64_t last() const { return resume_; }
  const std::vector<Seen>& seen() const { return seen_; }
  const std::string& name() const { return spec_.name; }
  const std::string& last_exit() const { return last_exit_; }

 private:
  void on_event(const json& m, bool first, std::int64_t floor_before) {
    const std::int64_t w = m["watermark"].get<std::int64_t>();
    if (first && resume_ < floor_before) {
      violations_.add(fmt::format(
          "{}: resumed after {} below the floor {} and was not told the cursor is stale", name(),
          resume_, floor_before));
    }
    if (m.value("epoch", std::string()) != epoch_) {
      violations_.add(fmt::format("{}: printed watermark {} of epoch {} while following epoch {}",
                                  name(), w, m.value("epoch", std::string()), epoch_));
    }
    // Everything: no gap, no repeat. A scope's view: strictly increasing.
    if (spec_.tenant ? w <= resume_ : w != resume_ + 1) {
      violations_.add(fmt::format("{}: printed watermark {} right after {}", name(), w, resume_));
    }
    const bool deleted = m.value("op", std::string()) == "delete";
    const json& payload = m.contains("payload") ? m["payload"] : json();
    if (spec_.tenant) {
      // Nothing of another tenant: no event of its scope, no payload it wrote.
      const std::string want = tenant(*spec_.tenant);
      const std::string scope = m.value("scope", std::string());
      if (scope != want) {
        violations_.add(fmt::format("{}: printed watermark {} of scope \"{}\"", name(), w, scope),
                        Kind::scope_leak);
      }
      if (payload.is_object() && payload.value("sc", std::string()) != want) {
        violations_.add(fmt::format("{}: printed at watermark {} a payload written for scope "
                                    "\"{}\"",
                                    name(), w, payload.value("sc", std::string())),
                        Kind::scope_leak);
      }
      if (deleted && !payload.is_null()) {
        violations_.add(fmt::format("{}: a delete at watermark {} with a payload", name(), w),
                        Kind::scope_leak);
      }
    } else if (!deleted) {
      // Pointer topics: the doc's payload, fetched; inline topics: the event's.
      const bool fetched = m.value("payload_fetched", false);
      if (fetched != (spec_.topic == kPointer) || (!fetched && !payload.is_object())) {
        violations_.add(
            fmt::format("{}: upsert at watermark {} with payload_fetched {} and "
                        "payload {}",
                        name(), w, fetched, payload.dump().substr(0, 100)));
      }
    }
    seen_.push_back(Seen{w, doc_number(m["doc_key"].get<std::string>(), spec_.topic), deleted,
                         m["doc_version"].get<std::int64_t>()});
    resume_ = w;
    ++(spec_.tenant    ? counters_.scoped_events
       : spec_.standby ? counters_.standby_events
                       : counters_.consumer_events);
  }

  // A heartbeat comes after a pass that printed everything up to its head:
  // a scoped follower may resume from there.
  void on_heartbeat(const json& heartbeat) {
    for (const json& p : heartbeat.value("topics", json::array())) {
      if (p.value("topic", std::string()) == data_topic(spec_.topic) &&
          p.value("epoch", std::string()) == epoch_) {
        resume_ = std::max(resume_, p.value("head", std::int64_t{0}));
      }
    }
  }

  // The rule: a cursor is stale exactly when it is below the floor, or of an
  // epoch that a reset replaced.
  void on_stale(const json& error) {
    const json& s = error.value("stale", json::object());
    const std::int64_t floor = s.value("floor", std::int64_t{-1});
    const std::string reason = s.value("reason", std::string());
    if (reason == "epoch_changed") {
      ++counters_.epoch_changes_seen;
      const std::string cursor_epoch = s.value("cursor_epoch", std::string());
      const std::string current = s.value("epoch", std::string());
      if (cursor_epoch != epoch_ || !epochs_.retired(spec_.topic, epoch_) || current.empty() ||
          current == epoch_) {
        violations_.add(
            fmt::format("{}: epoch_changed for cursor epoch {} (following {}; now {}) "
                        "that no reset replaced",
                        name(), cursor_epoch, epoch_, current));
      }
      // The events are the same: go on from the same watermark in the new epoch.
      if (!current.empty()) epoch_ = current;
      return;
    }
    ++counters_.stale_cursors;
    if (reason != "retention_floor_breach" || !(resume_ < floor)) {
      violations_.add(fmt::format("{}: cursor {} reported stale ({}, floor {})", name(), resume_,
                                  reason, floor));
    }
    // Resync: a client takes a snapshot; here the consumer goes on from the floor.
    if (floor > resume_) resume_ = floor;
  }

  ConsumerSpec spec_;
  std::string epoch_;
  Counters& counters_;
  Violations& violations_;
  const EpochLog& epochs_;
  std::mt19937_64 rng_;
  std::int64_t resume_ = 0;  // the cursor: all of its view up to here was printed
  std::vector<Seen> seen_;
  std::string last_exit_;
};

// ---------------------------------------------------------------- faults

const char* const kTerminateOneSql =
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
    "(SELECT pid FROM pg_stat_activity WHERE datname = $1 AND "
    "backend_type = 'client backend' AND pid <> pg_backend_pid() "
    "ORDER BY random() LIMIT 1) AS victim";

// `standby_admin`: the standby's admin URL, or empty without one.
// Arms the proxy, again and again, to lose a stdio writer's connection at a
// step of the sink's protocol; most often at COMMIT's reply.
void run_cuts(const Settings& settings, CutProxy& proxy, Counters& counters,
              const std::atomic<bool>& stop) {
  using Cut = CutProxy::Cut;
  using Direction = CutProxy::Direction;
  using Forward = CutProxy::Forward;
  const Cut cuts[] = {
      {Direction::to_client, 'C', "COMMIT", Forward::no, CutProxy::Action::close},
      {Direction::to_client, 'C', "COMMIT", Forward::no, CutProxy::Action::close},
      {Direction::to_client, 'C', "COMMIT", Forward::yes, CutProxy::Action::close},
      {Direction::to_server, '\0', "sink_read_docs", Forward::no, CutProxy::Action::close},
      {Direction::to_server, '\0', "sink_lock_topics", Forward::no, CutProxy::Action::close},
  };
  std::mt19937_64 rng(settings.seed * 131 + 7);
  while (pause_unless(stop, static_cast<int>(std::uniform_int_distribution<int>(200, 1200)(rng)))) {
    proxy.arm(cuts[std::uniform_int_distribution<std::size_t>(0, std::size(cuts) - 1)(rng)]);
  }
  counters.commit_cuts = static_cast<std::uint64_t>(proxy.fired());
}

void run_faults(const Settings& settings, const std::string& admin,
                const std::string& standby_admin, const std::string& dbname, Counters& counters,
                Violations& violations, const std::atomic<bool>& stop) {
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
      const bool on_standby =
          !standby_admin.empty() && std::uniform_real_distribution<double>(0, 1)(rng) < 0.2;
      if (auto r = try_query(on_standby ? standby_admin : admin, kTerminateOneSql, dbname)) {
        (on_standby ? counters.standby_terminations : counters.terminations) +=
            (*r)[0][0].as<std::uint64_t>();
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
  while (pause_unless(stop, std::uniform_int_distribution<int>(1000, 3000)(rng))) {
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

// ---------------------------------------------------------------- registry

// `oasync topics apply` and `topics reset-epoch` now and then: the scratch
// topic comes (writes to it are rejected as unregistered until then) and goes
// (emptied first: its docs deleted, then purged; refused while writes still
// land), the data topics' payload limit flips between 4096 and 4097 (the
// "too large" writes stay too large), and a data topic gets a new epoch.
void run_registry(const Settings& settings, const std::string& url, Counters& counters,
                  EpochLog& epochs, std::atomic<bool>& scratch_writes,
                  const std::atomic<bool>& stop) {
  std::mt19937_64 rng(settings.seed * 13 + 11);
  const auto chance = [&](double p) {
    return std::uniform_real_distribution<double>(0, 1)(rng) < p;
  };
  const auto ms = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const std::string path = fmt::format("/tmp/oasync-torture-{}-registry.yaml", getpid());
  const auto apply = [&](const CatalogShape& shape) {
    std::ofstream(path) << catalog(settings.writer_ids(), shape);
    return run_oasync({"--database-url", url, "topics", "apply", path});
  };
  while (pause_unless(stop, ms(700, 2000))) {
    const auto state =
        try_query(url,
                  "SELECT (SELECT count(*) FROM oasync.topics WHERE topic = $1), "
                  "(SELECT max_payload_bytes FROM oasync.topics WHERE topic = 'torture.t0')",
                  kScratchTopic);
    if (!state) {
      ++counters.registry_failures;
      continue;
    }
    CatalogShape shape;
    shape.scratch = (*state)[0][0].as<int>() > 0;
    shape.max_payload_bytes = (*state)[0][1].as<int>();
    const double pick = std::uniform_real_distribution<double>(0, 1)(rng);
    if (pick < 0.25) {
      const int t = ms(0, kTopics - 1);
      const auto epoch =
          try_query(url, "SELECT epoch::text FROM oasync.topics WHERE topic = $1", data_topic(t));
      if (!epoch) {
        ++counters.epoch_reset_failures;
        continue;
      }
      // Recorded first: a follower may see the new epoch before this thread
      // sees the command's answer.
      epochs.retire(t, (*epoch)[0][0].as<std::string>());
      const ProcessResult r =
          run_oasync({"--database-url", url, "topics", "reset-epoch", data_topic(t)});
      ++(r.exit_code == 0 ? counters.epoch_resets : counters.epoch_reset_failures);
    } else if (pick < 0.5) {
      shape.max_payload_bytes =
          shape.max_payload_bytes == kPayloadLimit ? kPayloadLimit + 1 : kPayloadLimit;
      ++(apply(shape).exit_code == 0 ? counters.limit_changes : counters.registry_failures);
    } else if (!shape.scratch) {
      // Sometimes writes go to it before it exists: rejected as unregistered.
      if (chance(0.5)) {
        scratch_writes = true;
        if (!pause_unless(stop, ms(300, 800))) break;
      }
      shape.scratch = true;
      if (apply(shape).exit_code == 0) {
        ++counters.scratch_created;
        scratch_writes = true;
      } else {
        ++counters.registry_failures;
      }
    } else {
      // Removal: usually after its writes stopped; sometimes while they go on,
      // which is then mostly refused. Empty it first: delete its docs, wait for
      // them to age, purge its events and tombstones.
      scratch_writes = chance(0.3);
      try {
        auto sink = Sink::open(url);
        Batch deletes;
        for (int k = 0; k < kScratchDocs; ++k) {
          DocWrite w;
          w.topic = kScratchTopic;
          w.doc_key = "s:" + std::to_string(k);
          w.op = Op::delete_;
          deletes.writes.push_back(std::move(w));
        }
        sink->apply(deletes);
      } catch (const std::exception&) {
        // A fault: the removal below is then refused, or fails.
      }
      if (!pause_unless(stop, 1200)) break;
      run_oasync({"--database-url", url, "purge", "--topic", kScratchTopic});
      shape.scratch = false;
      const ProcessResult r = apply(shape);
      if (r.exit_code == 0) {
        ++counters.scratch_removed;
        scratch_writes = false;
      } else if (r.exit_code == 1 && r.err.find("refusing to remove it") != std::string::npos) {
        ++counters.removals_refused;
      } else {
        ++counters.registry_failures;
      }
    }
  }
  scratch_writes = false;
  std::remove(path.c_str());
}

// ---------------------------------------------------------------- reprojections

// Now and then a reprojection of torture.t0 to a desired set of some of its
// docs, through the CLI with an explicit --as-of a little below the head, or
// through the library class with the head at its start. Every run whose as_of
// is known is recorded, finished or not (a fault may stop it half way).
void run_reprojections(const Settings& settings, const std::string& url, Counters& counters,
                       std::vector<ReprojectRun>& runs, const std::atomic<bool>& stop) {
  std::mt19937_64 rng(settings.seed * 19 + 2);
  const auto chance = [&](double p) {
    return std::uniform_real_distribution<double>(0, 1)(rng) < p;
  };
  const auto uniform = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  const std::string topic = data_topic(kReprojected);
  const std::string path = fmt::format("/tmp/oasync-torture-{}-reproject.ndjson", getpid());
  int number = 0;
  while (pause_unless(stop, uniform(800, 2500))) {
    ReprojectRun run;
    run.run = ++number;
    for (int d = 0; d < settings.docs; ++d) {
      if (chance(0.6)) run.desired[d] = chance(0.8) ? d % kTenants : uniform(0, kTenants - 1);
    }
    std::vector<DocWrite> desired;
    for (const auto& [d, k] : run.desired) {
      DocWrite w;
      w.topic = topic;
      w.doc_key = data_prefix(kReprojected) + std::to_string(d);
      w.scope = tenant(k);
      w.payload = fmt::format(R"({{"reproject":{},"d":{},"sc":"{}","pad":"{}"}})", run.run, d,
                              w.scope, std::string(static_cast<std::size_t>(run.run % 37), 'r'));
      desired.push_back(std::move(w));
    }
    const int batch_size = uniform(4, 30);
    ReprojectCounts counts;
    run.via_cli = chance(0.5);
    if (run.via_cli) {
      const auto head = try_query(url, "SELECT head FROM oasync.topics WHERE topic = $1", topic);
      if (!head) {
        ++counters.reprojection_failures;
        continue;
      }
      run.as_of = std::max<std::int64_t>(0, (*head)[0][0].as<std::int64_t>() - uniform(0, 40));
      {
        std::ofstream out(path);
        for (const DocWrite& w : desired) {
          out << json{{"topic", w.topic},
                      {"doc_key", w.doc_key},
                      {"scope", w.scope},
                      {"op", "upsert"},
                      {"payload", json::parse(w.payload)}}
                     .dump()
              << "\n";
        }
      }
      run.start_us = wall_us();
      const ProcessResult r =
          run_oasync({"--database-url", url, "reproject", topic, "--input", path, "--as-of",
                      std::to_string(run.as_of), "--batch-size", std::to_string(batch_size)});
      run.end_us = wall_us();
      long long u = 0, c = 0, n = 0, d = 0, s = 0;  // as printed
      const auto colon = r.out.find(": ");
      run.completed = r.exit_code == 0 && colon != std::string::npos &&
                      std::sscanf(r.out.c_str() + colon + 2,
                                  "%lld unchanged, %lld changed, %lld new, %lld deleted, "
                                  "%lld skipped",
                                  &u, &c, &n, &d, &s) == 5;
      counts = ReprojectCounts{static_cast<std::int64_t>(u), static_cast<std::int64_t>(c),
                               static_cast<std::int64_t>(n), static_cast<std::int64_t>(d),
                               static_cast<std::int64_t>(s)};
    } else {
      bool started = false;
      run.start_us = wall_us();
      try {
        ReprojectOptions options;
        options.batch_size = batch_size;
        Reprojection reprojection(url, topic, options);
        run.as_of = reprojection.as_of();
        started = true;
        for (DocWrite& w : desired) {
          const std::string where = w.doc_key;
          reprojection.add(std::move(w), where);
        }
        counts = reprojection.finish();
        run.completed = true;
      } catch (const std::exception&) {
        // A fault; the run is recorded if it got as far as its as_of.
      }
      run.end_us = wall_us();
      if (!started) {
        ++counters.reprojection_failures;
        continue;
      }
    }
    ++(run.completed ? counters.reprojections : counters.reprojection_failures);
    counters.reproject_unchanged += static_cast<std::uint64_t>(counts.unchanged);
    counters.reproject_changed += static_cast<std::uint64_t>(counts.changed);
    counters.reproject_created += static_cast<std::uint64_t>(counts.created);
    counters.reproject_deleted += static_cast<std::uint64_t>(counts.deleted);
    counters.reproject_skipped += static_cast<std::uint64_t>(counts.skipped);
    runs.push_back(std::move(run));
  }
  std::remove(path.c_str());
}

// Reads torture.t0's events as they commit, before purge removes them, so
// that every reprojection event and its predecessor can be checked.
class Recorder {
 public:
  struct Row {
    std::int64_t watermark = 0;
    std::int32_t doc = -1;
    std::int32_t reproject = -1;  // the run named by the payload
    std::int64_t version = 0;
    std::int64_t committed_us = 0;
    bool deleted = false;
  };

  explicit Recorder(std::string url) : url_(std::move(url)) {}

  void run(const std::atomic<bool>& stop) {
    while (!stop) {
      poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // Reads what is new; false on a database failure.
  bool poll() {
    try {
      if (!conn_) conn_ = std::make_unique<pqxx::connection>(url_);
      for (;;) {
        pqxx::read_transaction tx(*conn_);
        const pqxx::result rows = tx.exec_params(
            "SELECT watermark, doc_key, doc_version, op = 'delete', "
            "(payload->>'reproject')::int, "
            "(extract(epoch FROM committed_at) * 1000000)::bigint FROM oasync.events "
            "WHERE topic = $1 AND watermark > $2 ORDER BY watermark LIMIT 5000",
            data_topic(kReprojected), last_);
        tx.commit();
        for (const auto& row : rows) {
          Row r;
          r.watermark = row[0].as<std::int64_t>();
          r.doc = doc_number(row[1].as<std::string>(), kReprojected);
          r.version = row[2].as<std::int64_t>();
          r.deleted = row[3].as<bool>();
          if (!row[4].is_null()) r.reproject = row[4].as<std::int32_t>();
          r.committed_us = row[5].as<std::int64_t>();
          // Commit order is watermark order: a jump means purge was first.
          if (r.watermark != last_ + 1) gaps_ += r.watermark - last_ - 1;
          last_ = r.watermark;
          rows_.push_back(r);
        }
        if (rows.size() < 5000) return true;
      }
    } catch (const std::exception&) {
      conn_.reset();
      return false;
    }
  }

  const std::vector<Row>& rows() const { return rows_; }
  // Events purged before the recorder read them.
  std::int64_t gaps() const { return gaps_; }

 private:
  std::string url_;
  std::unique_ptr<pqxx::connection> conn_;
  std::int64_t last_ = 0;
  std::int64_t gaps_ = 0;
  std::vector<Row> rows_;
};

// ---------------------------------------------------------------- checks

struct Event {
  std::string doc_key;
  std::int64_t version = 0;
  Op op = Op::upsert;
  std::int64_t attempt = -1;  // from the payload (or the pointer ledger); -1 for deletes
  int index = -1;
  std::string stream;
  std::int64_t seq = 0;
  std::int64_t committed_us = 0;
  std::string scope;
  std::optional<std::string> previous_scope;
  // The scope the payload was written for (upserts).
  std::optional<std::string> payload_scope;
  int reproject = -1;  // the reprojection run named by the payload
};

struct ExitRow {
  std::string doc_key;
  std::int64_t version = 0;
};

struct Journal {
  // Per topic index: watermark -> event. Data topics, then the writers'
  // marker topics, then the scratch topic (empty when it is not registered).
  std::vector<std::map<std::int64_t, Event>> events;
  std::vector<std::int64_t> floors, heads;
  // Per data topic: scope left -> watermark -> exit row.
  std::vector<std::map<std::string, std::map<std::int64_t, ExitRow>>> exits;
  std::size_t scratch = 0;  // index of the scratch topic
};

Journal load_journal(const std::string& url, const Settings& settings, const Ledger& ledger,
                     Violations& violations) {
  Journal j;
  const int topics = kTopics + settings.writer_ids() + 1;
  j.scratch = static_cast<std::size_t>(topics - 1);
  j.events.resize(static_cast<std::size_t>(topics));
  j.floors.resize(static_cast<std::size_t>(topics));
  j.heads.resize(static_cast<std::size_t>(topics));
  j.exits.resize(kTopics);
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  for (int t = 0; t < topics; ++t) {
    const std::string topic = t < kTopics                       ? data_topic(t)
                              : t < static_cast<int>(j.scratch) ? marker_topic(t - kTopics)
                                                                : std::string(kScratchTopic);
    const pqxx::result pos =
        tx.exec_params("SELECT purged_through, head FROM oasync.topics WHERE topic = $1", topic);
    if (pos.empty()) continue;  // the scratch topic, removed
    j.floors[static_cast<std::size_t>(t)] = pos[0][0].as<std::int64_t>();
    j.heads[static_cast<std::size_t>(t)] = pos[0][1].as<std::int64_t>();
    const pqxx::result rows = tx.exec_params(
        "SELECT watermark, doc_key, doc_version, op, (payload->>'b')::bigint * 1000 + "
        "(payload->>'a')::bigint, (payload->>'i')::int, payload->>'s', (payload->>'q')::bigint, "
        "(extract(epoch FROM committed_at) * 1000000)::bigint, scope, previous_scope, "
        "payload->>'sc', (payload->>'reproject')::int, payload IS NULL, "
        "encode(substring(payload_hash FROM 1 FOR 8), 'hex') FROM oasync.events WHERE topic = $1",
        topic);
    auto& out = j.events[static_cast<std::size_t>(t)];
    for (const auto& row : rows) {
      const std::int64_t w = row[0].as<std::int64_t>();
      Event e;
      e.doc_key = row[1].as<std::string>();
      e.version = row[2].as<std::int64_t>();
      e.op = row[3].as<std::string>() == "delete" ? Op::delete_ : Op::upsert;
      if (!row[4].is_null()) e.attempt = row[4].as<std::int64_t>();
      if (!row[5].is_null()) e.index = row[5].as<int>();
      if (!row[6].is_null()) e.stream = row[6].as<std::string>();
      if (!row[7].is_null()) e.seq = row[7].as<std::int64_t>();
      e.committed_us = row[8].as<std::int64_t>();
      e.scope = row[9].as<std::string>();
      if (!row[10].is_null()) e.previous_scope = row[10].as<std::string>();
      if (!row[11].is_null()) e.payload_scope = row[11].as<std::string>();
      if (!row[12].is_null()) e.reproject = row[12].as<int>();
      const bool no_payload = row[13].as<bool>();
      if (e.op == Op::upsert && (t == kPointer) != no_payload) {
        violations.add(fmt::format("{} watermark {}: an upsert {} a payload", topic, w,
                                   no_payload ? "without" : "with"));
      }
      if (t == kPointer && e.op == Op::upsert && !row[14].is_null()) {
        // A pointer event: which write it was, from its payload hash.
        const auto it =
            ledger.pointer_writes.find(std::stoull(row[14].as<std::string>(), nullptr, 16));
        if (it == ledger.pointer_writes.end()) {
          violations.add(fmt::format("{} watermark {}: payload hash of no write sent", topic, w));
        } else {
          const PointerWrite& p = it->second;
          e.attempt = p.attempt;
          e.index = p.index;
          e.stream = fmt::format("w{}", p.writer);
          e.seq = p.seq;
          e.payload_scope = tenant(p.tenant);
        }
      }
      out.emplace(w, std::move(e));
    }
  }
  for (const auto& row :
       tx.exec("SELECT topic, scope, watermark, doc_key, doc_version FROM oasync.scope_exits")) {
    for (int t = 0; t < kTopics; ++t) {
      if (row[0].as<std::string>() != data_topic(t)) continue;
      j.exits[static_cast<std::size_t>(t)][row[1].as<std::string>()].emplace(
          row[2].as<std::int64_t>(), ExitRow{row[3].as<std::string>(), row[4].as<std::int64_t>()});
    }
  }
  tx.commit();
  return j;
}

std::string doc_key_of(int topic, int doc, std::int64_t attempt) {
  if (doc < 0) return fmt::format("batch:{}.{}", attempt / 1000, attempt % 1000);
  return data_prefix(topic) + std::to_string(doc);
}

// The committed attempts, from their markers (never purged): when each
// committed, and which committed at a given time (transactions started in the
// same microsecond share a commit time).
struct Markers {
  std::unordered_map<std::int64_t, std::int64_t> commit;            // attempt -> time
  std::unordered_multimap<std::int64_t, std::int64_t> attempts_at;  // time -> attempt

  explicit Markers(const Journal& j) {
    for (std::size_t t = kTopics; t < j.scratch; ++t) {
      for (const auto& [w, e] : j.events[t]) {
        commit[e.attempt] = e.committed_us;
        attempts_at.emplace(e.committed_us, e.attempt);
      }
    }
  }
  // Whether attempt's marker committed at `committed_us`.
  bool committed(std::int64_t attempt, std::int64_t committed_us) const {
    const auto m = commit.find(attempt);
    return m != commit.end() && m->second == committed_us;
  }
};

// Whether a writer accounts for the delete of `doc_key` at (topic t, w): an
// answer says it applied there, or an unanswered attempt that deleted that doc
// committed in its transaction.
bool writer_delete(const Ledger& ledger, const Markers& markers, int t, std::int64_t w,
                   std::int64_t committed_us, const std::string& doc_key) {
  if (ledger.applied.count(position_key(t, w)) != 0) return true;
  const auto [from, to] = markers.attempts_at.equal_range(committed_us);
  for (auto it = from; it != to; ++it) {
    const auto u = ledger.unacked.find(it->second);
    if (u == ledger.unacked.end()) continue;
    for (const Sent& s : u->second) {
      if (s.topic == t && s.op == Op::delete_ && s.invalid == Invalid::none &&
          data_prefix(t) + std::to_string(s.doc) == doc_key) {
        return true;
      }
    }
  }
  return false;
}

// Invariants of the journal against the ledger:
//  1. every write acknowledged as applied is present at its acknowledged
//     watermark with its doc, version and op (unless purge removed it);
//  2. every upsert of a data topic (and of the scratch topic) that a writer
//     sent comes from an attempt whose marker committed in the same
//     transaction (all or nothing), and an answered attempt's events are
//     exactly the writes answered as applied; pointer events carry no payload
//     and are matched to their write by payload hash; upserts whose payload
//     names a reprojection run are left to check_reprojections;
//  3. a delete event that no answer accounts for belongs to an unanswered
//     attempt that committed in its transaction and deleted that doc (in
//     torture.t0 it may be a reprojection's instead: check_reprojections);
//  4. per doc, no two consecutive upserts of one source stream have a
//     non-increasing seq (a duplicate was never applied);
//  5. scopes: an upsert's scope is the one its payload was written for; a
//     delete keeps its doc's scope; an event records the scope its doc left
//     (previous_scope) exactly when the doc moved, each such event has the
//     exit row of that scope, each exit row its event, and none is left at
//     or below the floor.
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
  const Markers markers(j);
  for (const auto& [attempt, answer] : ledger.refused) {
    if (markers.commit.count(attempt) != 0) {
      violations.add(fmt::format("attempt {} was answered as not applied ({}), yet it committed",
                                 attempt, answer));
    }
  }
  std::unordered_set<std::int64_t> applied_writes;  // attempt * 64 + index
  for (const auto& [position, a] : ledger.applied) applied_writes.insert(a.attempt * 64 + a.index);
  const auto has_marker = [&](const Event& e) {
    return markers.committed(e.attempt, e.committed_us);
  };
  std::unordered_set<std::int64_t> journaled_writes;  // attempt * 64 + index

  for (int t = 0; t < kTopics; ++t) {
    const std::string topic = data_topic(t);
    std::map<std::string, std::map<std::int64_t, const Event*>> chains;
    for (const auto& [w, e] : j.events[static_cast<std::size_t>(t)]) {
      chains[e.doc_key][e.version] = &e;
      if (e.op == Op::upsert && e.payload_scope != e.scope) {
        violations.add(
            fmt::format("{} watermark {}: {} v{} is in scope \"{}\", written for "
                        "scope \"{}\"",
                        topic, w, e.doc_key, e.version, e.scope, e.payload_scope.value_or("?")),
            Kind::scope_leak);
      }
      if (e.op == Op::upsert && e.reproject >= 0) {
        if (t != kReprojected) {
          violations.add(fmt::format("{} watermark {}: a reprojection write", topic, w));
        }
        continue;  // check_reprojections
      }
      if (e.op == Op::upsert) {
        if (!has_marker(e)) {
          violations.add(fmt::format("{} watermark {}: attempt {} has no marker in its transaction",
                                     topic, w, e.attempt));
        }
        if (!journaled_writes.insert(e.attempt * 64 + e.index).second) {
          violations.add(
              fmt::format("{} watermark {}: write {} of attempt {} is in the journal "
                          "twice (applied again)",
                          topic, w, e.index, e.attempt));
        }
        if (ledger.acked.count(e.attempt) != 0 &&
            applied_writes.count(e.attempt * 64 + e.index) == 0) {
          violations.add(
              fmt::format("{} watermark {}: write {} of answered attempt {} is in the "
                          "journal but was not answered as applied",
                          topic, w, e.index, e.attempt));
        }
        continue;
      }
      // Not a writer's: in torture.t0, a reprojection's (check_reprojections).
      if (!writer_delete(ledger, markers, t, w, e.committed_us, e.doc_key) && t != kReprojected) {
        violations.add(fmt::format("{} watermark {}: delete of {} v{} that no write accounts for",
                                   topic, w, e.doc_key, e.version));
      }
    }
    for (const auto& [key, chain] : chains) {
      const Event* previous = nullptr;
      for (const auto& [version, e] : chain) {
        const bool follows = previous != nullptr && previous->version + 1 == version;
        if (follows && previous->op == Op::upsert && e->op == Op::upsert && !e->stream.empty() &&
            previous->stream == e->stream && e->seq <= previous->seq) {
          violations.add(fmt::format("{} {} v{}: seq {} of stream {} applied after seq {}", topic,
                                     key, version, e->seq, e->stream, previous->seq));
        }
        // Scope moves, where the previous version is retained.
        std::optional<std::string> left;
        if (follows && e->op == Op::upsert && previous->scope != e->scope) left = previous->scope;
        if (follows && e->op == Op::delete_ && e->scope != previous->scope) {
          violations.add(
              fmt::format("{} {} v{}: a delete moved the doc from scope \"{}\" to "
                          "\"{}\"",
                          topic, key, version, previous->scope, e->scope));
        }
        if ((follows || version == 1) && e->previous_scope != left) {
          violations.add(fmt::format("{} {} v{}: previous_scope {} where the doc left {}", topic,
                                     key, version, e->previous_scope.value_or("NULL"),
                                     left.value_or("no scope")));
        }
        if (e->previous_scope && *e->previous_scope == e->scope) {
          violations.add(
              fmt::format("{} {} v{}: previous_scope equals its scope", topic, key, version));
        }
        previous = e;
      }
    }
    // Exit rows and the events that moved docs, both ways (retained only).
    const auto& exits = j.exits[static_cast<std::size_t>(t)];
    const std::int64_t floor = j.floors[static_cast<std::size_t>(t)];
    const auto exit_of = [&](const std::string& scope, std::int64_t w) -> const ExitRow* {
      const auto s = exits.find(scope);
      if (s == exits.end()) return nullptr;
      const auto it = s->second.find(w);
      return it == s->second.end() ? nullptr : &it->second;
    };
    for (const auto& [w, e] : j.events[static_cast<std::size_t>(t)]) {
      if (!e.previous_scope) continue;
      const ExitRow* x = exit_of(*e.previous_scope, w);
      if (x == nullptr || x->doc_key != e.doc_key || x->version != e.version) {
        violations.add(
            fmt::format("{} watermark {}: {} v{} left scope \"{}\" without its exit "
                        "row",
                        topic, w, e.doc_key, e.version, *e.previous_scope));
      }
    }
    for (const auto& [scope, rows] : exits) {
      for (const auto& [w, x] : rows) {
        if (w <= floor) {
          violations.add(
              fmt::format("{}: exit row of {} from scope \"{}\" at watermark {}, at or "
                          "below the floor {}: purge left it behind",
                          topic, x.doc_key, scope, w, floor));
          continue;
        }
        const auto it = j.events[static_cast<std::size_t>(t)].find(w);
        if (it == j.events[static_cast<std::size_t>(t)].end() ||
            it->second.previous_scope != scope || it->second.doc_key != x.doc_key) {
          violations.add(
              fmt::format("{}: exit row of {} from scope \"{}\" at watermark {} has no "
                          "event that moved it",
                          topic, x.doc_key, scope, w));
        }
      }
    }
  }
  // The scratch topic: outside the ledger (its watermarks restart when it is
  // registered again), but its writers' upserts are all or nothing too.
  for (const auto& [w, e] : j.events[j.scratch]) {
    if (e.op == Op::upsert && !has_marker(e)) {
      violations.add(fmt::format("{} watermark {}: attempt {} has no marker in its transaction",
                                 kScratchTopic, w, e.attempt));
    }
  }
}

// A reprojection never clobbers a live write: for every event a reprojection
// of torture.t0 wrote (an upsert whose payload names its run; a delete that no
// writer accounts for, committed in a transaction without a writer's marker,
// inside a run's time window), the doc's previous event (version - 1) has a
// watermark at or below that run's as_of, and the event itself is above it.
// Its upserts are docs of the run's desired set, its deletes docs outside it.
// A t0 delete that neither a writer nor a reprojection accounts for is a
// violation. Checked over everything the recorder read as it was committed
// and what the journal still holds (which must agree with it, and still hold
// all of it above the floor).
void check_reprojections(const Journal& j, const Ledger& ledger, const Recorder& recorder,
                         const std::vector<ReprojectRun>& runs, Violations& violations,
                         std::uint64_t& checked, std::uint64_t& unverifiable) {
  const std::string topic = data_topic(kReprojected);
  std::map<std::int64_t, Recorder::Row> history;
  for (const Recorder::Row& r : recorder.rows()) history.emplace(r.watermark, r);
  for (const auto& [w, e] : j.events[kReprojected]) {
    Recorder::Row r;
    r.watermark = w;
    r.doc = doc_number(e.doc_key, kReprojected);
    r.reproject = e.op == Op::upsert ? e.reproject : -1;
    r.version = e.version;
    r.committed_us = e.committed_us;
    r.deleted = e.op == Op::delete_;
    const auto [it, fresh] = history.emplace(w, r);
    const Recorder::Row& seen = it->second;
    if (!fresh && (seen.doc != r.doc || seen.version != r.version || seen.deleted != r.deleted ||
                   seen.reproject != r.reproject || seen.committed_us != r.committed_us)) {
      violations.add(
          fmt::format("{} watermark {}: the recorder read doc {} v{}, the journal now "
                      "has doc {} v{}",
                      topic, w, seen.doc, seen.version, r.doc, r.version));
    }
  }
  // What the recorder read above the floor is still there: only purge removes events.
  for (const Recorder::Row& r : recorder.rows()) {
    if (r.watermark > j.floors[kReprojected] && j.events[kReprojected].count(r.watermark) == 0) {
      violations.add(
          fmt::format("{} watermark {}: doc {} v{} was read as committed and is gone "
                      "(the floor is {})",
                      topic, r.watermark, r.doc, r.version, j.floors[kReprojected]));
    }
  }
  std::map<std::pair<int, std::int64_t>, std::int64_t> by_version;  // (doc, version) -> watermark
  for (const auto& [w, r] : history) by_version[{r.doc, r.version}] = w;
  const Markers markers(j);
  std::map<int, const ReprojectRun*> by_number;
  for (const ReprojectRun& run : runs) by_number[run.run] = &run;
  const auto in_window = [](const ReprojectRun& run, std::int64_t us) {
    return us >= run.start_us - 1000 && us <= run.end_us + 1000;
  };
  for (const auto& [w, r] : history) {
    if (r.reproject < 0 && !r.deleted) continue;  // a writer's upsert (check_journal)
    if (r.deleted && writer_delete(ledger, markers, kReprojected, w, r.committed_us,
                                   data_prefix(kReprojected) + std::to_string(r.doc))) {
      continue;
    }
    const ReprojectRun* run = nullptr;
    if (r.reproject >= 0) {
      const auto it = by_number.find(r.reproject);
      if (it != by_number.end()) run = it->second;
    } else {
      for (const ReprojectRun& candidate : runs) {
        if (in_window(candidate, r.committed_us)) run = &candidate;
      }
    }
    const std::string what = fmt::format("{} watermark {}: {} of doc {} v{}", topic, w,
                                         r.deleted ? "delete" : "upsert", r.doc, r.version);
    if (run == nullptr) {
      violations.add(what + " that neither a writer nor a reprojection accounts for",
                     r.reproject >= 0 ? Kind::clobber : Kind::general);
      continue;
    }
    ++checked;
    if (!in_window(*run, r.committed_us)) {
      violations.add(
          fmt::format("{} by reprojection {}, committed outside its run", what, run->run),
          Kind::clobber);
    }
    if (run->desired.count(r.doc) == (r.deleted ? 1u : 0u)) {
      violations.add(fmt::format("{} by reprojection {}, whose desired set {} that doc", what,
                                 run->run, r.deleted ? "lists" : "does not list"));
    }
    if (w <= run->as_of) {
      violations.add(
          fmt::format("{} by reprojection {} at or below its as_of {}", what, run->run, run->as_of),
          Kind::clobber);
    }
    if (r.version == 1) continue;
    const auto previous = by_version.find({r.doc, r.version - 1});
    if (previous == by_version.end()) {
      ++unverifiable;  // purged before the recorder read it
    } else if (previous->second > run->as_of) {
      violations.add(fmt::format("{} by reprojection {} (as_of {}) overwrote v{} written at "
                                 "watermark {}, after its as_of",
                                 what, run->run, run->as_of, r.version - 1, previous->second),
                     Kind::clobber);
    }
  }
}

// Every consumer that reads everything (on the primary or the standby)
// printed every retained event exactly once, in order, as the journal has it;
// the events it printed that purge removed since agree with what the sinks
// acknowledged.
void check_consumers(const Journal& j, const Ledger& ledger,
                     const std::vector<std::unique_ptr<Consumer>>& consumers,
                     Violations& violations) {
  for (const auto& c : consumers) {
    if (c->spec().tenant) continue;
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
            it->second.version != s.version || (it->second.op == Op::delete_) != s.deleted) {
          ++mismatches;
        }
      } else if (const auto a = ledger.applied.find(position_key(c->topic(), s.watermark));
                 a != ledger.applied.end() &&
                 (a->second.doc != s.doc || a->second.version != s.version ||
                  (a->second.op == Op::delete_) != s.deleted)) {
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

// Every scoped consumer printed exactly its tenant's view of the retained
// journal: the events of its scope and the exits from it (as deletes), with
// their docs, versions and ops. (Nothing of another scope, and a strictly
// increasing order, were checked line by line as it printed.)
void check_scoped_consumers(const Journal& j,
                            const std::vector<std::unique_ptr<Consumer>>& consumers,
                            Violations& violations) {
  for (const auto& c : consumers) {
    if (!c->spec().tenant) continue;
    const auto t = static_cast<std::size_t>(c->topic());
    const std::string scope = tenant(*c->spec().tenant);
    const std::int64_t floor = j.floors[t];
    std::map<std::int64_t, Seen> expected;
    for (const auto& [w, e] : j.events[t]) {
      if (e.scope == scope) {
        expected[w] = Seen{w, doc_number(e.doc_key, c->topic()), e.op == Op::delete_, e.version};
      }
    }
    if (const auto x = j.exits[t].find(scope); x != j.exits[t].end()) {
      for (const auto& [w, row] : x->second) {
        if (w > floor)
          expected[w] = Seen{w, doc_number(row.doc_key, c->topic()), true, row.version};
      }
    }
    std::int64_t printed = 0, missing = 0, extra = 0, different = 0;
    std::optional<std::int64_t> example;
    std::set<std::int64_t> covered;
    for (const Seen& s : c->seen()) {
      if (s.watermark <= floor) continue;
      ++printed;
      covered.insert(s.watermark);
      const auto it = expected.find(s.watermark);
      if (it == expected.end()) {
        ++extra;
        example = example.value_or(s.watermark);
      } else if (it->second.doc != s.doc || it->second.version != s.version ||
                 it->second.deleted != s.deleted) {
        ++different;
        example = example.value_or(s.watermark);
      }
    }
    for (const auto& [w, s] : expected) {
      if (covered.count(w) == 0) {
        ++missing;
        example = example.value_or(w);
      }
    }
    if (missing + extra + different != 0) {
      violations.add(fmt::format(
          "{}: of the {} events of its view retained after {}, printed {}: {} missing, {} not of "
          "its view, {} different (first at watermark {}; last {}; {})",
          c->name(), expected.size(), floor, printed, missing, extra, different,
          example.value_or(0), c->last(), c->last_exit()));
    }
  }
}

// The apply_within writer's own state and its batches commit together: the
// attempts in public.torture_state are exactly those whose marker committed.
std::uint64_t check_state(const std::string& url, const Settings& settings, const Journal& j,
                          Violations& violations) {
  std::set<std::int64_t> state;
  {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec("SELECT attempt FROM public.torture_state")) {
      state.insert(row[0].as<std::int64_t>());
    }
  }
  std::set<std::int64_t> markers;
  for (const auto& [w, e] : j.events[static_cast<std::size_t>(marker_index(settings.writers))]) {
    markers.insert(e.attempt);
  }
  for (const std::int64_t a : state) {
    if (markers.count(a) == 0) {
      violations.add(
          fmt::format("apply_within attempt {}: its state row committed, its batch "
                      "did not",
                      a));
    }
  }
  for (const std::int64_t a : markers) {
    if (state.count(a) == 0) {
      violations.add(
          fmt::format("apply_within attempt {}: its batch committed, its state row "
                      "did not",
                      a));
    }
  }
  return state.size();
}

// ---------------------------------------------------------------- setup

// The roles of scope security: a writer, a reader group that the policies
// name, and one login role per tenant, a member of the group and bound to that
// tenant alone. Roles are cluster-wide: dropped when this goes, after the
// database.
class Roles {
 public:
  Roles() = default;
  Roles(const Roles&) = delete;
  Roles& operator=(const Roles&) = delete;
  ~Roles() {
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
      try {
        pqxx::connection admin(admin_url());
        pqxx::nontransaction tx(admin);
        tx.exec("DROP ROLE IF EXISTS " + tx.quote_name(*it));
      } catch (...) {
        // A role left in a throwaway cluster is harmless.
      }
    }
  }

  void create(const std::string& db_url) {
    const std::string base = fmt::format("torture_{}", getpid());
    writer_ = base + "_writer";
    group_ = base + "_readers";
    for (int k = 0; k < kTenants; ++k) readers_.push_back(fmt::format("{}_r{}", base, k));
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE ROLE " + tx.quote_name(writer_) + " LOGIN");
    created_.push_back(writer_);
    tx.exec("CREATE ROLE " + tx.quote_name(group_) + " NOLOGIN");
    created_.push_back(group_);
    for (const std::string& r : readers_) {
      tx.exec("CREATE ROLE " + tx.quote_name(r) + " LOGIN IN ROLE " + tx.quote_name(group_));
      created_.push_back(r);
    }
    // Each reader bound to its tenant; then the policies, for the group.
    for (int k = 0; k < kTenants; ++k) {
      grant({"--reader", readers_[static_cast<std::size_t>(k)], "--scope", tenant(k)}, db_url);
    }
    grant({"--reader", group_, "--scope-security", "on"}, db_url);
  }

  // A connection string of tenant k's reader.
  std::string reader_url(const std::string& db_url, int k) const {
    return db_url + " user='" + readers_[static_cast<std::size_t>(k)] + "'";
  }
  const std::string& reader(int k) const { return readers_[static_cast<std::size_t>(k)]; }
  const std::string& group() const { return group_; }

 private:
  void grant(std::vector<std::string> args, const std::string& db_url) {
    args.insert(args.begin(), {"--database-url", db_url, "grants", "--writer", writer_});
    const ProcessResult r = run_oasync(args);
    if (r.exit_code != 0) throw std::runtime_error("oasync grants failed: " + r.err);
  }

  std::string writer_, group_;
  std::vector<std::string> readers_;
  std::vector<std::string> created_;
};

// Sabotage "scope": tenant 0's reader loses its binding, so its sessions no
// longer narrow to a scope, and a permissive policy lets the reader group see
// every row: its follower is shown other tenants' events.
void leak_scope(const std::string& url, const Roles& roles) {
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  for (const char* table : {"oasync.docs", "oasync.events", "oasync.scope_exits"}) {
    tx.exec(fmt::format("CREATE POLICY torture_leak ON {} FOR SELECT TO {} USING (true)", table,
                        tx.quote_name(roles.group())));
  }
  tx.exec_params("DELETE FROM oasync.scope_bindings WHERE role = $1", roles.reader(0));
  tx.commit();
}

// Sabotage "clobber": a reprojection-marked write, without expected_version,
// onto the doc of torture.t0 changed last, which changed after the as_of of
// the last recorded reprojection. Returns what it did, or "" if it could not.
std::string clobber_write(const std::string& url, const std::vector<ReprojectRun>& runs) {
  if (runs.empty()) return "";
  const ReprojectRun& run = runs.back();
  const auto doc = try_query(url,
                             "SELECT doc_key, last_watermark FROM oasync.docs WHERE topic = $1 "
                             "AND doc_version > 0 ORDER BY last_watermark DESC LIMIT 1",
                             data_topic(kReprojected));
  if (!doc || doc->empty() || (*doc)[0][1].as<std::int64_t>() <= run.as_of) return "";
  const std::string key = (*doc)[0][0].as<std::string>();
  DocWrite w;
  w.topic = data_topic(kReprojected);
  w.doc_key = key;
  w.scope = tenant(doc_number(key, kReprojected) % kTenants);
  w.payload = fmt::format(R"({{"reproject":{},"d":{},"sc":"{}","pad":"clobber"}})", run.run,
                          doc_number(key, kReprojected), w.scope);
  Batch batch;
  batch.writes.push_back(w);
  const auto results = Sink::open(url)->apply(batch);
  return fmt::format(
      "wrote {} as reprojection {} (as_of {}) over its change at watermark {}, "
      "answered {} v{} at {}",
      key, run.run, run.as_of, (*doc)[0][1].as<std::int64_t>(), to_string(results[0].outcome),
      results[0].doc_version, results[0].watermark);
}

// Waits until the server answers again (after a restart), up to two minutes.
bool server_up(const std::string& url) {
  for (int i = 0; i < 1200; ++i) {
    if (try_query(url, "SELECT 1")) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The delivery followers against the journal (delivery.hpp lists the checks).
void check_delivery(const std::string& url, const Journal& j, delivery::Delivery& delivery) {
  std::vector<delivery::TopicJournal> journals(kTopics);
  const auto counters = try_query(url, "SELECT topic, epoch_counter FROM oasync.topics");
  for (int t = 0; t < kTopics; ++t) {
    auto& out = journals[static_cast<std::size_t>(t)];
    out.topic = data_topic(t);
    out.floor = j.floors[static_cast<std::size_t>(t)];
    out.head = j.heads[static_cast<std::size_t>(t)];
    if (counters) {
      for (const auto& row : *counters) {
        if (row[0].as<std::string>() == out.topic) out.epoch_counter = row[1].as<std::int64_t>();
      }
    }
    for (const auto& [w, e] : j.events[static_cast<std::size_t>(t)]) {
      out.events.emplace(w, delivery::JournalEvent{e.doc_key, e.version, e.op == Op::delete_,
                                                   e.scope, e.previous_scope});
    }
  }
  delivery.check(journals);
}

int usage(const char* message) {
  std::fprintf(stderr,
               "oasync_torture: %s\n"
               "usage: oasync_torture [--seconds N] [--writers N] [--consumers N] [--seed N] "
               "[--sabotage [delete|scope|clobber|skip|leak|repeat|channel-skip]]\n",
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
      // Plain --sabotage deletes an event, as it always did.
      settings.sabotage = Sabotage::deleted_event;
      if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        const std::string kind = argv[++i];
        if (kind == "delete") {
          settings.sabotage = Sabotage::deleted_event;
        } else if (kind == "scope") {
          settings.sabotage = Sabotage::leaked_scope;
        } else if (kind == "clobber") {
          settings.sabotage = Sabotage::clobbered_write;
        } else if (kind == "skip") {
          settings.sabotage = Sabotage::delivery_skip;
        } else if (kind == "leak") {
          settings.sabotage = Sabotage::delivery_leak;
        } else if (kind == "repeat") {
          settings.sabotage = Sabotage::delivery_repeat;
        } else if (kind == "channel-skip") {
          settings.sabotage = Sabotage::delivery_channel_skip;
        } else {
          return usage(("unknown sabotage \"" + kind + "\"").c_str());
        }
      }
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
                 "torture: cannot run: it restarts PostgreSQL and needs the throwaway server "
                 "that scripts/with-postgres starts (OASYNC_PG_CTL, OASYNC_PG_DATADIR are not "
                 "set)\n");
    return 1;
  }

  Roles roles;  // dropped after the database
  TestDatabase db(TestDatabase::Setup::migrated);
  std::map<int, std::string> epochs_at_start;
  try {
    const std::string path = fmt::format("/tmp/oasync-torture-{}.yaml", getpid());
    std::ofstream(path) << catalog(settings.writer_ids(), CatalogShape{});
    const ProcessResult applied = run_oasync({"--database-url", db.url(), "topics", "apply", path});
    std::remove(path.c_str());
    if (applied.exit_code != 0) throw std::runtime_error("topics apply failed: " + applied.err);
    roles.create(db.url());
    pqxx::connection conn(db.url());
    pqxx::work tx(conn);
    tx.exec("CREATE TABLE public.torture_state (attempt bigint PRIMARY KEY)");
    for (int t = 0; t < kTopics; ++t) {
      epochs_at_start[t] = tx.exec_params1("SELECT epoch::text FROM oasync.topics WHERE topic = $1",
                                           data_topic(t))[0]
                               .as<std::string>();
    }
    tx.commit();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oasync_torture: setup failed: %s\n", e.what());
    return 1;
  }
  // The hot standby, copied from the primary once the setup is in place.
  std::unique_ptr<Replica> replica;
  if (Replica::available()) {
    try {
      replica = std::make_unique<Replica>();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "oasync_torture: the streaming replica did not start: %s\n", e.what());
      return 1;
    }
  }
  std::printf(
      "torture: %.0f s, %d writers + 1 apply_within writer, %d consumers per topic + 1 scoped "
      "each%s, %d topics x %d docs (%s in pointer mode), %d tenants, sabotage %s, seed %llu\n",
      settings.seconds, settings.writers, settings.consumers_per_topic,
      replica ? " + 1 on a hot standby" : " (no standby: no replica possible here)", kTopics,
      settings.docs, data_topic(kPointer).c_str(), kTenants, to_string(settings.sabotage),
      static_cast<unsigned long long>(settings.seed));
  std::fflush(stdout);

  Counters counters;
  Violations violations;
  Ledger ledger;
  EpochLog epochs;
  Recorder recorder(db.url());
  std::vector<ReprojectRun> runs;
  std::atomic<bool> stop_faults{false}, stop_writers{false}, give_up{false}, scratch_writes{false};
  std::vector<std::atomic<std::int64_t>> targets(kTopics);
  for (auto& target : targets) target = -1;

  // oasync serve, its followers and their proxy (delivery.hpp).
  delivery::Options delivery_options;
  delivery_options.database_url = db.url();
  for (int t = 0; t < kTopics; ++t) delivery_options.topics.push_back(data_topic(t));
  delivery_options.pointer_topic = kPointer;
  delivery_options.tenants = kTenants;
  delivery_options.seconds = settings.seconds;
  delivery_options.seed = settings.seed;
  delivery_options.max_payload_bytes = kPayloadLimit + 1;
  delivery_options.sabotage =
      settings.sabotage == Sabotage::delivery_skip           ? delivery::Sabotage::skip
      : settings.sabotage == Sabotage::delivery_leak         ? delivery::Sabotage::leak
      : settings.sabotage == Sabotage::delivery_repeat       ? delivery::Sabotage::repeat
      : settings.sabotage == Sabotage::delivery_channel_skip ? delivery::Sabotage::channel_skip
                                                             : delivery::Sabotage::none;
  delivery::Delivery delivery(delivery_options, [&](std::string what, delivery::Finding finding) {
    violations.add(std::move(what),
                   finding == delivery::Finding::scope_leak ? Kind::scope_leak : Kind::delivery);
  });
  try {
    delivery.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oasync_torture: the delivery part did not start: %s\n", e.what());
    return 1;
  }

  // The stdio writers' connections go through the cutting proxy.
  CutProxy proxy;
  const std::string through_proxy = proxy.url(db.name());
  std::vector<std::unique_ptr<Writer>> writers;
  std::vector<std::unique_ptr<Consumer>> consumers;
  std::vector<std::thread> writer_threads, consumer_threads;
  for (int w = 0; w < settings.writer_ids(); ++w) {
    const bool stdio = w < settings.writers;
    writers.push_back(std::make_unique<Writer>(
        w, stdio ? Transport::stdio : Transport::apply_within, settings,
        stdio ? through_proxy : db.url(), counters, violations, ledger, scratch_writes));
    writer_threads.emplace_back(
        [&, w] { writers[static_cast<std::size_t>(w)]->run(stop_writers); });
  }
  const auto add_consumer = [&](ConsumerSpec spec) {
    spec.epoch = epochs_at_start[spec.topic];
    consumers.push_back(std::make_unique<Consumer>(
        std::move(spec), settings.seed * 7777 + consumers.size(), counters, violations, epochs));
  };
  for (int t = 0; t < kTopics; ++t) {
    for (int c = 0; c < settings.consumers_per_topic; ++c) {
      add_consumer(
          {t, fmt::format("consumer {} of {}", c, data_topic(t)), db.url(), "", {}, false});
    }
    add_consumer({t, fmt::format("scoped consumer of {} ({})", data_topic(t), tenant(t)),
                  roles.reader_url(db.url(), t), "", t, false});
  }
  if (replica) {
    add_consumer({kStandbyTopic,
                  fmt::format("standby consumer of {}", data_topic(kStandbyTopic)),
                  replica->url(db.name()),
                  "",
                  {},
                  true});
  }
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    consumer_threads.emplace_back([&, i] {
      consumers[i]->run(stop_writers, targets[static_cast<std::size_t>(consumers[i]->topic())],
                        give_up);
    });
  }
  std::thread faults([&] {
    run_faults(settings, admin_url(), replica ? replica->url("postgres") : "", db.name(), counters,
               violations, stop_faults);
  });
  std::thread cuts([&] { run_cuts(settings, proxy, counters, stop_faults); });
  std::thread purges([&] { run_purges(settings, db.url(), counters, stop_faults); });
  std::thread registry(
      [&] { run_registry(settings, db.url(), counters, epochs, scratch_writes, stop_faults); });
  std::thread reprojections(
      [&] { run_reprojections(settings, db.url(), counters, runs, stop_faults); });
  std::thread recording([&] { recorder.run(stop_writers); });
  std::thread delivery_faults([&] { delivery.run_faults(stop_faults); });

  const auto started = Clock::now();
  const auto end = started + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(settings.seconds));
  auto next_progress = started + std::chrono::seconds(60);
  bool leaked = false;
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (settings.sabotage == Sabotage::leaked_scope && !leaked &&
        Clock::now() >= started + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(settings.seconds / 3))) {
      for (int i = 0; i < 100 && !leaked; ++i) {
        try {
          leak_scope(db.url(), roles);
          leaked = true;
        } catch (const std::exception&) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a fault; again
        }
      }
    }
    if (Clock::now() >= next_progress) {
      next_progress += std::chrono::seconds(60);
      std::printf(
          "  %3.0f min: %llu batches, %llu sink kills, %llu restarts, %llu purges, "
          "%llu reprojections, %llu consumer events, %llu violations\n",
          std::chrono::duration<double>(Clock::now() - started).count() / 60,
          static_cast<unsigned long long>(counters.batches.load()),
          static_cast<unsigned long long>(counters.sink_kills.load()),
          static_cast<unsigned long long>(counters.restarts.load()),
          static_cast<unsigned long long>(counters.purges.load()),
          static_cast<unsigned long long>(counters.reprojections.load()),
          static_cast<unsigned long long>(counters.consumer_events.load()),
          static_cast<unsigned long long>(violations.count()));
      std::fflush(stdout);
    }
  }
  // Quiesce: faults, purges, registry changes and reprojections first, then
  // the writers (their last batch is answered or abandoned) and the recorder,
  // then the consumers catch up with the heads.
  stop_faults = true;
  faults.join();
  cuts.join();
  purges.join();
  registry.join();
  reprojections.join();
  delivery_faults.join();
  if (!server_up(db.url())) violations.add("the server did not come back after the last restart");
  stop_writers = true;
  for (auto& t : writer_threads) t.join();
  recording.join();
  for (int i = 0; i < 100 && !recorder.poll(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (auto heads = try_query(db.url(), "SELECT topic, head FROM oasync.topics")) {
    for (const auto& row : *heads) {
      for (int t = 0; t < kTopics; ++t) {
        if (row[0].as<std::string>() == data_topic(t)) {
          targets[static_cast<std::size_t>(t)] = row[1].as<std::int64_t>();
        }
      }
    }
  }
  if (replica) {
    try {
      replica->catch_up();
    } catch (const std::exception& e) {
      violations.add(std::string("the standby did not catch up: ") + e.what());
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
  // The delivery followers catch up with the heads and write their state.
  if (auto heads = try_query(db.url(),
                             "SELECT topic, epoch_counter, head, epoch::text FROM oasync.topics")) {
    std::map<std::string, delivery::Delivery::Head> at;
    for (const auto& row : *heads) {
      for (int t = 0; t < kTopics; ++t) {
        if (row[0].as<std::string>() == data_topic(t)) {
          at[data_topic(t)] = {row[1].as<std::int64_t>(), row[2].as<std::int64_t>(),
                               row[3].as<std::string>()};
        }
      }
    }
    delivery.finish(at, 60);
  } else {
    violations.add("the heads could not be read for the delivery followers");
  }

  std::string sabotage_done;
  switch (settings.sabotage) {
    case Sabotage::none:
      break;
    case Sabotage::deleted_event: {
      pqxx::connection conn(db.url());
      pqxx::work tx(conn);
      tx.exec_params(
          "DELETE FROM oasync.events WHERE topic = $1 AND watermark = (SELECT max(watermark) FROM "
          "oasync.events WHERE topic = $1)",
          data_topic(0));
      tx.commit();
      sabotage_done = "deleted the newest event of " + data_topic(0);
      break;
    }
    case Sabotage::leaked_scope:
      if (leaked) {
        sabotage_done = fmt::format("unbound {} and let {} read every row, at a third of the run",
                                    roles.reader(0), roles.group());
      }
      break;
    case Sabotage::clobbered_write:
      sabotage_done = clobber_write(db.url(), runs);
      break;
    case Sabotage::delivery_skip:
    case Sabotage::delivery_leak:
    case Sabotage::delivery_repeat:
    case Sabotage::delivery_channel_skip:
      sabotage_done = delivery.sabotage_done();
      break;
  }

  const Journal journal = load_journal(db.url(), settings, ledger, violations);
  check_journal(journal, ledger, violations);
  std::uint64_t reprojection_events = 0, unverifiable = 0;
  check_reprojections(journal, ledger, recorder, runs, violations, reprojection_events,
                      unverifiable);
  check_consumers(journal, ledger, consumers, violations);
  check_scoped_consumers(journal, consumers, violations);
  check_delivery(db.url(), journal, delivery);
  const std::uint64_t state_rows = check_state(db.url(), settings, journal, violations);
  const ProcessResult verify = run_oasync({"--database-url", db.url(), "verify"});
  if (verify.exit_code != 0) {
    violations.add(
        fmt::format("oasync verify exited {}:\n{}{}", verify.exit_code, verify.out, verify.err));
  }

  std::int64_t purged = 0;
  std::int64_t events = 0;
  std::int64_t moves = 0;
  for (int t = 0; t < kTopics; ++t) {
    purged += journal.floors[static_cast<std::size_t>(t)];
    events += journal.heads[static_cast<std::size_t>(t)];
    for (const auto& [w, e] : journal.events[static_cast<std::size_t>(t)]) {
      moves += e.previous_scope ? 1 : 0;
    }
  }
  const auto n = [](const std::atomic<std::uint64_t>& v) {
    return static_cast<unsigned long long>(v.load());
  };
  std::printf(
      "  batches %llu (attempts %llu; resent after a fault %llu, after an answer %llu; "
      "abandoned %llu)\n"
      "  writes sent %llu; acknowledged: applied %llu, unchanged %llu, duplicate %llu, "
      "conflict %llu, rejected %llu\n"
      "  scratch writes: applied %llu, rejected as unregistered %llu\n"
      "  malformed frames %llu, error answers %llu (outcome_unknown %llu; answered not "
      "applied %llu)\n"
      "  connections cut by the proxy %llu\n"
      "  apply_within: committed %llu, aborted %llu (second apply_within refused %llu), "
      "failed under faults %llu; state rows %llu\n"
      "  sink kills (SIGKILL) %llu\n"
      "  backend terminations %llu (standby %llu)\n"
      "  postgres restarts (-m immediate) %llu\n"
      "  purges %llu (failed under faults %llu); events %lld, purged %lld; scope moves retained "
      "%lld\n"
      "  reprojections %llu (failed under faults %llu): unchanged %llu, changed %llu, new %llu, "
      "deleted %llu, skipped %llu; their events checked %llu (previous version purged unread "
      "%llu; events the recorder missed %lld)\n"
      "  topics apply: limit changes %llu, scratch registered %llu, removed %llu, removals "
      "refused %llu, failed under faults %llu; epoch resets %llu (failed %llu)\n"
      "  consumer restarts (SIGKILL) %llu, other consumer exits %llu, stale cursors %llu, "
      "epoch changes seen %llu\n"
      "  events printed: consumers %llu, scoped consumers %llu, standby consumer %llu\n"
      "  oasync verify: %s\n",
      n(counters.batches), n(counters.attempts), n(counters.resent_after_fault),
      n(counters.resent_after_ack), n(counters.abandoned), n(counters.writes_sent),
      n(counters.outcomes[0]), n(counters.outcomes[1]), n(counters.outcomes[2]),
      n(counters.outcomes[3]), n(counters.outcomes[4]), n(counters.scratch_applied),
      n(counters.scratch_unregistered), n(counters.malformed_frames), n(counters.error_answers),
      n(counters.unknown_answers), static_cast<unsigned long long>(ledger.refused.size()),
      n(counters.commit_cuts), n(counters.within_commits), n(counters.within_aborts),
      n(counters.within_second_refused), n(counters.within_errors),
      static_cast<unsigned long long>(state_rows), n(counters.sink_kills), n(counters.terminations),
      n(counters.standby_terminations), n(counters.restarts), n(counters.purges),
      n(counters.purge_failures), static_cast<long long>(events), static_cast<long long>(purged),
      static_cast<long long>(moves), n(counters.reprojections), n(counters.reprojection_failures),
      n(counters.reproject_unchanged), n(counters.reproject_changed), n(counters.reproject_created),
      n(counters.reproject_deleted), n(counters.reproject_skipped),
      static_cast<unsigned long long>(reprojection_events),
      static_cast<unsigned long long>(unverifiable), static_cast<long long>(recorder.gaps()),
      n(counters.limit_changes), n(counters.scratch_created), n(counters.scratch_removed),
      n(counters.removals_refused), n(counters.registry_failures), n(counters.epoch_resets),
      n(counters.epoch_reset_failures), n(counters.consumer_kills), n(counters.consumer_exits),
      n(counters.stale_cursors), n(counters.epoch_changes_seen), n(counters.consumer_events),
      n(counters.scoped_events), n(counters.standby_events),
      verify.exit_code == 0 ? "clean" : "PROBLEMS");
  const delivery::Counts& dc = delivery.counts();
  std::printf(
      "  delivery: deliveries checked %llu (messages %llu in %llu responses; %llu responses "
      "not comparable: snapshots, resyncs, events the recorder missed %lld), pointer upserts "
      "skipped %llu\n"
      "  delivery: server kills (SIGKILL) %llu, drains (SIGTERM) %llu, start retries %llu; hub "
      "sessions terminated %llu (not found %llu); revocations %llu; tokens refused %llu; "
      "sessions %llu\n"
      "  delivery: resyncs %llu (410 %llu, reset %llu); slow clients %llu, sockets that never "
      "read %llu, clients cut mid-response %llu; peak server RSS %lld MiB (expected at most "
      "%lld MiB)\n"
      "  delivery: sync:v1 channels: batches %llu (of the responses), joins %llu, stale notices "
      "%llu (of the 410s), positions of an epoch the recorder never saw %llu\n",
      static_cast<unsigned long long>(dc.deliveries_checked),
      static_cast<unsigned long long>(dc.messages), static_cast<unsigned long long>(dc.responses),
      static_cast<unsigned long long>(dc.unchecked_responses),
      static_cast<long long>(dc.recorder_missed), static_cast<unsigned long long>(dc.pointer_skips),
      n(dc.server_kills), n(dc.server_drains), n(dc.server_start_retries), n(dc.hub_terminations),
      n(dc.hub_not_found), n(dc.revocations), static_cast<unsigned long long>(dc.refused_tokens),
      static_cast<unsigned long long>(dc.sessions),
      static_cast<unsigned long long>(dc.stale_410 + dc.resets),
      static_cast<unsigned long long>(dc.stale_410), static_cast<unsigned long long>(dc.resets),
      n(dc.slow_clients), n(dc.slow_sockets), n(dc.cut_clients),
      static_cast<long long>(dc.peak_rss.load() >> 20),
      static_cast<long long>(dc.expected_rss >> 20),
      static_cast<unsigned long long>(dc.channel_batches),
      static_cast<unsigned long long>(dc.channel_joins),
      static_cast<unsigned long long>(dc.channel_stale),
      static_cast<unsigned long long>(dc.unmapped_epochs));
  for (const auto& c : consumers) {
    if (!c->last_exit().empty()) {
      std::printf("  last other exit of %s: %s", c->name().c_str(), c->last_exit().c_str());
    }
  }
  for (const std::string& line : violations.lines()) std::printf("  VIOLATION: %s\n", line.c_str());
  std::printf("  violations %llu\n", static_cast<unsigned long long>(violations.count()));
  if (settings.sabotage != Sabotage::none) {
    // Each sabotage must be noticed by the check made for it.
    const std::uint64_t noticed =
        settings.sabotage == Sabotage::leaked_scope || settings.sabotage == Sabotage::delivery_leak
            ? violations.count(Kind::scope_leak)
        : settings.sabotage == Sabotage::clobbered_write ? violations.count(Kind::clobber)
        : settings.sabotage == Sabotage::delivery_skip ||
                settings.sabotage == Sabotage::delivery_repeat ||
                settings.sabotage == Sabotage::delivery_channel_skip
            ? violations.count(Kind::delivery)
            : violations.count();
    const bool detected = !sabotage_done.empty() && noticed > 0;
    std::printf("  sabotage %s (%s): %s\n", to_string(settings.sabotage),
                sabotage_done.empty() ? "COULD NOT BE APPLIED" : sabotage_done.c_str(),
                detected ? "detected" : "NOT DETECTED");
    return detected ? 0 : 1;
  }
  return violations.count() == 0 ? 0 : 1;
}
