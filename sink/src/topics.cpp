#include "oasync/topics.hpp"

#include <algorithm>
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
  config_revision = nextval('oasync.config_revisions'), updated_at = now()
)SQL";

// Locks the version-0 rows (stream positions of docs that never existed) of
// a topic this transaction removes, in doc_key order, and counts them. They
// are docs, so they are locked before any topic row (lock_order.hpp): a sink
// that holds one from its first round trip locks its topic next, and a
// removal holding the topic rows while it waited for that doc would deadlock
// with it. A row that a sink applied meanwhile (version > 0) is not locked.
const char* const kLockPositionRowsSql = R"SQL(
SELECT count(*) AS locked FROM (
  SELECT 1 FROM oasync.docs WHERE topic = $1 AND doc_version = 0
  ORDER BY doc_key COLLATE "C" FOR UPDATE) AS held
)SQL";

// Locks every registered topic row, in name order (lock_order.hpp): a sink
// that writes to a topic holds its row until it commits, so from here on no
// writer can add a doc or event to a topic this transaction removes.
const char* const kLockAllTopicsSql = R"SQL(
SELECT topic FROM oasync.topics ORDER BY topic COLLATE "C" FOR UPDATE
)SQL";

// What a topic still holds; asked under the topic's row lock before removing
// it, and before registering a name, which must not find rows left over.
// all_docs counts the version-0 rows that hold only a stream position.
const char* const kTopicRowsLeftSql = R"SQL(
SELECT (SELECT count(*) FROM oasync.docs WHERE topic = $1 AND doc_version > 0) AS docs,
       (SELECT count(*) FROM oasync.docs WHERE topic = $1) AS all_docs,
       (SELECT count(*) FROM oasync.events WHERE topic = $1) AS events
)SQL";

// Removes a topic with what only it refers to: docs at version 0 (stream
// positions of docs that never existed), epoch history, scope exits.
const char* const kDeleteTopicSql = R"SQL(
WITH holders AS (DELETE FROM oasync.docs WHERE topic = $1 AND doc_version = 0),
     history AS (DELETE FROM oasync.epoch_history WHERE topic = $1),
     exits AS (DELETE FROM oasync.scope_exits WHERE topic = $1)
DELETE FROM oasync.topics WHERE topic = $1
)SQL";

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
    internal::pin_search_path(tx);
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
      throw Error(Code::invalid_input, fmt::format("topic \"{}\" is listed twice", spec.name));
    }
  }
  return internal::db_step("apply topics", [&] {
    pqxx::work tx(conn, "oasync_topics_apply");
    internal::pin_search_path(tx);
    // One registry writer at a time. A sink that cached an old registry
    // notices the new config_revision under its topic lock and retries.
    tx.exec_params(kLockRegistrySql, kTopicsLockKey);
    // The version-0 rows of each topic to remove, locked first, by topic in
    // bytewise order (std::map's), then the topic rows. The registry lock
    // keeps the set of topics as read here.
    std::map<std::string, std::int64_t> positions_locked;
    if (dry_run == DryRun::no) {
      for (const auto& row : internal::read_topic_rows(tx)) {
        if (!names.count(row.name())) positions_locked.emplace(row.name(), 0);
      }
      for (auto& [name, locked] : positions_locked) {
        locked = tx.exec_params1(kLockPositionRowsSql, name)["locked"].as<std::int64_t>();
      }
      tx.exec(kLockAllTopicsSql);
    }
    // (docs, events) of a name; `all` counts the version-0 rows too.
    const auto rows_left = [&](const std::string& name, bool all) {
      const pqxx::row left = tx.exec_params1(kTopicRowsLeftSql, name);
      return std::pair{left[all ? "all_docs" : "docs"].as<std::int64_t>(),
                       left["events"].as<std::int64_t>()};
    };
    std::map<std::string, TopicState> current;
    for (auto& row : internal::read_topic_rows(tx)) {
      current.emplace(row.name(), std::move(row.state));
    }

    TopicsReport report;
    // In name order, as every writer of topic rows goes (lock_order.hpp).
    std::vector<const TopicSpec*> sorted;
    for (const TopicSpec& spec : specs) sorted.push_back(&spec);
    std::sort(sorted.begin(), sorted.end(),
              [](const TopicSpec* a, const TopicSpec* b) { return a->name < b->name; });
    for (const TopicSpec* spec_ptr : sorted) {
      const TopicSpec& spec = *spec_ptr;
      const auto it = current.find(spec.name);
      if (it == current.end()) {
        if (const auto [docs, events] = rows_left(spec.name, true); docs > 0 || events > 0) {
          throw Error(Code::refused,
                      fmt::format("topic \"{}\" cannot be registered: {} docs and {} events of an "
                                  "earlier topic of that name are still stored (from before "
                                  "removal was atomic); delete them first (nothing was changed)",
                                  spec.name, docs, events));
        }
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
      if (const auto [docs, events] = rows_left(name, false); docs > 0 || events > 0) {
        throw Error(Code::refused,
                    fmt::format("topic \"{}\" is not in the file but still has docs or events; "
                                "refusing to remove it (nothing was changed): {} docs, {} events",
                                name, docs, events));
      }
      if (dry_run == DryRun::no) {
        // Re-checked under the topic's lock: a sink that wrote a position row
        // after the removal began (it was not locked above) would lose it.
        const auto it_locked = positions_locked.find(name);
        const std::int64_t locked = it_locked == positions_locked.end() ? 0 : it_locked->second;
        if (const std::int64_t added = rows_left(name, true).first - locked; added != 0) {
          throw Error(Code::refused,
                      fmt::format("topic \"{}\" was written while it was being removed ({} new "
                                  "position row{}); refusing to remove it (nothing was changed)",
                                  name, added, added == 1 ? "" : "s"));
        }
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
    internal::pin_search_path(tx);
    const pqxx::result r = tx.exec_params(kResetEpochSql, topic);
    if (r.empty()) {
      throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", topic));
    }
    tx.commit();
    return r[0]["epoch"].as<std::string>();
  });
}

}  // namespace oasync
