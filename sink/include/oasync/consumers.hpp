// Consumer cursors (oasync.consumers, migrations/0003_consumers.sql): named
// readers record the last watermark they processed, so that operators see
// who reads a topic and how far behind, a named reader resumes where it
// stopped, and purge does not pull the floor out from under an active one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection_base>

namespace oasync {

// A consumer's recorded position in one topic.
struct ConsumerPosition {
  std::string epoch;
  std::int64_t watermark = 0;
};

// A consumer as `oasync consumers` shows it.
struct ConsumerState {
  std::string name;
  std::string topic;
  ConsumerPosition position;
  // The topic's head now; 0 when the topic is gone.
  std::int64_t head = 0;
  // When it last acknowledged, as Postgres prints a timestamptz.
  std::string last_seen;
  // Whether its position still resumes (the resume rule of reader.hpp).
  bool resumable = false;

  std::int64_t lag() const { return head - position.watermark; }
};

// The recorded position of consumer `name` in `topic`, if it has one.
std::optional<ConsumerPosition> consumer_position(pqxx::connection_base& conn,
                                                  const std::string& name,
                                                  const std::string& topic);

// Records that consumer `name` processed `topic` through `position` (through
// oasync.ack_consumer: forward only within an epoch).
void ack_consumer(pqxx::connection_base& conn, const std::string& name, const std::string& topic,
                  const ConsumerPosition& position);

// Every consumer of every topic, by name, then topic.
std::vector<ConsumerState> list_consumers(pqxx::connection_base& conn);

}  // namespace oasync
