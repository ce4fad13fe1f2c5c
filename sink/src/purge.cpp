#include "oasync/purge.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

struct Policy {
  std::string topic;
  std::optional<std::int64_t> max_age;
  std::int64_t min_events = 0;
  std::optional<std::int64_t> tombstone_age;
  std::int64_t head = 0;
  std::int64_t purged_through = 0;
  std::string epoch;
};

std::optional<std::int64_t> optional_int(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::int64_t>();
}

// The cutoff by the prefix rule (see purge.hpp), as of now.
std::int64_t cutoff(pqxx::transaction_base& tx, const Policy& p, std::int64_t age,
                    std::int64_t keep_last) {
  // The first retained event that is not old enough bounds the prefix.
  const pqxx::row young = tx.exec_params1(
      "SELECT min(watermark) FROM (SELECT watermark FROM oasync.events WHERE topic = $1 AND "
      "watermark > $2 AND committed_at >= now() - make_interval(secs => $3) ORDER BY watermark "
      "LIMIT 1) x",
      p.topic, p.purged_through, age);
  const std::int64_t by_age = young[0].is_null() ? p.head : young[0].as<std::int64_t>() - 1;
  return std::max(p.purged_through, std::min(by_age, p.head - keep_last));
}

}  // namespace

std::vector<TopicPurge> purge(
    pqxx::connection_base& conn, const PurgeOptions& o,
    const std::function<void(const std::string&, std::int64_t, std::int64_t)>& progress) {
  if (o.batch_size <= 0) throw Error("--batch-size must be positive");
  std::vector<Policy> policies = internal::db_step("read retention policies", [&] {
    pqxx::read_transaction tx(conn);
    std::vector<Policy> out;
    for (const auto& row : tx.exec(
             "SELECT topic, extract(epoch FROM retention_max_age)::bigint, retention_min_events, "
             "extract(epoch FROM tombstone_retention)::bigint, head, purged_through, epoch::text "
             "FROM oasync.topics ORDER BY topic COLLATE \"C\"")) {
      out.push_back({row[0].as<std::string>(), optional_int(row[1]), row[2].as<std::int64_t>(),
                     optional_int(row[3]), row[4].as<std::int64_t>(), row[5].as<std::int64_t>(),
                     row[6].as<std::string>()});
    }
    return out;
  });
  for (const auto& wanted : o.topics) {
    if (std::none_of(policies.begin(), policies.end(),
                     [&](const Policy& p) { return p.topic == wanted; })) {
      throw Error(fmt::format("topic \"{}\" is not registered", wanted));
    }
  }

  std::vector<TopicPurge> results;
  for (Policy& p : policies) {
    if (!o.topics.empty() &&
        std::find(o.topics.begin(), o.topics.end(), p.topic) == o.topics.end()) {
      continue;
    }
    TopicPurge r;
    r.topic = p.topic;
    r.head = p.head;
    r.old_floor = r.new_floor = p.purged_through;
    const auto age = o.older_than_seconds ? o.older_than_seconds : p.max_age;
    const std::int64_t keep_last = o.keep_last.value_or(p.min_events);
    std::int64_t target = p.purged_through;
    if (!age) {
      r.note = "no retention.max_age: events are kept";
    } else {
      target = internal::db_step(fmt::format("{}: compute the cutoff", p.topic), [&] {
        pqxx::read_transaction tx(conn);
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
      internal::db_step(fmt::format("{}: read consumers", p.topic), [&] {
        pqxx::read_transaction tx(conn);
        for (const auto& row : tx.exec_params(
                 "SELECT name, watermark, last_seen::text FROM oasync.consumers WHERE topic = $1 "
                 "AND epoch = $2::uuid AND watermark < $3 AND last_seen >= now() - "
                 "make_interval(secs => $4) ORDER BY name",
                 p.topic, p.epoch, target, o.consumer_window_seconds)) {
          r.blocking.push_back(
              {row[0].as<std::string>(), row[1].as<std::int64_t>(), row[2].as<std::string>()});
        }
      });
    }
    if (!r.blocking.empty() && o.force == Force::no) {
      r.refused = true;
      results.push_back(std::move(r));
      continue;
    }
    r.new_floor = target;
    if (o.dry_run == DryRun::yes) {
      r.events_deleted = target - p.purged_through;
      if (p.tombstone_age) {
        r.tombstones_removed = internal::db_step(fmt::format("{}: count tombstones", p.topic), [&] {
          pqxx::read_transaction tx(conn);
          return tx
              .exec_params1(
                  "SELECT count(*) FROM oasync.docs WHERE topic = $1 AND deleted AND "
                  "updated_at < now() - make_interval(secs => $2)",
                  p.topic, *p.tombstone_age)[0]
              .as<std::int64_t>();
        });
      }
      results.push_back(std::move(r));
      continue;
    }
    // Delete the prefix in batches, each advancing the floor with it.
    std::int64_t floor = p.purged_through;
    while (floor < target) {
      const std::int64_t upto = std::min(target, floor + o.batch_size);
      internal::db_step(fmt::format("{}: delete events {}..{}", p.topic, floor + 1, upto), [&] {
        pqxx::work tx(conn, "oasync_purge");
        const pqxx::row row = tx.exec_params1(
            "WITH gone AS (DELETE FROM oasync.events WHERE topic = $1 AND watermark > $2 AND "
            "watermark <= $3 RETURNING 1) "
            "UPDATE oasync.topics SET purged_through = $3 WHERE topic = $1 AND purged_through = $2 "
            "RETURNING (SELECT count(*) FROM gone)",
            p.topic, floor, upto);
        r.events_deleted += row[0].as<std::int64_t>();
        tx.commit();
      });
      floor = upto;
      r.new_floor = floor;
      if (progress) progress(p.topic, floor - p.purged_through, target - p.purged_through);
    }
    // Old tombstones go, and the delta-resync floor follows them.
    if (p.tombstone_age) {
      for (;;) {
        const std::int64_t removed =
            internal::db_step(fmt::format("{}: remove tombstones", p.topic), [&] {
              pqxx::work tx(conn, "oasync_purge_tombstones");
              const pqxx::row row = tx.exec_params1(
                  "WITH gone AS (DELETE FROM oasync.docs WHERE ctid IN (SELECT ctid FROM "
                  "oasync.docs "
                  "WHERE topic = $1 AND deleted AND updated_at < now() - make_interval(secs => $2) "
                  "LIMIT $3) AND deleted RETURNING last_watermark) "
                  "UPDATE oasync.topics SET delta_floor = greatest(delta_floor, "
                  "(SELECT coalesce(max(last_watermark), 0) FROM gone)) WHERE topic = $1 "
                  "RETURNING (SELECT count(*) FROM gone)",
                  p.topic, *p.tombstone_age, o.batch_size);
              tx.commit();
              return row[0].as<std::int64_t>();
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
