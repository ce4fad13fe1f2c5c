#include "oasync/inspect.hpp"

#include <pqxx/pqxx>

#include "db.hpp"
#include "topic_rows.hpp"

namespace oasync {
namespace {

// Counts for one topic in O(1): the journal is dense, so (purged_through,
// head] is what is retained and its oldest event is purged_through + 1; the
// doc counts are the counters the sink and purge keep (0007).
const char* const kTopicCountsSql = R"SQL(
SELECT t.head - t.purged_through AS retained_events, t.live_docs, t.tombstones,
       coalesce((SELECT extract(epoch FROM now() - e.committed_at)::bigint FROM oasync.events e
                 WHERE e.topic = t.topic AND e.watermark = t.purged_through + 1), 0)
           AS oldest_event_age_seconds
FROM oasync.topics t WHERE t.topic = $1
)SQL";

const char* const kTableSizesSql = R"SQL(
SELECT 'oasync.' || c.relname AS table_name, pg_table_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'oasync' AND c.relkind = 'r'
ORDER BY c.relname
)SQL";

}  // namespace

Inspection inspect(pqxx::connection_base& conn, const std::optional<std::string>& topic) {
  return internal::db_step("inspect", [&] {
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn, "oasync_inspect");
    internal::pin_search_path(tx);
    std::vector<std::string> wanted;
    if (topic) wanted.push_back(*topic);
    Inspection out;
    for (auto& row : internal::select_topics(internal::read_topic_rows(tx), wanted)) {
      TopicStats t;
      t.state = std::move(row.state);
      const pqxx::row counts = tx.exec_params1(kTopicCountsSql, t.state.spec.name);
      t.retained_events = counts["retained_events"].as<std::int64_t>();
      t.live_docs = counts["live_docs"].as<std::int64_t>();
      t.tombstones = counts["tombstones"].as<std::int64_t>();
      t.oldest_event_age_seconds = counts["oldest_event_age_seconds"].as<std::int64_t>();
      out.topics.push_back(std::move(t));
    }
    for (const auto& row : tx.exec(kTableSizesSql)) {
      out.tables.push_back({row["table_name"].as<std::string>(),
                            row["table_bytes"].as<std::int64_t>(),
                            row["index_bytes"].as<std::int64_t>()});
    }
    tx.commit();
    return out;
  });
}

}  // namespace oasync
