#include "topic_rows.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "oasync/error.hpp"

namespace oasync::internal {
namespace {

// The sink reads it inside a caller's transaction (apply_within): every name
// is qualified, nothing resolves through the caller's search_path.
const char* const kTopicRowsSql = R"SQL(
SELECT topic, doc_key_prefix, payload_mode, max_payload_bytes,
       EXTRACT(epoch FROM retention_max_age)::bigint AS retention_max_age_seconds,
       retention_min_events,
       EXTRACT(epoch FROM tombstone_retention)::bigint AS tombstone_retention_seconds,
       epoch::pg_catalog.text AS epoch, head, purged_through, config_revision, delta_floor
FROM oasync.topics
WHERE $1::pg_catalog.text IS NULL OR topic OPERATOR(pg_catalog.=) $1::pg_catalog.text
ORDER BY topic COLLATE pg_catalog."C"
)SQL";

TopicRow topic_row(const pqxx::row& row) {
  TopicRow t;
  TopicSpec& spec = t.state.spec;
  spec.name = row["topic"].as<std::string>();
  spec.doc_key_prefix = row["doc_key_prefix"].as<std::string>();
  spec.payload_mode = parse_payload_mode(row["payload_mode"].c_str());
  spec.max_payload_bytes = row["max_payload_bytes"].as<std::int64_t>();
  spec.retention_max_age_seconds = optional_int(row["retention_max_age_seconds"]);
  spec.retention_min_events = row["retention_min_events"].as<std::int64_t>();
  spec.tombstone_retention_seconds = optional_int(row["tombstone_retention_seconds"]);
  t.state.epoch = row["epoch"].as<std::string>();
  t.state.head = row["head"].as<std::int64_t>();
  t.state.purged_through = row["purged_through"].as<std::int64_t>();
  t.config_revision = row["config_revision"].as<std::int64_t>();
  t.delta_floor = row["delta_floor"].as<std::int64_t>();
  return t;
}

std::vector<TopicRow> query(pqxx::transaction_base& tx, const char* name) {
  std::vector<TopicRow> out;
  for (const auto& row : tx.exec_params(kTopicRowsSql, name)) out.push_back(topic_row(row));
  return out;
}

}  // namespace

std::vector<TopicRow> read_topic_rows(pqxx::transaction_base& tx) {
  return query(tx, nullptr);
}

std::optional<TopicRow> read_topic_row(pqxx::transaction_base& tx, const std::string& name) {
  auto rows = query(tx, name.c_str());
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

std::vector<TopicRow> select_topics(std::vector<TopicRow> rows,
                                    const std::vector<std::string>& wanted) {
  if (wanted.empty()) return rows;
  const auto registered = [&](const std::string& name) {
    return std::any_of(rows.begin(), rows.end(),
                       [&](const TopicRow& row) { return row.name() == name; });
  };
  for (const std::string& name : wanted) {
    if (!registered(name)) {
      throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", name));
    }
  }
  std::erase_if(rows, [&](const TopicRow& row) {
    return std::find(wanted.begin(), wanted.end(), row.name()) == wanted.end();
  });
  return rows;
}

PayloadMode parse_payload_mode(std::string_view text) {
  if (text == "inline") return PayloadMode::inline_payload;
  if (text == "pointer") return PayloadMode::pointer;
  throw Error(Code::internal, fmt::format("unknown payload_mode \"{}\" in oasync.topics", text));
}

std::optional<std::int64_t> optional_int(const pqxx::field& field) {
  if (field.is_null()) return std::nullopt;
  return field.as<std::int64_t>();
}

}  // namespace oasync::internal
