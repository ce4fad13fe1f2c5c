// oasync::inspect: where each topic's journal stands, and how much room
// oasync's tables take. What `oasync inspect` prints and exports.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection_base>

#include "oasync/topics.hpp"

namespace oasync {

struct TopicStats {
  // The registry row: spec, epoch, head, purged_through.
  TopicState state;
  // Events in the journal now (between purged_through and head).
  std::int64_t retained_events = 0;
  std::int64_t live_docs = 0;
  std::int64_t tombstones = 0;
  // Age of the oldest retained event in seconds; 0 when none is retained.
  std::int64_t oldest_event_age_seconds = 0;
};

// The on-disk size of one of oasync's tables.
struct TableSize {
  // Qualified name, e.g. "oasync.events".
  std::string table;
  std::int64_t table_bytes = 0;
  // All of its indexes together.
  std::int64_t index_bytes = 0;
};

struct Inspection {
  // In topic name order.
  std::vector<TopicStats> topics;
  // In table name order.
  std::vector<TableSize> tables;
};

// Reads every topic (or only `topic`) and the table sizes in one snapshot.
// Throws oasync::Error (not_found) for an unregistered topic.
Inspection inspect(pqxx::connection_base& conn, const std::optional<std::string>& topic = {});

}  // namespace oasync
