#include "oasync/consumers.hpp"

#include <pqxx/pqxx>

#include "consumer_rows.hpp"
#include "db.hpp"

namespace oasync {
namespace {

// Position and ack run on a caller's connection once per page: every name is
// qualified (see db.hpp, pin_search_path).
const char* const kPositionSql = R"SQL(
SELECT epoch::pg_catalog.text AS epoch, watermark FROM oasync.consumers
WHERE name OPERATOR(pg_catalog.=) $1::pg_catalog.text
  AND topic OPERATOR(pg_catalog.=) $2::pg_catalog.text
)SQL";

const char* const kAckSql = R"SQL(
SELECT oasync.ack_consumer($1::pg_catalog.text, $2::pg_catalog.text, $3::pg_catalog.uuid,
                           $4::bigint)
)SQL";

const char* const kListSql = R"SQL(
SELECT c.name, c.topic, c.epoch::text AS epoch, c.watermark, coalesce(t.head, 0) AS head,
       c.last_seen::text AS last_seen,
       coalesce((SELECT r.resumable FROM oasync.resume_check(c.topic, c.epoch, c.watermark) AS r),
                false) AS resumable
FROM oasync.consumers AS c
LEFT JOIN oasync.topics AS t ON t.topic = c.topic
ORDER BY c.name COLLATE "C", c.topic COLLATE "C"
)SQL";

// A consumer's position is current as resume_check (0006) has it: in the
// topic's epoch, or in an epoch that a timeline fork left in epoch_history and
// at or below the head where the histories part. The topic's epoch is read
// here, under the caller's topic lock, not taken from an earlier read.
const char* const kRecentBelowSql = R"SQL(
SELECT c.name, c.topic, c.epoch::text AS epoch, c.watermark, c.last_seen::text AS last_seen
FROM oasync.consumers AS c
JOIN oasync.topics AS t ON t.topic = c.topic
WHERE c.topic = $1 AND c.watermark < $2
  AND c.last_seen >= now() - make_interval(secs => $3)
  AND (c.epoch = t.epoch
       OR EXISTS (SELECT 1 FROM oasync.epoch_history AS h
                  WHERE h.topic = c.topic AND h.epoch = c.epoch
                    AND c.watermark <= h.valid_through))
ORDER BY c.name COLLATE "C"
)SQL";

ConsumerState consumer_from_row(const pqxx::row& row) {
  ConsumerState c;
  c.name = row["name"].as<std::string>();
  c.topic = row["topic"].as<std::string>();
  c.position = {row["epoch"].as<std::string>(), row["watermark"].as<std::int64_t>()};
  c.last_seen = row["last_seen"].as<std::string>();
  return c;
}

}  // namespace

std::optional<ConsumerPosition> consumer_position(pqxx::connection_base& conn,
                                                  const std::string& name,
                                                  const std::string& topic) {
  return internal::db_step("read consumer position", [&]() -> std::optional<ConsumerPosition> {
    pqxx::read_transaction tx(conn);
    const pqxx::result rows = tx.exec_params(kPositionSql, name, topic);
    if (rows.empty()) return std::nullopt;
    return ConsumerPosition{rows[0]["epoch"].as<std::string>(),
                            rows[0]["watermark"].as<std::int64_t>()};
  });
}

void ack_consumer(pqxx::connection_base& conn, const std::string& name, const std::string& topic,
                  const ConsumerPosition& position) {
  internal::db_step("record consumer position", [&] {
    pqxx::work tx(conn, "oasync_ack");
    tx.exec_params(kAckSql, name, topic, position.epoch, position.watermark);
    tx.commit();
  });
}

std::vector<ConsumerState> list_consumers(pqxx::connection_base& conn) {
  return internal::db_step("list consumers", [&] {
    pqxx::read_transaction tx(conn);
    internal::pin_search_path(tx);
    std::vector<ConsumerState> out;
    for (const auto& row : tx.exec(kListSql)) {
      ConsumerState c = consumer_from_row(row);
      c.head = row["head"].as<std::int64_t>();
      c.resumable = row["resumable"].as<bool>();
      out.push_back(std::move(c));
    }
    return out;
  });
}

namespace internal {

std::vector<ConsumerState> recent_consumers_below(pqxx::transaction_base& tx,
                                                  const std::string& topic, std::int64_t floor,
                                                  std::int64_t window_seconds) {
  std::vector<ConsumerState> out;
  for (const auto& row : tx.exec_params(kRecentBelowSql, topic, floor, window_seconds)) {
    out.push_back(consumer_from_row(row));
  }
  return out;
}

}  // namespace internal
}  // namespace oasync
