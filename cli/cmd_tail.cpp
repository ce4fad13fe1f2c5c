// oasync tail TOPIC... [--after W] [--epoch E] [--follow] [--scope S] [--format ...]
#include <chrono>
#include <csignal>
#include <thread>

#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/consumers.hpp"
#include "oasync/error.hpp"
#include "oasync/listener.hpp"
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
        if (const auto saved = consumer_position(conn, o_.consumer, topic)) {
          c.epoch = saved->epoch;
          c.watermark = saved->watermark;
        }
      }
      const ResumeCheck check = reader.check(topic, c.epoch, c.watermark < 0 ? 0 : c.watermark);
      if (check.reason == StaleReason::unknown_topic) {
        throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", topic));
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

  // One pass over every topic: prints what is new, up to each topic's head as
  // of its last page's read. Sets `progressed`.
  TailEnd pass(Reader& reader, pqxx::connection_base& conn, bool& progressed) {
    progressed = false;
    positions_.clear();
    for (Cursor& c : cursors_) {
      for (;;) {
        ReadRequest request;
        request.topic = c.topic;
        request.epoch = c.epoch;
        request.after = c.watermark;
        if (o_.has_scope) request.scope = o_.scope;
        request.max_events = o_.page_size;
        const std::int64_t before = c.watermark;
        bool limited = false;
        int pages = 0;
        const Page end = reader.read_pages(request, [&](Page& page) {
          try {
            for (const Event& e : page.events) {
              out_.event(e);
              c.watermark = e.watermark;
              if (o_.limit > 0 && ++printed_ >= o_.limit) {
                limited = true;
                break;
              }
            }
            // Flush before moving the cursor: the cursor is what was printed.
            out_.flush();
          } catch (...) {
            out_.discard();
            throw;
          }
          if (!limited) c.watermark = page.through;
          if (!page.events.empty()) last_output_ = Clock::now();
          // A named consumer's position is recorded every few pages.
          return !limited && (o_.consumer.empty() || ++pages < kPagesPerAck);
        });
        if (end.stale) {
          stale(*end.stale, c);
          return TailEnd::stale;
        }
        // A cursor of an epoch that forked (a failover) continues in the new one.
        c.epoch = end.position.epoch;
        if (c.watermark != before) {
          acknowledge(conn, c);
          progressed = true;
        }
        if (limited) return TailEnd::limit_reached;
        if (c.watermark == end.through && end.through == end.position.head) {
          positions_.push_back(end.position);
          break;  // caught up with the head the last page saw
        }
        if (c.watermark == before) break;  // nothing more in this pass
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
    if (!o_.consumer.empty()) ack_consumer(conn, o_.consumer, c.topic, {c.epoch, c.watermark});
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

  // How many pages a named consumer prints between two recorded positions.
  static constexpr int kPagesPerAck = 20;

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
      std::unique_ptr<CommitListener> listener;
      if (o.follow) listener = std::make_unique<CommitListener>(*conn);
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
        if (!progressed) listener->wait(tailer.wait_budget());
      }
    } catch (const Error& e) {
      // A follower is long-lived: it also waits for a database that is not up yet.
      if (e.retryable() == Retryable::no || (!started && !o.follow)) throw;
      fmt::print(stderr, "oasync tail: {}; reconnecting in {} ms, resuming after watermark {}\n",
                 e.what(), backoff.count(), tailer.last_watermark());
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

}  // namespace

void add_tail_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  auto t = std::make_shared<TailOptions>();
  CLI::App* tail = app.add_subcommand("tail", "Print a topic's journal events in watermark order");
  tail->footer(
      "\nWithout --after, starts at the head and prints only new events. A cursor that can no\n"
      "longer resume (purged, ahead of the head, or from another epoch) prints a stale-cursor\n"
      "error envelope and exits 3: resync with `oasync snapshot`. --follow waits for commits\n"
      "(woken by the sink's notification, and polling every --poll-ms in case none comes),\n"
      "and reconnects with backoff from the last printed watermark when the connection drops\n"
      "(at start too, until the database is reachable; each try is reported on stderr).\n"
      "--scope S prints S's view (its events, and docs leaving S as deletes); --scope '' is\n"
      "the unscoped docs' view, without --scope every scope's events.");
  tail->add_option("TOPIC", t->topics, "Topics to read")->required();
  tail->add_option("--after", t->after, "Start after this watermark (0: from the beginning)")
      ->check(CLI::NonNegativeNumber);
  tail->add_option("--epoch", t->epoch, "The epoch the --after watermark belongs to");
  tail->add_flag("--follow", t->follow, "Keep waiting for new events");
  CLI::Option* scope_option = tail->add_option(
      "--scope", t->scope, "Only events of this scope (tenant); '' is the unscoped docs");
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
  out.push_back({tail, [&ctx, t, scope_option]() {
                   // --scope '' is the unscoped docs' view; no --scope at
                   // all is every scope.
                   t->has_scope = scope_option->count() > 0;
                   return run_tail(ctx, *t);
                 }});
}

}  // namespace oasync::cli
