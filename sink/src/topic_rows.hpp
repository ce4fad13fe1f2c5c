// Internal: the one reader of the topic registry (oasync.topics). The sink,
// purge, verify, topics, inspect and reproject all see a topic through it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "oasync/topics.hpp"
#include "pg.hpp"

namespace oasync::internal {

// One registered topic, as stored.
struct TopicRow {
  TopicState state;
  // Bumped whenever the sink's cached view of the topic must be refreshed.
  std::int64_t config_revision = 0;
  // The delta-resync floor (see migrations/0002_read_functions.sql).
  std::int64_t delta_floor = 0;

  const std::string& name() const { return state.spec.name; }
};

// Every registered topic, sorted by name (bytewise).
std::vector<TopicRow> read_topic_rows(pqxx::transaction_base& tx);

// The same through a libpq pipeline (the sink's own connection).
std::vector<TopicRow> read_topic_rows(pg::Pipeline& pipeline, PGconn* conn);

// The topic named `name`, if it is registered.
std::optional<TopicRow> read_topic_row(pqxx::transaction_base& tx, const std::string& name);

// The rows named in `wanted` (every row when `wanted` is empty), in name
// order. Throws oasync::Error (not_found) naming the first unregistered topic.
std::vector<TopicRow> select_topics(std::vector<TopicRow> rows,
                                    const std::vector<std::string>& wanted);

// "inline" / "pointer" as stored; throws oasync::Error (internal) otherwise.
PayloadMode parse_payload_mode(std::string_view text);

// A nullable bigint column.
std::optional<std::int64_t> optional_int(const pqxx::field& field);

}  // namespace oasync::internal
