#include "oasync/topics.hpp"

#include <map>
#include <set>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/batch.hpp"
#include "oasync/error.hpp"
#include "topic_rows.hpp"

namespace oasync {
namespace {

const char* const kLockRegistrySql = "SELECT pg_advisory_xact_lock($1)";

// Creates a topic or updates its policy. Optional numbers arrive as text (""
// for NULL).
const char* const kUpsertTopicSql = R"SQL(
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
)SQL";

const char* const kTopicInUseSql = R"SQL(
SELECT EXISTS (SELECT 1 FROM oasync.docs WHERE topic = $1)
    OR EXISTS (SELECT 1 FROM oasync.events WHERE topic = $1) AS in_use
)SQL";

const char* const kDeleteTopicSql = "DELETE FROM oasync.topics WHERE topic = $1";

const char* const kResetEpochSql = R"SQL(
UPDATE oasync.topics SET epoch = gen_random_uuid(), updated_at = now()
WHERE topic = $1
RETURNING epoch::text AS epoch
)SQL";

// Passes an optional number as text ("" for NULL), read back with NULLIF.
std::string optional_text(const std::optional<std::int64_t>& v) {
  return v ? std::to_string(*v) : std::string();
}

}  // namespace

const char* to_string(PayloadMode mode) noexcept {
  switch (mode) {
    case PayloadMode::inline_payload:
      return "inline";
    case PayloadMode::pointer:
      return "pointer";
  }
  return "inline";
}

void validate(const TopicSpec& spec) {
  const auto fail = [&](const std::string& what) {
    throw Error(Code::invalid_argument, fmt::format("topic \"{}\": {}", spec.name, what));
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
    std::vector<TopicState> out;
    for (auto& row : internal::read_topic_rows(tx)) out.push_back(std::move(row.state));
    return out;
  });
}

TopicsReport apply_topics(pqxx::connection_base& conn, const std::vector<TopicSpec>& specs,
                          DryRun dry_run) {
  std::set<std::string> names;
  for (const TopicSpec& spec : specs) {
    validate(spec);
    if (!names.insert(spec.name).second) {
      throw Error(Code::invalid_argument, fmt::format("topic \"{}\" is listed twice", spec.name));
    }
  }
  return internal::db_step("apply topics", [&] {
    pqxx::work tx(conn, "oasync_topics_apply");
    // One registry writer at a time. Sinks are not blocked: a sink that cached
    // an old registry notices the bumped config_revision and retries.
    tx.exec_params(kLockRegistrySql, kTopicsLockKey);
    std::map<std::string, TopicState> current;
    for (auto& row : internal::read_topic_rows(tx)) {
      current.emplace(row.name(), std::move(row.state));
    }

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
      tx.exec_params(kUpsertTopicSql, spec.name, spec.doc_key_prefix, to_string(spec.payload_mode),
                     spec.max_payload_bytes, optional_text(spec.retention_max_age_seconds),
                     spec.retention_min_events, optional_text(spec.tombstone_retention_seconds));
    }
    for (const auto& [name, state] : current) {
      if (names.count(name)) continue;
      if (tx.exec_params1(kTopicInUseSql, name)["in_use"].as<bool>()) {
        throw Error(Code::refused,
                    fmt::format("topic \"{}\" is not in the file but still has docs or events; "
                                "refusing to remove it (nothing was changed)",
                                name));
      }
      report.removed.push_back(name);
      if (dry_run == DryRun::no) tx.exec_params(kDeleteTopicSql, name);
    }
    if (dry_run == DryRun::no) tx.commit();
    return report;
  });
}

std::string reset_epoch(pqxx::connection_base& conn, const std::string& topic) {
  return internal::db_step("reset epoch", [&] {
    pqxx::work tx(conn, "oasync_reset_epoch");
    const pqxx::result r = tx.exec_params(kResetEpochSql, topic);
    if (r.empty()) {
      throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", topic));
    }
    tx.commit();
    return r[0]["epoch"].as<std::string>();
  });
}

}  // namespace oasync
