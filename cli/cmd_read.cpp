// Reading the journal: oasync tail, oasync snapshot, oasync doc get.
#include <chrono>
#include <csignal>
#include <limits>
#include <thread>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/options.hpp"
#include "oasync/reader.hpp"
#include "output.hpp"

namespace oasync::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct TailOptions {
  std::vector<std::string> topics;
  std::int64_t after = -1;  // -1: start at the head
  std::string epoch;
  bool follow = false;
  std::string scope;
  bool has_scope = false;
  std::string format = "text";
  std::int64_t limit = 0;
  double heartbeat_seconds = 0;
  int page_size = 5000;
  int poll_ms = 1000;
  std::string consumer;
};

struct Cursor {
  std::string topic;
  std::string epoch;
  std::int64_t watermark = 0;
};

// Receives the sink's commit notifications; only whether one came matters.
class Wakeup : public pqxx::notification_receiver {
 public:
  explicit Wakeup(pqxx::connection_base& conn) : notification_receiver(conn, kNotifyChannel) {}
  void operator()(const std::string&, int) override {}
};

enum class TailEnd { caught_up, limit_reached, stale };

// Tails the topics until they are caught up (or, following, forever). Returns
// how it ended; throws oasync::Error on failures (retryable ones are retried
// by the caller from the cursors, which always hold the last printed
// watermark).
class Tailer {
 public:
  Tailer(const TailOptions& o, Output& out) : o_(o), out_(out) {}

  // Positions every cursor: at --after, or at the head. Returns false (after
  // printing the stale envelope) when a cursor cannot resume.
  bool start(Reader& reader, pqxx::connection_base& conn) {
    for (const auto& topic : o_.topics) {
      Cursor c{topic, o_.epoch, o_.after};
      if (!o_.consumer.empty() && o_.after < 0) {
        // A named consumer resumes from its acknowledged position.
        pqxx::read_transaction tx(conn);
        const pqxx::result saved = tx.exec_params(
            "SELECT epoch::text, watermark FROM oasync.consumers WHERE name = $1 AND topic = $2",
            o_.consumer, topic);
        if (!saved.empty()) {
          c.epoch = saved[0][0].as<std::string>();
          c.watermark = saved[0][1].as<std::int64_t>();
        }
      }
      const ResumeCheck check = reader.check(topic, c.epoch, c.watermark < 0 ? 0 : c.watermark);
      if (check.reason == StaleReason::unknown_topic) {
        throw Error(fmt::format("topic \"{}\" is not registered", topic));
      }
      if (c.watermark < 0) {
        if (check.reason == StaleReason::epoch_changed) return stale(check, c);
        c.watermark = check.position.head;
      } else if (!check.resumable()) {
        return stale(check, c);
      }
      c.epoch = check.position.epoch;
      cursors_.push_back(std::move(c));
    }
    return true;
  }

  // One pass over every topic: prints what is new. Sets `progressed`.
  TailEnd pass(Reader& reader, pqxx::connection_base& conn, bool& progressed) {
    progressed = false;
    positions_.clear();
    for (Cursor& c : cursors_) {
      const ResumeCheck check = reader.check(c.topic, c.epoch, c.watermark);
      if (!check.resumable()) {
        stale(check, c);
        return TailEnd::stale;
      }
      positions_.push_back(check.position);
      while (c.watermark < check.position.head) {
        const std::optional<std::string> scope =
            o_.has_scope ? std::optional<std::string>(o_.scope) : std::nullopt;
        Page page =
            reader.read(c.topic, c.epoch, c.watermark, check.position.head, scope, o_.page_size);
        if (page.stale) {
          stale(*page.stale, c);
          return TailEnd::stale;
        }
        for (const Event& e : page.events) {
          out_.event(e);
          ++printed_;
          if (o_.limit > 0 && printed_ >= o_.limit) {
            c.watermark = e.watermark;
            out_.flush();
            acknowledge(conn, c);
            return TailEnd::limit_reached;
          }
        }
        // Flush before moving the cursor: the cursor is what was printed.
        out_.flush();
        c.watermark = page.through;
        acknowledge(conn, c);
        progressed = true;
        last_output_ = Clock::now();
      }
    }
    return TailEnd::caught_up;
  }

  void heartbeat_if_due() {
    if (o_.heartbeat_seconds <= 0) return;
    if (Clock::now() - last_output_ < std::chrono::duration<double>(o_.heartbeat_seconds)) return;
    out_.heartbeat(positions_);
    out_.flush();
    last_output_ = Clock::now();
  }

  // How long to wait for a notification before polling anyway.
  std::chrono::microseconds wait_budget() const {
    std::chrono::microseconds budget = std::chrono::milliseconds(o_.poll_ms);
    if (o_.heartbeat_seconds > 0) {
      const auto until_heartbeat = std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::duration<double>(o_.heartbeat_seconds) - (Clock::now() - last_output_));
      budget = std::max(std::chrono::microseconds(0), std::min(budget, until_heartbeat));
    }
    return budget;
  }

  std::int64_t last_watermark() const {
    std::int64_t w = 0;
    for (const auto& c : cursors_) w = std::max(w, c.watermark);
    return w;
  }

 private:
  // Records a named consumer's position: what was printed and flushed.
  void acknowledge(pqxx::connection_base& conn, const Cursor& c) {
    if (o_.consumer.empty()) return;
    pqxx::work tx(conn, "oasync_ack");
    tx.exec_params("SELECT oasync.ack_consumer($1, $2, $3::uuid, $4)", o_.consumer, c.topic,
                   c.epoch, c.watermark);
    tx.commit();
  }

  // Prints the stale-cursor envelope and says so on stderr; returns false so
  // that start() can `return stale(...)`.
  bool stale(const ResumeCheck& check, const Cursor& c) {
    out_.stale(check, c.epoch, c.watermark);
    out_.flush();
    fmt::print(stderr,
               "oasync: cursor {} of topic \"{}\" is stale ({}); resync with oasync snapshot\n",
               c.watermark, c.topic, to_string(check.reason));
    return false;
  }

  const TailOptions& o_;
  Output& out_;
  std::vector<Cursor> cursors_;
  std::vector<TopicPosition> positions_;
  std::int64_t printed_ = 0;
  Clock::time_point last_output_ = Clock::now();
};

int run_tail(const Context& ctx, const TailOptions& o) {
  std::signal(SIGPIPE, SIG_IGN);
  Output out(parse_format(o.format));
  Tailer tailer(o, out);
  bool started = false;
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    try {
      auto conn = ctx.connect();
      Reader reader(*conn);
      std::unique_ptr<Wakeup> wakeup;
      if (o.follow) wakeup = std::make_unique<Wakeup>(*conn);
      if (!started) {
        if (!tailer.start(reader, *conn)) return to_int(ExitCode::resync_required);
        started = true;
      }
      for (;;) {
        bool progressed = false;
        const TailEnd end = tailer.pass(reader, *conn, progressed);
        backoff = std::chrono::milliseconds(100);
        if (end == TailEnd::stale) return to_int(ExitCode::resync_required);
        if (end == TailEnd::limit_reached || !o.follow) return to_int(ExitCode::ok);
        tailer.heartbeat_if_due();
        if (!progressed) {
          const auto budget = tailer.wait_budget();
          conn->await_notification(static_cast<long>(budget.count() / 1000000),
                                   static_cast<long>(budget.count() % 1000000));
        }
      }
    } catch (const Error& e) {
      // A follower is long-lived: it also waits for a database that is not up yet.
      if (e.retryable() == Retryable::no || (!started && !o.follow)) throw;
      fmt::print(stderr, "oasync tail: {}; reconnecting in {} ms, resuming after watermark {}\n",
                 e.what(), backoff.count(), tailer.last_watermark());
    } catch (const pqxx::broken_connection& e) {
      if (!started && !o.follow) throw Error(e.what(), Retryable::yes);
      fmt::print(
          stderr,
          "oasync tail: connection lost; reconnecting in {} ms, resuming after watermark {}\n",
          backoff.count(), tailer.last_watermark());
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

}  // namespace

void add_read_commands(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  auto t = std::make_shared<TailOptions>();
  CLI::App* tail = app.add_subcommand("tail", "Print a topic's journal events in watermark order");
  tail->footer(
      "\nWithout --after, starts at the head and prints only new events. A cursor that can no\n"
      "longer resume (purged, ahead of the head, or from another epoch) prints a stale-cursor\n"
      "error envelope and exits 3: resync with `oasync snapshot`. --follow waits for commits\n"
      "(woken by the sink's notification, and polling every --poll-ms in case none comes),\n"
      "and reconnects with backoff from the last printed watermark when the connection drops\n"
      "(at start too, until the database is reachable; each try is reported on stderr).");
  tail->add_option("TOPIC", t->topics, "Topics to read")->required();
  tail->add_option("--after", t->after, "Start after this watermark (0: from the beginning)")
      ->check(CLI::NonNegativeNumber);
  tail->add_option("--epoch", t->epoch, "The epoch the --after watermark belongs to");
  tail->add_flag("--follow", t->follow, "Keep waiting for new events");
  tail->add_option("--scope", t->scope, "Only events of this scope (tenant)");
  tail->add_option("--format", t->format, "text, ndjson, or proto (length-delimited ServerMessage)")
      ->check(CLI::IsMember({"text", "ndjson", "proto"}));
  tail->add_option("--limit", t->limit, "Stop after this many events")->check(CLI::PositiveNumber);
  tail->add_option("--heartbeat", t->heartbeat_seconds,
                   "With --follow: print a heartbeat with the heads after SECONDS of silence")
      ->check(CLI::PositiveNumber);
  tail->add_option("--page-size", t->page_size,
                   "Events read per query (default 5000; memory stays bounded)")
      ->check(CLI::Range(1, 100000));
  tail->add_option("--consumer", t->consumer,
                   "Record the position as consumer NAME, and resume from it (without --after)");
  tail->add_option("--poll-ms", t->poll_ms,
                   "With --follow: poll this often even without notifications (hot standbys)")
      ->check(CLI::Range(10, 600000));
  out.push_back({tail, [&ctx, t]() {
                   t->has_scope = !t->scope.empty();
                   return run_tail(ctx, *t);
                 }});

  struct SnapshotOptions {
    std::string topic;
    std::string scope;
    std::int64_t since = -1;
    std::string format = "ndjson";
    int page_size = 1000;
  };
  auto s = std::make_shared<SnapshotOptions>();
  CLI::App* snapshot =
      app.add_subcommand("snapshot", "Print every live doc of a topic, consistently");
  snapshot->footer(
      "\nReads in one REPEATABLE READ snapshot: first a header with the topic's epoch and head,\n"
      "then one line per doc. `snapshot` followed by `tail --after HEAD --epoch EPOCH` misses\n"
      "nothing and repeats nothing, even under concurrent writes: the way out of a stale cursor.\n"
      "--since W (delta resync) prints only docs changed after W, tombstones included; it exits\n"
      "3 when tombstones it would need were already purged.");
  snapshot->add_option("TOPIC", s->topic, "Topic")->required();
  snapshot->add_option("--scope", s->scope, "Only docs of this scope (tenant)");
  snapshot->add_option("--since", s->since, "Only docs changed after this watermark")
      ->check(CLI::NonNegativeNumber);
  snapshot->add_option("--format", s->format, "ndjson or proto (length-delimited ServerMessage)")
      ->check(CLI::IsMember({"ndjson", "proto"}));
  snapshot->add_option("--page-size", s->page_size, "Docs read per query")
      ->check(CLI::Range(1, 100000));
  out.push_back({snapshot, [&ctx, s]() {
                   std::signal(SIGPIPE, SIG_IGN);
                   auto conn = ctx.connect();
                   Reader reader(*conn);
                   Output output(parse_format(s->format));
                   const auto since =
                       s->since < 0 ? std::nullopt : std::optional<std::int64_t>(s->since);
                   const auto scope =
                       s->scope.empty() ? std::nullopt : std::optional<std::string>(s->scope);
                   const StaleReason reason = reader.snapshot(
                       s->topic, scope, since, s->page_size,
                       [&](const Reader::SnapshotHeader& h) { output.snapshot_header(h); },
                       [&](const Doc& d) {
                         output.doc(d);
                         if (output.buffered() > (1 << 20)) output.flush();
                       });
                   if (reason == StaleReason::unknown_topic) {
                     throw Error(fmt::format("topic \"{}\" is not registered", s->topic));
                   }
                   if (reason != StaleReason::none) {
                     ResumeCheck check = reader.check(s->topic, "", s->since);
                     check.reason = reason;
                     output.stale(check, "", s->since);
                     output.flush();
                     fmt::print(stderr,
                                "oasync: delta resync of \"{}\" since {} is no longer possible "
                                "(tombstones were purged); take a full snapshot\n",
                                s->topic, s->since);
                     return to_int(ExitCode::resync_required);
                   }
                   return to_int(ExitCode::ok);
                 }});

  struct DocOptions {
    std::string key;
    std::string topic;
    std::string format = "json";
  };
  auto d = std::make_shared<DocOptions>();
  CLI::App* doc = app.add_subcommand("doc", "Read docs");
  doc->require_subcommand(1);
  CLI::App* get = doc->add_subcommand("get", "Print the current doc with this key");
  get->footer(
      "\nPrints topic, scope, version, hash, tombstone flag and last watermark. An unknown key\n"
      "exits 1.");
  get->add_option("KEY", d->key, "Doc key")->required();
  get->add_option("--topic", d->topic, "The topic, when the key exists in several");
  get->add_option("--format", d->format, "json or proto (length-delimited ServerMessage)")
      ->check(CLI::IsMember({"json", "proto"}));
  out.push_back({get, [&ctx, d]() {
                   auto conn = ctx.connect();
                   Reader reader(*conn);
                   const auto topic =
                       d->topic.empty() ? std::nullopt : std::optional<std::string>(d->topic);
                   const auto found = reader.get_doc(d->key, topic);
                   if (!found) {
                     throw Error(fmt::format("no doc with key \"{}\"{}", d->key,
                                             topic ? " in topic \"" + *topic + "\"" : ""));
                   }
                   Output output(parse_format(d->format));
                   output.doc(*found);
                   return to_int(ExitCode::ok);
                 }});
}

}  // namespace oasync::cli
