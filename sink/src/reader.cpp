#include "oasync/reader.hpp"

#include <array>
#include <cctype>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

// SQLSTATE raised by oasync.read_events and oasync.snapshot_docs for a stale
// cursor (see migrations/0002_read_functions.sql).
constexpr const char* kStaleSqlstate = "OA410";

StaleReason parse_reason(const std::string& text) {
  if (text == "retention_floor_breach") return StaleReason::retention_floor_breach;
  if (text == "cursor_ahead") return StaleReason::cursor_ahead;
  if (text == "epoch_changed") return StaleReason::epoch_changed;
  if (text == "unknown_topic") return StaleReason::unknown_topic;
  return StaleReason::none;
}

// A text field's bytes, sized from the result (no strlen); "" for NULL.
std::string text_of(const pqxx::field& f) {
  return f.is_null() ? std::string() : std::string(f.c_str(), f.size());
}

// Value of a lowercase hex digit, or -1.
constexpr std::array<std::int8_t, 256> kHexValue = [] {
  std::array<std::int8_t, 256> table{};
  table.fill(-1);
  for (int i = 0; i < 10; ++i) table['0' + i] = static_cast<std::int8_t>(i);
  for (int i = 0; i < 6; ++i) table['a' + i] = static_cast<std::int8_t>(10 + i);
  return table;
}();

// A bytea field's bytes. Postgres sends bytea as "\x" and lowercase hex
// (bytea_output = hex, the default); that form is decoded in place, anything
// else goes through libpq's unescaping.
std::string bytes_of(const pqxx::field& f) {
  if (f.is_null()) return {};
  const std::string_view text(f.c_str(), f.size());
  if (text.size() % 2 == 0 && text.starts_with("\\x")) {
    std::string out(text.size() / 2 - 1, '\0');
    const auto* in = reinterpret_cast<const unsigned char*>(text.data()) + 2;
    for (char& byte : out) {
      const int hi = kHexValue[*in++];
      const int lo = kHexValue[*in++];
      if ((hi | lo) < 0) return pqxx::binarystring(f).str();
      byte = static_cast<char>(hi << 4 | lo);
    }
    return out;
  }
  return pqxx::binarystring(f).str();
}

// A Doc from a row with the columns of snapshot_docs or get_doc.
Doc doc_from_row(const std::string& topic, const pqxx::row& row) {
  Doc d;
  d.topic = topic;
  d.doc_key = text_of(row["doc_key"]);
  d.scope = text_of(row["scope"]);
  d.doc_version = row["doc_version"].as<std::int64_t>();
  d.deleted = row["deleted"].as<bool>();
  d.payload = text_of(row["payload"]);
  d.payload_hash = bytes_of(row["payload_hash"]);
  d.last_watermark = row["last_watermark"].as<std::int64_t>();
  return d;
}

// Reader::check and Reader::read run on every page and every wake: they
// qualify every name instead of pinning the search_path (one round trip less).
// (NULLIF, IN and IS DISTINCT FROM find their operator through the
// search_path; these statements use CASE and OPERATOR(pg_catalog.=) instead.)
// The text form of resume_check: an epoch that is not a UUID is epoch_changed.
const char* const kResumeCheckSql = R"SQL(
SELECT resumable, reason, epoch::pg_catalog.text AS epoch, head, purged_through
FROM oasync.resume_check($1::pg_catalog.text,
                         CASE WHEN $2::pg_catalog.text OPERATOR(pg_catalog.<>) ''
                              THEN $2::pg_catalog.text END,
                         $3::bigint)
)SQL";

const char* const kTopicPositionSql = R"SQL(
SELECT epoch::text AS epoch, head, purged_through FROM oasync.topic_position($1)
)SQL";

const char* const kSnapshotPageSql = R"SQL(
SELECT doc_key, scope, doc_version, deleted, payload::text AS payload, payload_hash,
       last_watermark
FROM oasync.snapshot_docs($1, $2, $3, $4, $5)
)SQL";

const char* const kGetDocSql = R"SQL(
SELECT topic, doc_key, scope, doc_version, deleted, payload::text AS payload, payload_hash,
       last_watermark
FROM oasync.get_doc($1, $2)
)SQL";

// A page read is a prepared statement: read_events is inlined into it, and
// planning that afresh costs more than running a small page (about 0.7 ms
// against 0.4 ms, measured with pgbench on a 5-event page).
constexpr const char* kReadPage = "oasync_read_page";
constexpr const char* kReadPageSql = R"SQL(
SELECT watermark, doc_key, doc_version, scope, op, payload::pg_catalog.text, payload_hash,
       payload_fetched,
       (SELECT t.epoch::pg_catalog.text FROM oasync.topics AS t
        WHERE t.topic OPERATOR(pg_catalog.=) $1::pg_catalog.text)
FROM oasync.read_events($1::pg_catalog.text,
                        CASE WHEN $2::pg_catalog.text OPERATOR(pg_catalog.<>) ''
                             THEN $2::pg_catalog.uuid END,
                        $3::bigint, $4::bigint, $5::pg_catalog.text)
)SQL";

// An Event from a row of kReadPageSql. By column number: a replay reads
// millions of rows, and looking a name up per field costs more than the rest.
Event event_from_row(const std::string& topic, const pqxx::row& row) {
  Event e;
  e.topic = topic;
  e.watermark = row[0].as<std::int64_t>();
  e.doc_key = text_of(row[1]);
  e.doc_version = row[2].as<std::int64_t>();
  e.scope = text_of(row[3]);
  e.op = parse_op(std::string_view(row[4].c_str(), row[4].size())).value_or(Op::upsert);
  e.payload = text_of(row[5]);
  e.payload_hash = bytes_of(row[6]);
  e.payload_fetched = row[7].as<bool>();
  e.epoch = text_of(row[8]);
  return e;
}

ResumeCheck check_in(pqxx::transaction_base& tx, const std::string& topic, const std::string& epoch,
                     std::int64_t watermark) {
  const pqxx::row row = tx.exec_params1(kResumeCheckSql, topic, epoch, watermark);
  ResumeCheck out;
  out.reason = row["resumable"].as<bool>() ? StaleReason::none
                                           : parse_reason(row["reason"].as<std::string>());
  out.position.topic = topic;
  if (!row["epoch"].is_null()) {
    out.position.epoch = row["epoch"].as<std::string>();
    out.position.head = row["head"].as<std::int64_t>();
    out.position.purged_through = row["purged_through"].as<std::int64_t>();
  }
  return out;
}

// Whether text is a UUID in its canonical form; a cursor's epoch that is not
// one is treated as another epoch's (epoch_changed), never as an error.
bool is_uuid(const std::string& text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? text[i] != '-' : !std::isxdigit(static_cast<unsigned char>(text[i]))) return false;
  }
  return true;
}

// SQLSTATE raised by oasync.read_check when a read would go past the head.
constexpr const char* kAboveHeadSqlstate = "OA416";

}  // namespace

const char* to_string(StaleReason reason) noexcept {
  switch (reason) {
    case StaleReason::none:
      return "";
    case StaleReason::retention_floor_breach:
      return "retention_floor_breach";
    case StaleReason::cursor_ahead:
      return "cursor_ahead";
    case StaleReason::epoch_changed:
      return "epoch_changed";
    case StaleReason::unknown_topic:
      return "unknown_topic";
  }
  return "";
}

Reader::Reader(pqxx::connection_base& connection) : conn_(connection) {
  // Registers the statement (prepared on first use; again with the same text
  // when another Reader shares the connection).
  conn_.prepare(kReadPage, kReadPageSql);
}

ResumeCheck Reader::check(const std::string& topic, const std::string& epoch,
                          std::int64_t watermark) {
  return internal::db_step("resume check", [&] {
    pqxx::read_transaction tx(conn_);
    return check_in(tx, topic, epoch, watermark);
  });
}

Page Reader::read(const ReadRequest& request) {
  Page page;
  page.through =
      std::max(request.after, std::min(request.through, request.after + request.max_events));
  if (!request.epoch.empty() && !is_uuid(request.epoch)) {
    page.stale = check(request.topic, request.epoch, request.after);
    return page;
  }
  try {
    pqxx::read_transaction tx(conn_);
    const pqxx::result rows =
        tx.exec_prepared(kReadPage, request.topic, request.epoch, request.after, page.through,
                         request.scope ? request.scope->c_str() : nullptr);
    page.events.reserve(rows.size());
    for (const auto& row : rows) page.events.push_back(event_from_row(request.topic, row));
    return page;
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() == kAboveHeadSqlstate) {
      throw Error(Code::invalid_argument,
                  fmt::format("read of topic \"{}\" through {}: {}", request.topic, page.through,
                              "that is above the head (a cursor moved there would skip events)"));
    }
    if (e.sqlstate() != kStaleSqlstate) internal::rethrow_as_error("read events");
  } catch (...) {
    internal::rethrow_as_error("read events");
  }
  // The cursor went stale; say exactly why.
  page.events.clear();
  page.stale = check(request.topic, request.epoch, request.after);
  return page;
}

StaleReason Reader::snapshot(const std::string& topic, const std::optional<std::string>& scope,
                             std::optional<std::int64_t> since, int page_size,
                             const std::function<void(const SnapshotHeader&)>& on_header,
                             const std::function<void(const Doc&)>& on_doc) {
  try {
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn_, "oasync_snapshot");
    internal::pin_search_path(tx);
    const auto pos = tx.exec_params(kTopicPositionSql, topic);
    if (pos.empty() || pos[0]["epoch"].is_null()) return StaleReason::unknown_topic;
    SnapshotHeader header;
    header.position = {topic, pos[0]["epoch"].as<std::string>(), pos[0]["head"].as<std::int64_t>(),
                       pos[0]["purged_through"].as<std::int64_t>()};
    header.since = since;
    bool header_sent = false;
    std::string after_key;
    const std::string since_text = since ? std::to_string(*since) : std::string();
    for (;;) {
      const pqxx::result rows =
          tx.exec_params(kSnapshotPageSql, topic, scope ? scope->c_str() : nullptr,
                         since ? since_text.c_str() : nullptr, after_key, page_size);
      if (!header_sent) {
        on_header(header);
        header_sent = true;
      }
      for (const auto& row : rows) {
        const Doc d = doc_from_row(topic, row);
        on_doc(d);
        after_key = d.doc_key;
      }
      if (static_cast<int>(rows.size()) < page_size) break;
    }
    tx.commit();
    return StaleReason::none;
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() == kStaleSqlstate) return StaleReason::retention_floor_breach;
    internal::rethrow_as_error("snapshot");
  } catch (...) {
    internal::rethrow_as_error("snapshot");
  }
}

std::vector<Doc> Reader::find_doc(const std::string& doc_key,
                                  const std::optional<std::string>& topic) {
  return internal::db_step("get doc", [&] {
    pqxx::read_transaction tx(conn_);
    internal::pin_search_path(tx);
    std::vector<Doc> docs;
    for (const auto& row : tx.exec_params(kGetDocSql, doc_key, topic ? topic->c_str() : nullptr)) {
      docs.push_back(doc_from_row(row["topic"].as<std::string>(), row));
    }
    return docs;
  });
}

}  // namespace oasync
