// Retention: purge removes a prefix of each topic's journal, never a hole.
//
// The cutoff of a topic is the largest watermark C such that (1) that event
// and every earlier one are older than the age limit, and (2) at least
// keep_last events remain (C <= head - keep_last). An event whose timestamp is
// out of order with its watermark (its transaction started earlier but
// committed later) only delays the cutoff; it never causes a hole.
//
// Deletion runs in small batches; each batch deletes (floor, floor + n] and
// advances purged_through in the same transaction, so stale-cursor detection
// is exact at every moment, and concurrent sinks wait at most one batch.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection_base>

#include "oasync/options.hpp"

namespace oasync {

// Whether purge may cross the position of a recently seen consumer.
enum class Force { no, yes };

struct PurgeOptions {
  // Topics to purge; empty means every registered topic.
  std::vector<std::string> topics;
  // Overrides the topics' retention.max_age for this run (seconds).
  std::optional<std::int64_t> older_than_seconds;
  // Overrides the topics' retention.min_events for this run.
  std::optional<std::int64_t> keep_last;
  DryRun dry_run = DryRun::no;
  // Events (or tombstones) deleted per transaction. Smaller batches hold the
  // topic row, which sinks also lock, for less time.
  std::int64_t batch_size = 5000;
  Force force = Force::no;
  // Consumers that acknowledged within this many seconds are protected.
  std::int64_t consumer_window_seconds = 7 * 86400;
};

// A consumer whose position the purge would cross (it would then be stale).
struct BlockingConsumer {
  std::string name;
  std::int64_t watermark = 0;
  std::string last_seen;
};

struct TopicPurge {
  std::string topic;
  std::int64_t head = 0;
  std::int64_t old_floor = 0;
  // The floor after the run (with DryRun::yes: what it would be).
  std::int64_t new_floor = 0;
  // The cutoff the retention rule allows (new_floor unless refused).
  std::int64_t cutoff = 0;
  std::int64_t events_deleted = 0;
  std::int64_t tombstones_removed = 0;
  // Why nothing was cut, when nothing was: "no retention.max_age",
  // "nothing is old enough", "keep-last", or empty.
  std::string note;
  std::vector<BlockingConsumer> blocking;
  // True when blocking consumers stopped the purge of this topic.
  bool refused = false;
};

// Purges every selected topic. `progress(topic, deleted, total)` is called
// after each batch. Throws oasync::Error when a topic is unknown or the
// database fails (batches already committed stay committed, and consistent).
std::vector<TopicPurge> purge(
    pqxx::connection_base& conn, const PurgeOptions& options,
    const std::function<void(const std::string&, std::int64_t, std::int64_t)>& progress = {});

}  // namespace oasync
