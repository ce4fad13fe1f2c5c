#include "oasync/purge.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "consumer_rows.hpp"
#include "db.hpp"
#include "oasync/error.hpp"
#include "oasync/options.hpp"
#include "topic_rows.hpp"

namespace oasync {
namespace {

// The first retained event that is not old enough bounds the prefix.
const char* const kFirstYoungSql = R"SQL(
SELECT min(watermark) AS watermark
FROM (SELECT watermark FROM oasync.events
      WHERE topic = $1 AND watermark > $2 AND committed_at >= now() - make_interval(secs => $3)
      ORDER BY watermark LIMIT 1) AS young
)SQL";

// A tombstone may go once it is old enough and none of its doc's events is
// retained: its last event, the delete, is at or below the floor. Otherwise
// the journal would hold versions of a doc that has no row, and the doc,
// written again, would restart at version 1 beside them. The version-0 rows
// that hold only a stream position go by age alone.
const char* const kOldTombstonesWhere = R"SQL(
topic = $1 AND deleted AND updated_at < now() - make_interval(secs => $2)
  AND last_watermark <= (SELECT t.purged_through FROM oasync.topics AS t WHERE t.topic = $1)
)SQL";

const char* const kCountOldTombstonesSql = R"SQL(
SELECT count(*) AS tombstones FROM oasync.docs WHERE {}
)SQL";

const char* const kLockTopicSql = R"SQL(
SELECT 1 FROM oasync.topics WHERE topic = $1 FOR NO KEY UPDATE
)SQL";

// Deletes (floor, upto] and moves the floor in one transaction; the floor
// moves only if nobody moved it meanwhile. Notifies at commit, as the sink
// does, so that followers (oasync serve's hub) learn of the new floor.
const char* const kDeleteEventsSql = R"SQL(
WITH gone AS (
  DELETE FROM oasync.events WHERE topic = $1 AND watermark > $2 AND watermark <= $3 RETURNING 1
), exits AS (
  DELETE FROM oasync.scope_exits WHERE topic = $1 AND watermark > $2 AND watermark <= $3
), floor AS (
  UPDATE oasync.topics SET purged_through = $3 WHERE topic = $1 AND purged_through = $2
  RETURNING head
)
SELECT (SELECT count(*) FROM gone) AS deleted,
       (SELECT count(pg_notify($4, json_build_object('topic', $1::text, 'head', f.head,
                                                     'purged_through', $3::bigint)::text))
        FROM floor AS f) AS moved
)SQL";

// Removes up to $3 old tombstones, locking them in key order as the sink does
// (lock_order.hpp); the delta-resync floor follows them, and the topic's
// tombstone counter (0007) counts them out.
const char* const kDeleteTombstonesSql = R"SQL(
WITH doomed AS (
  SELECT topic, doc_key FROM oasync.docs WHERE {}
  ORDER BY topic COLLATE "C", doc_key COLLATE "C" LIMIT $3 FOR UPDATE
), gone AS (
  DELETE FROM oasync.docs AS d USING doomed
  WHERE d.topic = doomed.topic AND d.doc_key = doomed.doc_key AND d.deleted
  RETURNING d.last_watermark, d.doc_version
)
UPDATE oasync.topics
SET delta_floor = greatest(delta_floor, (SELECT coalesce(max(last_watermark), 0) FROM gone)),
    tombstones = tombstones - (SELECT count(*) FROM gone WHERE doc_version > 0)
WHERE topic = $1
RETURNING (SELECT count(*) FROM gone) AS removed
)SQL";

std::string tombstones_sql(const char* statement) {
  return fmt::format(fmt::runtime(statement), kOldTombstonesWhere);
}

// The cutoff by the prefix rule (see purge.hpp), as of now.
std::int64_t cutoff(pqxx::transaction_base& tx, const TopicState& t, std::int64_t age,
                    std::int64_t keep_last) {
  const pqxx::row young = tx.exec_params1(kFirstYoungSql, t.spec.name, t.purged_through, age);
  const std::int64_t by_age =
      young["watermark"].is_null() ? t.head : young["watermark"].as<std::int64_t>() - 1;
  return std::max(t.purged_through, std::min(by_age, t.head - keep_last));
}

}  // namespace

std::vector<TopicPurge> purge(
    pqxx::connection_base& conn, const PurgeOptions& o,
    const std::function<void(const std::string&, std::int64_t, std::int64_t)>& progress) {
  if (o.batch_size <= 0) {
    throw Error(Code::invalid_argument,
                fmt::format("batch_size must be positive, found {}", o.batch_size));
  }
  const std::vector<internal::TopicRow> topics = internal::db_step("read retention policies", [&] {
    pqxx::read_transaction tx(conn);
    internal::pin_search_path(tx);
    return internal::select_topics(internal::read_topic_rows(tx), o.topics);
  });

  std::vector<TopicPurge> results;
  for (const internal::TopicRow& row : topics) {
    const TopicState& p = row.state;
    const std::string& name = p.spec.name;
    TopicPurge r;
    r.topic = name;
    r.head = p.head;
    r.old_floor = r.new_floor = p.purged_through;
    const auto age = o.older_than_seconds ? o.older_than_seconds : p.spec.retention_max_age_seconds;
    const std::int64_t keep_last = o.keep_last.value_or(p.spec.retention_min_events);
    std::int64_t target = p.purged_through;
    if (!age) {
      r.note = "no retention.max_age: events are kept";
    } else {
      target = internal::db_step(fmt::format("{}: compute the cutoff", name), [&] {
        pqxx::read_transaction tx(conn);
        internal::pin_search_path(tx);
        return cutoff(tx, p, *age, keep_last);
      });
      if (target == p.purged_through) {
        r.note = p.head - keep_last <= p.purged_through ? "keep-last holds every retained event"
                                                        : "nothing is old enough";
      }
    }
    r.cutoff = target;
    // Consumers seen recently whose position the new floor would pass.
    if (target > p.purged_through) {
      internal::db_step(fmt::format("{}: read consumers", name), [&] {
        pqxx::read_transaction tx(conn);
        internal::pin_search_path(tx);
        for (const ConsumerState& c :
             internal::recent_consumers_below(tx, name, target, o.consumer_window_seconds)) {
          r.blocking.push_back({c.name, c.position.watermark, c.last_seen});
        }
      });
    }
    if (!r.blocking.empty() && o.force == Force::no) {
      r.refused = true;
      results.push_back(std::move(r));
      continue;
    }
    r.new_floor = target;
    const auto& tombstone_age = p.spec.tombstone_retention_seconds;
    if (o.dry_run == DryRun::yes) {
      r.events_deleted = target - p.purged_through;
      if (tombstone_age) {
        r.tombstones_removed = internal::db_step(fmt::format("{}: count tombstones", name), [&] {
          pqxx::read_transaction tx(conn);
          internal::pin_search_path(tx);
          return tx
              .exec_params1(tombstones_sql(kCountOldTombstonesSql), name,
                            *tombstone_age)["tombstones"]
              .as<std::int64_t>();
        });
      }
      results.push_back(std::move(r));
      continue;
    }
    // Delete the prefix in batches, each advancing the floor with it. Each
    // batch checks the consumers again under the topic's row lock, in its own
    // transaction: a consumer that appeared since is not crossed either.
    std::int64_t floor = p.purged_through;
    while (floor < target) {
      const std::int64_t upto = std::min(target, floor + o.batch_size);
      const bool deleted =
          internal::db_step(fmt::format("{}: delete events {}..{}", name, floor + 1, upto), [&] {
            pqxx::work tx(conn, "oasync_purge");
            internal::pin_search_path(tx);
            tx.exec_params(kLockTopicSql, name);
            if (o.force == Force::no) {
              for (const ConsumerState& c :
                   internal::recent_consumers_below(tx, name, upto, o.consumer_window_seconds)) {
                r.blocking.push_back({c.name, c.position.watermark, c.last_seen});
              }
              if (!r.blocking.empty()) return false;
            }
            const pqxx::row row =
                tx.exec_params1(kDeleteEventsSql, name, floor, upto, kNotifyChannel);
            if (row["moved"].as<std::int64_t>() != 1) {
              throw Error(Code::refused,
                          fmt::format("{}: the floor moved meanwhile (another purge?); nothing of "
                                      "this batch was deleted",
                                      name));
            }
            r.events_deleted += row["deleted"].as<std::int64_t>();
            tx.commit();
            return true;
          });
      if (!deleted) {
        r.refused = true;
        break;
      }
      floor = upto;
      r.new_floor = floor;
      if (progress) progress(name, floor - p.purged_through, target - p.purged_through);
    }
    // Old tombstones go, and the delta-resync floor follows them.
    if (tombstone_age) {
      for (;;) {
        const std::int64_t removed =
            internal::db_step(fmt::format("{}: remove tombstones", name), [&] {
              pqxx::work tx(conn, "oasync_purge_tombstones");
              internal::pin_search_path(tx);
              const pqxx::row row = tx.exec_params1(tombstones_sql(kDeleteTombstonesSql), name,
                                                    *tombstone_age, o.batch_size);
              tx.commit();
              return row["removed"].as<std::int64_t>();
            });
        r.tombstones_removed += removed;
        if (removed < o.batch_size) break;
      }
    }
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace oasync
