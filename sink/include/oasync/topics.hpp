// The topic registry (oasync.topics): explicit topics and their policies.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection_base>

#include "oasync/options.hpp"

namespace oasync {

// pg_advisory_xact_lock key held while the registry is rewritten ("oasynct").
inline constexpr std::int64_t kTopicsLockKey = 0x6f6173796e6374;

enum class PayloadMode { inline_payload, pointer };

// "inline" / "pointer".
const char* to_string(PayloadMode mode) noexcept;

// A topic as declared in schema/topics.yaml.
struct TopicSpec {
  std::string name;
  // Every doc_key of the topic starts with it.
  std::string doc_key_prefix;
  PayloadMode payload_mode = PayloadMode::inline_payload;
  // Largest canonical payload accepted, in bytes.
  std::int64_t max_payload_bytes = 65536;
  // Purge removes events older than this many seconds (nullopt: never).
  std::optional<std::int64_t> retention_max_age_seconds;
  // Purge always keeps at least this many newest events.
  std::int64_t retention_min_events = 0;
  // Tombstones older than this many seconds are removed (nullopt: never).
  std::optional<std::int64_t> tombstone_retention_seconds;

  bool operator==(const TopicSpec&) const = default;
};

// A registered topic: its spec and where its journal stands.
struct TopicState {
  TopicSpec spec;
  std::string epoch;
  std::int64_t head = 0;
  std::int64_t purged_through = 0;
};

struct TopicsReport {
  std::vector<std::string> created;
  std::vector<std::string> updated;
  std::vector<std::string> removed;
  std::vector<std::string> unchanged;
};

// Makes the registry equal to `specs` in one transaction: creates missing
// topics (new epoch, head 0), updates changed policies, removes topics that
// are not listed. Idempotent. Throws oasync::Error, changing nothing, when a
// topic to remove still has docs or events, or a spec is invalid.
TopicsReport apply_topics(pqxx::connection_base& conn, const std::vector<TopicSpec>& specs,
                          DryRun dry_run = DryRun::no);

// All registered topics, sorted by name.
std::vector<TopicState> list_topics(pqxx::connection_base& conn);

// Gives `topic` a new random epoch, so that every existing cursor of it is
// stale (epoch_changed) and clients resync. For after a restore from backup,
// or a reprojection that discards history. Returns the new epoch; throws
// oasync::Error for an unknown topic.
std::string reset_epoch(pqxx::connection_base& conn, const std::string& topic);

// Validates a spec's fields; throws oasync::Error naming the field.
void validate(const TopicSpec& spec);

}  // namespace oasync
