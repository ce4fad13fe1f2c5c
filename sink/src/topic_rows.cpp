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

// A row of kTopicRowsSql through either library: `text(name)` gives a
// column's text (nullopt for NULL).
template <typename Text>
TopicRow topic_row(const Text& text) {
  const auto int8 = [&](const char* name) { return std::stoll(*text(name)); };
  const auto optional_int8 = [&](const char* name) -> std::optional<std::int64_t> {
    const auto v = text(name);
    if (!v) return std::nullopt;
    return std::stoll(*v);
  };
  TopicRow t;
  TopicSpec& spec = t.state.spec;
  spec.name = *text("topic");
  spec.doc_key_prefix = *text("doc_key_prefix");
  spec.payload_mode = parse_payload_mode(*text("payload_mode"));
  spec.max_payload_bytes = int8("max_payload_bytes");
  spec.retention_max_age_seconds = optional_int8("retention_max_age_seconds");
  spec.retention_min_events = int8("retention_min_events");
  spec.tombstone_retention_seconds = optional_int8("tombstone_retention_seconds");
  t.state.epoch = *text("epoch");
  t.state.head = int8("head");
  t.state.purged_through = int8("purged_through");
  t.config_revision = int8("config_revision");
  t.delta_floor = int8("delta_floor");
  return t;
}

TopicRow topic_row(const pqxx::row& row) {
  return topic_row([&](const char* name) -> std::optional<std::string> {
    const pqxx::field f = row[name];
    if (f.is_null()) return std::nullopt;
    return std::string(f.c_str(), f.size());
  });
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

std::vector<TopicRow> read_topic_rows(pg::Pipeline& pipeline, PGconn* conn) {
  static const pg::Statement statement{"oasync_topic_rows", kTopicRowsSql, {pg::kText}};
  std::vector<pg::Call> calls(1);
  calls[0].statement = &statement;
  calls[0].params.add_null(pg::kText);
  const pg::Result rows = std::move(pipeline.run(conn, calls, "load topic registry").front());
  std::vector<TopicRow> out;
  for (int r = 0; r < rows.rows(); ++r) {
    out.push_back(topic_row([&](const char* name) -> std::optional<std::string> {
      const int c = rows.column(name);
      if (rows.is_null(r, c)) return std::nullopt;
      return std::string(rows.text(r, c));
    }));
  }
  return out;
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
