// The torture run's delivery part: `oasync serve` in front of the torture's
// database, read as the three tenants by the official Durable Streams client
// and, over sync:v1 sockets (a channel per topic), by the official phoenix
// client (tests/e2e/torture-follower.mjs), under faults of its own, and every
// response or batch each follower received checked against the journal, by
// the same checks: a channel's batch is a response from the position before
// it to the batch's, a whole snapshot one from -1, a stale notice a 410, a
// heartbeat that moves the position an empty response (its range must hold
// nothing of the tenant's view).
//
// Faults, beside the run's own (kills, purges, epoch resets, scope moves,
// PostgreSQL restarts): the server SIGKILLed and started again on the same
// port, or drained with SIGTERM and started again; the hub's database session
// terminated (found in pg_stat_activity by the application name the driver
// gives the server, PGAPPNAME, and the hub's own statements); sessions revoked
// with `oasync sessions revoke`; tokens that expire every few seconds (the
// follower mints a fresh one when refused; a socket at each connect); raw
// clients that send a request and never read, raw sockets that join every
// topic and never read, and clients that disconnect mid-response. Some followers
// read through a sabotaging proxy (tests/e2e/torture-proxy.mjs), which damages
// one response when the run is told to (--sabotage skip|leak|repeat).
//
// Checks, per follower and per response:
//   - offsets never go back within a session; each response from a journal
//     offset W1 to W2 holds exactly the tenant's view of the journal in
//     (W1, W2] (the journal as a recorder read it during the run, before
//     purges, and as it is at the end): the events of its
//     scope and the exits from it (as deletes), in order, with their keys,
//     operations and versions; in the pointer topic an upsert may be missing
//     when its doc had left the scope by the time it was read (README, "A
//     scope's view");
//   - a doc's versions rise by one between changes, except after a delete
//     (it left the view, or was deleted) or from a snapshot on;
//   - no payload names another scope;
//   - every 410 is true (cursor_ahead never; a floor breach names a floor
//     above the follower's offset, at most the final floor; an epoch change
//     a real one) and every resync (410 then -1, or a reset) reaches its
//     snapshot's end before it goes stale again;
//   - at the end, each follower's state equals `oasync snapshot TOPIC
//     --scope S` (keys, versions, payloads);
//   - the server's peak RSS (VmHWM) stays within expected_peak_rss_bytes().
#pragma once

#include "oasync/serve/serve.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace oasync::test::delivery {

// What --sabotage damages on the delivery side: through the proxy (skip,
// leak, repeat), or in what a channel follower records (channel_skip).
enum class Sabotage { none, skip, leak, repeat, channel_skip };

// What a finding is about: a sabotage must be noticed by its own kind.
enum class Finding { delivery, scope_leak };
using Report = std::function<void(std::string, Finding)>;

// The serve.limits the driver writes into the server's config: small, so
// that long-polls time out, SSE streams end, buffers roll over and slow
// clients are dropped within a short run.
// The limits the run's server gets: small, so that long-polls time out, SSE
// streams end and slow clients are dropped within a short run.
serve::LimitsConfig torture_limits();

// The most resident memory `oasync serve` may reach under these limits, as
// the README's "Memory" states it:
//   base                       the process, its libraries and its sessions
// + 2 x response_bytes         responses in flight (a page is briefly held as
//                              messages and as the body built from them)
// + 3 x live_buffer_bytes      the hub's buffer of each followed topic (a
//   x followed topics          wake's events are read before it is trimmed),
//                              and the messages its events keep for their
//                              readers (a budget of the same size)
// + 3 x db_pool x page_bytes   a database result, its events and their
//                              messages per pool session (one part: no
//                              unscoped docs)
// + 2 x max_request_bytes      a request head being read per connection
//   x max_connections
// + margin                     allocator slack
// whatever the clients do: they may open connections up to the limits and
// never read.
std::int64_t expected_peak_rss_bytes(const serve::LimitsConfig& limits, int followed_topics);

// A data topic's journal at the end of the run, for the checks.
struct JournalEvent {
  std::string doc_key;
  std::int64_t version = 0;
  bool deleted = false;
  std::string scope;
  std::optional<std::string> previous_scope;
};
struct TopicJournal {
  std::string topic;
  std::int64_t floor = 0;  // purged_through
  std::int64_t head = 0;
  std::int64_t epoch_counter = 0;
  std::map<std::int64_t, JournalEvent> events;  // retained: floor < watermark <= head
};

struct Options {
  std::string database_url;
  std::vector<std::string> topics;  // the data topics
  int pointer_topic = -1;           // index into topics
  int tenants = 3;                  // scopes org:0 .. org:tenants-1
  double seconds = 40;
  std::uint64_t seed = 0;
  Sabotage sabotage = Sabotage::none;
  std::int64_t max_payload_bytes = 4097;
};

struct Counts {
  std::atomic<std::uint64_t> server_kills{0}, server_drains{0}, hub_terminations{0},
      hub_not_found{0}, revocations{0}, slow_clients{0}, slow_sockets{0}, cut_clients{0},
      server_start_retries{0};
  std::uint64_t deliveries_checked = 0, messages = 0, responses = 0, stale_410 = 0, resets = 0,
                refused_tokens = 0, sessions = 0, pointer_skips = 0, unchecked_responses = 0;
  // The sync:v1 channel followers' share: batches (and snapshots) checked,
  // stale notices, joins, and lines whose epoch the recorder never saw (not
  // comparable).
  std::uint64_t channel_batches = 0, channel_stale = 0, channel_joins = 0, unmapped_epochs = 0;
  std::int64_t recorder_missed = 0;
  std::atomic<std::int64_t> peak_rss{0};
  std::int64_t expected_rss = 0;
};

class Delivery {
 public:
  Delivery(Options options, Report report);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // Starts the server, the proxy and the followers. Throws when one of them
  // cannot start.
  void start();
  // The delivery faults, until `stop`; then the server runs again.
  void run_faults(const std::atomic<bool>& stop);
  // Where a topic ended: its epoch (and the epoch's counter) and its head.
  struct Head {
    std::int64_t epoch_counter = 0;
    std::int64_t head = 0;
    std::string epoch;
  };
  // After the writers stopped: each follower reads until it holds an offset
  // (or a channel position) of its topic's epoch at or past its head, and
  // writes its state. Waits up to `timeout_seconds`.
  void finish(const std::map<std::string, Head>& heads, int timeout_seconds);
  // Every check of the header, against the final journals.
  void check(const std::vector<TopicJournal>& journals);
  // What the proxy damaged ("" if nothing).
  std::string sabotage_done() const;
  const Counts& counts() const { return counts_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Counts counts_;
};

const char* to_string(Sabotage s);

}  // namespace oasync::test::delivery
