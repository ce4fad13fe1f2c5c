#include "oasync/topics.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/batch.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

const char* const kSelectTopicsSql = R"SQL(
SELECT topic, doc_key_prefix, payload_mode, max_payload_bytes,
       extract(epoch FROM retention_max_age)::bigint, retention_min_events,
       extract(epoch FROM tombstone_retention)::bigint, epoch::text, head, purged_through
FROM oasync.topics
ORDER BY topic COLLATE "C"
)SQL";

std::optional<std::int64_t> optional_int(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::int64_t>();
}

std::vector<TopicState> read_topics(pqxx::transaction_base& tx) {
  std::vector<TopicState> out;
  for (const auto& row : tx.exec(kSelectTopicsSql)) {
    TopicState t;
    t.spec.name = row[0].as<std::string>();
    t.spec.doc_key_prefix = row[1].as<std::string>();
    t.spec.payload_mode =
        row[2].as<std::string>() == "pointer" ? PayloadMode::pointer : PayloadMode::inline_payload;
    t.spec.max_payload_bytes = row[3].as<std::int64_t>();
    t.spec.retention_max_age_seconds = optional_int(row[4]);
    t.spec.retention_min_events = row[5].as<std::int64_t>();
    t.spec.tombstone_retention_seconds = optional_int(row[6]);
    t.epoch = row[7].as<std::string>();
    t.head = row[8].as<std::int64_t>();
    t.purged_through = row[9].as<std::int64_t>();
    out.push_back(std::move(t));
  }
  return out;
}

// Passes an optional number as text ("" for NULL), read back with NULLIF.
std::string optional_text(const std::optional<std::int64_t>& v) {
  return v ? std::to_string(*v) : std::string();
}

}  // namespace

const char* to_string(PayloadMode mode) noexcept {
  return mode == PayloadMode::pointer ? "pointer" : "inline";
}

void validate(const TopicSpec& spec) {
  const auto fail = [&](const std::string& what) {
    throw Error(fmt::format("topic \"{}\": {}", spec.name, what));
  };
  if (spec.name.empty() || spec.name.size() > kMaxTopicBytes ||
      spec.name.find('\0') != std::string::npos) {
    fail(fmt::format("name must be 1..{} bytes without NUL", kMaxTopicBytes));
  }
  if (spec.doc_key_prefix.empty() || spec.doc_key_prefix.size() >= kMaxDocKeyBytes ||
      spec.doc_key_prefix.find('\0') != std::string::npos) {
    fail("doc_key_prefix must be non-empty, shorter than a doc_key and without NUL");
  }
  if (spec.max_payload_bytes <= 0 || spec.max_payload_bytes > (1 << 30)) {
    fail(fmt::format("max_payload_bytes must be 1..1073741824, found {}", spec.max_payload_bytes));
  }
  if (spec.retention_max_age_seconds && *spec.retention_max_age_seconds <= 0) {
    fail("retention.max_age must be positive");
  }
  if (spec.retention_min_events < 0) fail("retention.min_events must be >= 0");
  if (spec.tombstone_retention_seconds && *spec.tombstone_retention_seconds <= 0) {
    fail("retention.tombstones must be positive");
  }
}

std::vector<TopicState> list_topics(pqxx::connection_base& conn) {
  return internal::db_step("list topics", [&] {
    pqxx::read_transaction tx(conn);
    return read_topics(tx);
  });
}

TopicsReport apply_topics(pqxx::connection_base& conn, const std::vector<TopicSpec>& specs,
                          DryRun dry_run) {
  std::set<std::string> names;
  for (const TopicSpec& spec : specs) {
    validate(spec);
    if (!names.insert(spec.name).second) {
      throw Error(fmt::format("topic \"{}\" is listed twice", spec.name));
    }
  }
  return internal::db_step("apply topics", [&] {
    pqxx::work tx(conn, "oasync_topics_apply");
    // One registry writer at a time. Sinks are not blocked: a sink that cached
    // an old registry notices the bumped config_revision and retries.
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", kTopicsLockKey);
    std::map<std::string, TopicState> current;
    for (auto& t : read_topics(tx)) current.emplace(t.spec.name, std::move(t));

    TopicsReport report;
    for (const TopicSpec& spec : specs) {
      const auto it = current.find(spec.name);
      if (it == current.end()) {
        report.created.push_back(spec.name);
      } else if (it->second.spec == spec) {
        report.unchanged.push_back(spec.name);
        continue;
      } else {
        report.updated.push_back(spec.name);
      }
      if (dry_run == DryRun::yes) continue;
      tx.exec_params(R"SQL(
INSERT INTO oasync.topics AS t (topic, doc_key_prefix, payload_mode, max_payload_bytes,
                                retention_max_age, retention_min_events, tombstone_retention)
VALUES ($1, $2, $3, $4, make_interval(secs => NULLIF($5, '')::bigint), $6,
        make_interval(secs => NULLIF($7, '')::bigint))
ON CONFLICT (topic) DO UPDATE SET
  doc_key_prefix = excluded.doc_key_prefix, payload_mode = excluded.payload_mode,
  max_payload_bytes = excluded.max_payload_bytes, retention_max_age = excluded.retention_max_age,
  retention_min_events = excluded.retention_min_events,
  tombstone_retention = excluded.tombstone_retention,
  config_revision = t.config_revision + 1, updated_at = now()
)SQL",
                     spec.name, spec.doc_key_prefix, to_string(spec.payload_mode),
                     spec.max_payload_bytes, optional_text(spec.retention_max_age_seconds),
                     spec.retention_min_events, optional_text(spec.tombstone_retention_seconds));
    }
    for (const auto& [name, state] : current) {
      if (names.count(name)) continue;
      const pqxx::row used = tx.exec_params1(
          "SELECT EXISTS (SELECT 1 FROM oasync.docs WHERE topic = $1) OR "
          "EXISTS (SELECT 1 FROM oasync.events WHERE topic = $1)",
          name);
      if (used[0].as<bool>()) {
        throw Error(
            fmt::format("topic \"{}\" is not in the file but still has docs or events; "
                        "refusing to remove it (nothing was changed)",
                        name));
      }
      report.removed.push_back(name);
      if (dry_run == DryRun::no) tx.exec_params("DELETE FROM oasync.topics WHERE topic = $1", name);
    }
    if (dry_run == DryRun::no) tx.commit();
    return report;
  });
}

std::string reset_epoch(pqxx::connection_base& conn, const std::string& topic) {
  return internal::db_step("reset epoch", [&] {
    pqxx::work tx(conn, "oasync_reset_epoch");
    const pqxx::result r = tx.exec_params(
        "UPDATE oasync.topics SET epoch = gen_random_uuid(), updated_at = now() WHERE topic = $1 "
        "RETURNING epoch::text",
        topic);
    if (r.empty()) throw Error(fmt::format("topic \"{}\" is not registered", topic));
    tx.commit();
    return r[0][0].as<std::string>();
  });
}

}  // namespace oasync
