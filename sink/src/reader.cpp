#include "oasync/reader.hpp"

#include <array>
#include <cctype>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/error.hpp"
#include "pg.hpp"
#include "reader_statements.hpp"

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
SELECT resumable, reason, epoch::pg_catalog.text AS epoch, head, purged_through,
       (SELECT t.epoch_counter FROM oasync.topics AS t
        WHERE t.topic OPERATOR(pg_catalog.=) $1::pg_catalog.text) AS epoch_counter
FROM oasync.resume_check($1::pg_catalog.text,
                         CASE WHEN $2::pg_catalog.text OPERATOR(pg_catalog.<>) ''
                              THEN $2::pg_catalog.text END,
                         $3::bigint)
)SQL";

const char* const kTopicPositionSql = R"SQL(
SELECT epoch::text AS epoch, head, purged_through FROM oasync.topic_position($1)
)SQL";

const char* const kPositionsSql = R"SQL(
SELECT t.topic, t.epoch::pg_catalog.text, t.head, t.purged_through, t.epoch_counter
FROM oasync.topics AS t ORDER BY t.topic COLLATE pg_catalog."C"
)SQL";

const char* const kEpochForSql = R"SQL(
SELECT t.epoch::pg_catalog.text FROM oasync.topics AS t
WHERE t.topic OPERATOR(pg_catalog.=) $1 AND t.epoch_counter OPERATOR(pg_catalog.=) $2
UNION ALL
SELECT h.epoch::pg_catalog.text FROM oasync.epoch_history AS h
WHERE h.topic OPERATOR(pg_catalog.=) $1 AND h.epoch_counter OPERATOR(pg_catalog.=) $2
LIMIT 1
)SQL";

const char* const kSnapshotPageSql = R"SQL(
SELECT doc_key, scope, doc_version, deleted, payload::text AS payload, payload_hash,
       last_watermark
FROM oasync.snapshot_docs($1, $2, $3, $4, $5)
)SQL";

// One statement, so the topic's position is of the doc's snapshot.
const char* const kGetDocSql = R"SQL(
SELECT g.topic, g.doc_key, g.scope, g.doc_version, g.deleted, g.payload::text AS payload,
       g.payload_hash, g.last_watermark, g.epoch::text AS epoch, t.head, t.purged_through,
       t.epoch_counter
FROM oasync.get_doc($1, $2) AS g
JOIN oasync.topics AS t ON t.topic = g.topic
ORDER BY g.topic COLLATE "C"
)SQL";

// A page read: the topic's position and, joined to it, the page's events, so
// that the position and the rows come from one snapshot, and a page without
// events still says where the topic stands (one row, the event columns NULL).
// The events come in watermark order: read_events orders them, and a join ON
// true can only be a nested loop, which keeps the order of its inner side.
// $4 (through) NULL reads to the head. $7 (Detail::routing) adds each event's
// previous_scope, and keeps a fetched payload only while the doc is still in
// the event's scope (each scope's view at once; a primary-key lookup per row,
// so only when asked). $8 (max_bytes, NULL: none) ends the page once the
// events before it hold that many bytes (payload text and 64 per event; the
// first event always comes); `read` says how many the count limit allowed,
// so a page cut short by bytes is known to be full. A prepared statement (under the Reader's own
// name, through pg::Pipeline): read_events is inlined into it, and planning that afresh costs more
// than running a small page (about 0.7 ms against 0.4 ms, measured with pgbench on a 5-event page).
const internal::pg::Statement kReadPage{
    "read_page",
    R"SQL(
SELECT t.epoch::pg_catalog.text, t.head, t.purged_through, r.watermark, r.doc_key, r.doc_version,
       r.scope, r.op,
       CASE WHEN $7::boolean AND r.payload_fetched AND r.payload IS NOT NULL
                 AND NOT coalesce((SELECT d.scope OPERATOR(pg_catalog.=) r.scope
                                   FROM oasync.docs AS d
                                   WHERE d.topic OPERATOR(pg_catalog.=) $1::pg_catalog.text
                                     AND d.doc_key OPERATOR(pg_catalog.=) r.doc_key), false)
            THEN NULL ELSE r.payload::pg_catalog.text END,
       r.payload_hash, r.payload_fetched,
       CASE WHEN $7::boolean AND r.watermark IS NOT NULL
            THEN (SELECT ev.previous_scope FROM oasync.events AS ev
                  WHERE ev.topic OPERATOR(pg_catalog.=) $1::pg_catalog.text
                    AND ev.watermark OPERATOR(pg_catalog.=) r.watermark) END,
       (SELECT x.epoch_counter FROM oasync.topics AS x
        WHERE x.topic OPERATOR(pg_catalog.=) $1::pg_catalog.text),
       r.read
FROM oasync.topic_position($1::pg_catalog.text) AS t
LEFT JOIN (
  SELECT c.watermark, c.doc_key, c.doc_version, c.scope, c.op, c.payload, c.payload_hash,
         c.payload_fetched, c.read
  FROM (
    SELECT b.*, pg_catalog.sum(b.size) OVER (ORDER BY b.watermark ROWS UNBOUNDED PRECEDING) AS upto,
           pg_catalog.count(*) OVER () AS read
    FROM (
      SELECT e.watermark, e.doc_key, e.doc_version, e.scope, e.op, e.payload, e.payload_hash,
             e.payload_fetched,
             64 OPERATOR(pg_catalog.+)
               coalesce(pg_catalog.octet_length(e.payload::pg_catalog.text), 0) AS size
      FROM oasync.read_events($1::pg_catalog.text,
                              CASE WHEN $2::pg_catalog.text OPERATOR(pg_catalog.<>) ''
                                   THEN $2::pg_catalog.uuid END,
                              $3::bigint, $4::bigint, $5::pg_catalog.text) AS e
      LIMIT $6::bigint) AS b) AS c
  WHERE $8::bigint IS NULL
     OR c.upto OPERATOR(pg_catalog.-) c.size OPERATOR(pg_catalog.<) $8::bigint) AS r ON true
WHERE t.epoch IS NOT NULL
)SQL",
    {internal::pg::kText, internal::pg::kText, internal::pg::kInt8, internal::pg::kInt8,
     internal::pg::kText, internal::pg::kInt8, internal::pg::kBool, internal::pg::kInt8}};

// A snapshot page: the topic's position and the page's docs, from one
// snapshot (one statement). $1 topic, $2 scope (NULL: every doc, or the
// session's bound scope), $3 the last key of the previous page ('' first),
// $4 the page size, $5 the page's bytes (NULL: no bound; as kReadPage's $8),
// in the key order snapshot_docs gives.
const internal::pg::Statement kSnapshotPage{
    "snapshot_page",
    R"SQL(
SELECT t.epoch::pg_catalog.text, t.head, t.purged_through,
       (SELECT x.epoch_counter FROM oasync.topics AS x
        WHERE x.topic OPERATOR(pg_catalog.=) $1::pg_catalog.text),
       d.doc_key, d.scope, d.doc_version, d.deleted, d.payload::pg_catalog.text, d.payload_hash,
       d.last_watermark, d.read
FROM oasync.topic_position($1::pg_catalog.text) AS t
LEFT JOIN (
  SELECT c.doc_key, c.scope, c.doc_version, c.deleted, c.payload, c.payload_hash,
         c.last_watermark, c.read
  FROM (
    SELECT b.*, pg_catalog.sum(b.size) OVER (ORDER BY b.n ROWS UNBOUNDED PRECEDING) AS upto,
           pg_catalog.count(*) OVER () AS read
    FROM (
      SELECT s.doc_key, s.scope, s.doc_version, s.deleted, s.payload, s.payload_hash,
             s.last_watermark, s.ordinality AS n,
             64 OPERATOR(pg_catalog.+)
               coalesce(pg_catalog.octet_length(s.payload::pg_catalog.text), 0) AS size
      FROM oasync.snapshot_docs($1::pg_catalog.text, $2::pg_catalog.text, NULL::bigint,
                                $3::pg_catalog.text, $4::integer) WITH ORDINALITY AS s) AS b
    ) AS c
  WHERE $5::bigint IS NULL
     OR c.upto OPERATOR(pg_catalog.-) c.size OPERATOR(pg_catalog.<) $5::bigint
  ORDER BY c.n) AS d ON true
WHERE t.epoch IS NOT NULL
)SQL",
    {internal::pg::kText, internal::pg::kText, internal::pg::kText, internal::pg::kInt8,
     internal::pg::kInt8}};

// Whether `page` holds as many events as `request` allows.
bool full(const Page& page, const ReadRequest& request) {
  return !page.events.empty() &&
         (page.cut || static_cast<std::int64_t>(page.events.size()) >= request.max_events);
}

// An Event from row `i` of kReadPage's result.
Event event_from_row(const std::string& topic, const internal::pg::Result& rows, int i) {
  Event e;
  e.topic = topic;
  e.epoch = rows.text(i, 0);
  e.watermark = rows.int8(i, 3);
  e.doc_key = rows.text(i, 4);
  e.doc_version = rows.int8(i, 5);
  e.scope = rows.text(i, 6);
  e.op = parse_op(rows.text(i, 7)).value_or(Op::upsert);
  if (!rows.is_null(i, 8)) e.payload = rows.text(i, 8);
  if (!rows.is_null(i, 9)) e.payload_hash = rows.bytes(i, 9);
  e.payload_fetched = rows.boolean(i, 10);
  if (!rows.is_null(i, 11)) e.previous_scope = std::string(rows.text(i, 11));
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
    if (!row["epoch_counter"].is_null()) {
      out.position.epoch_counter = row["epoch_counter"].as<std::int64_t>();
    }
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

Reader::Reader(pqxx::connection_base& connection)
    : conn_(connection), pipeline_(std::make_unique<internal::pg::Pipeline>()) {
  // Session settings (libpqxx sets them again after a reconnection).
  conn_.set_variable("enable_seqscan", "off");
  conn_.set_variable("enable_bitmapscan", "off");
  conn_.set_variable("jit", "off");
  conn_.set_variable("plan_cache_mode", "force_generic_plan");
}

Reader::~Reader() = default;

ResumeCheck Reader::check(const std::string& topic, const std::string& epoch,
                          std::int64_t watermark) {
  return internal::db_step("resume check", [&] {
    pqxx::read_transaction tx(conn_);
    return check_in(tx, topic, epoch, watermark);
  });
}

Page Reader::read(const ReadRequest& request) {
  Page out;
  Page end = read_pages(
      request,
      [&](Page& page) {
        out = std::move(page);
        return false;
      },
      ReadAhead::no);
  return end.stale ? end : out;
}

Page Reader::read_pages(const ReadRequest& request, const std::function<bool(Page&)>& on_page) {
  return read_pages(request, on_page, ReadAhead::yes);
}

namespace {

// The call of kReadPage for `request`.
std::vector<internal::pg::Call> page_call(const ReadRequest& request) {
  std::vector<internal::pg::Call> calls(1);
  calls[0].statement = &kReadPage;
  internal::pg::Params& p = calls[0].params;
  p.add_text(request.topic);
  p.add_text(request.epoch);
  p.add_int8(request.after);
  if (request.through) {
    p.add_int8(*request.through);
  } else {
    p.add_null(internal::pg::kInt8);
  }
  if (request.scope) {
    p.add_text(*request.scope);
  } else {
    p.add_null(internal::pg::kText);
  }
  p.add_int8(request.max_events);
  p.add_bool(request.detail == Detail::routing);
  if (request.max_bytes) {
    p.add_int8(*request.max_bytes);
  } else {
    p.add_null(internal::pg::kInt8);
  }
  return calls;
}

// The page in kReadPage's result; position.epoch stays empty when the topic
// is not registered.
Page page_of(const ReadRequest& request, const internal::pg::Result& rows) {
  Page page;
  page.events.reserve(static_cast<std::size_t>(rows.rows()));
  for (int i = 0; i < rows.rows(); ++i) {
    page.position = {request.topic, std::string(rows.text(i, 0)), rows.int8(i, 1), rows.int8(i, 2),
                     rows.int8(i, 12)};
    if (rows.is_null(i, 3)) break;  // the topic's row alone: no events
    page.events.push_back(event_from_row(request.topic, rows, i));
  }
  // A page the byte bound cut short is full too.
  if (!page.events.empty() &&
      rows.int8(rows.rows() - 1, 13) > static_cast<std::int64_t>(page.events.size())) {
    page.cut = true;
  }
  // The cursor: the last event of a full page, else the end of the range.
  page.through = full(page, request) ? page.events.back().watermark
                                     : request.through.value_or(page.position.head);
  return page;
}

// Receives the page read ahead and drops it (and any error of its own).
void drain(internal::pg::Pipeline& pipeline, PGconn* conn) noexcept {
  try {
    pipeline.receive(conn);
  } catch (...) {
    // Unused: the caller stopped before it.
  }
}

}  // namespace

Page Reader::read_pages(ReadRequest request, const std::function<bool(Page&)>& on_page,
                        ReadAhead read_ahead) {
  if (!request.epoch.empty() && !is_uuid(request.epoch)) {
    Page page;
    page.stale = check(request.topic, request.epoch, request.after);
    return page;
  }
  Page last;
  try {
    // Statements in autocommit mode: one round trip, one snapshot each.
    internal::pg::Borrowed borrowed(conn_);
    std::vector<internal::pg::Call> calls = page_call(request);
    pipeline_->send(borrowed.get(), calls, "read events");
    for (;;) {
      Page page = page_of(request, pipeline_->receive(borrowed.get())[0]);
      if (page.position.epoch.empty()) break;  // not registered (check says so)
      const bool more =
          full(page, request) && page.through < request.through.value_or(page.position.head + 1);
      // The next page is read while this one is handed out.
      const bool ahead = more && read_ahead == ReadAhead::yes;
      const auto send_next = [&] {
        request.after = page.through;
        calls = page_call(request);
        pipeline_->send(borrowed.get(), calls, "read events");
      };
      if (ahead) send_next();
      last.position = page.position;
      last.through = page.through;
      bool go_on = false;
      try {
        go_on = on_page(page);
      } catch (...) {
        if (ahead) drain(*pipeline_, borrowed.get());
        throw;
      }
      if (!more) return last;
      if (!go_on) {
        if (ahead) drain(*pipeline_, borrowed.get());  // the page read ahead, unused
        return last;
      }
      if (!ahead) send_next();
    }
  } catch (const Error& e) {
    if (e.sqlstate() == kAboveHeadSqlstate) {
      throw Error(Code::invalid_argument,
                  fmt::format("read of topic \"{}\" through {}: that is above the head (a "
                              "cursor moved there would skip events)",
                              request.topic, request.through.value_or(0)));
    }
    if (e.sqlstate() != kStaleSqlstate) throw;
  } catch (...) {
    internal::rethrow_as_error("read events");
  }
  // The cursor went stale (or the topic is unknown); say exactly why.
  Page stale;
  stale.stale = check(request.topic, request.epoch, request.after);
  stale.position = stale.stale->position;
  return stale;
}

std::vector<TopicPosition> Reader::positions() {
  return internal::db_step("read topic positions", [&] {
    pqxx::nontransaction tx(conn_);
    std::vector<TopicPosition> out;
    for (const auto& row : tx.exec(kPositionsSql)) {
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::int64_t>(),
                     row[3].as<std::int64_t>(), row[4].as<std::int64_t>()});
    }
    return out;
  });
}

std::optional<std::string> Reader::epoch_for(const std::string& topic, std::int64_t epoch_counter) {
  return internal::db_step("read epoch", [&]() -> std::optional<std::string> {
    pqxx::nontransaction tx(conn_);
    const pqxx::result rows = tx.exec_params(kEpochForSql, topic, epoch_counter);
    if (rows.empty()) return std::nullopt;
    return rows[0][0].as<std::string>();
  });
}

Reader::SnapshotPage Reader::snapshot_page(const std::string& topic,
                                           const std::optional<std::string>& scope,
                                           const std::string& after_key, int page_size,
                                           std::optional<std::int64_t> max_bytes) {
  return internal::db_step("snapshot page", [&] {
    internal::pg::Borrowed borrowed(conn_);
    std::vector<internal::pg::Call> calls(1);
    calls[0].statement = &kSnapshotPage;
    internal::pg::Params& p = calls[0].params;
    p.add_text(topic);
    if (scope) {
      p.add_text(*scope);
    } else {
      p.add_null(internal::pg::kText);
    }
    p.add_text(after_key);
    p.add_int8(page_size);
    if (max_bytes) {
      p.add_int8(*max_bytes);
    } else {
      p.add_null(internal::pg::kInt8);
    }
    const internal::pg::Result rows =
        std::move(pipeline_->run(borrowed.get(), calls, "snapshot page")[0]);
    SnapshotPage page;
    page.docs.reserve(static_cast<std::size_t>(rows.rows()));
    for (int i = 0; i < rows.rows(); ++i) {
      page.position = {topic, std::string(rows.text(i, 0)), rows.int8(i, 1), rows.int8(i, 2),
                       rows.int8(i, 3)};
      if (rows.is_null(i, 4)) break;  // the topic's row alone: no docs
      Doc d;
      d.topic = topic;
      d.doc_key = rows.text(i, 4);
      d.scope = rows.text(i, 5);
      d.doc_version = rows.int8(i, 6);
      d.deleted = rows.boolean(i, 7);
      if (!rows.is_null(i, 8)) d.payload = rows.text(i, 8);
      if (!rows.is_null(i, 9)) d.payload_hash = rows.bytes(i, 9);
      d.last_watermark = rows.int8(i, 10);
      page.docs.push_back(std::move(d));
    }
    page.cut = !page.docs.empty() &&
               rows.int8(rows.rows() - 1, 11) > static_cast<std::int64_t>(page.docs.size());
    return page;
  });
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

std::vector<Reader::FoundDoc> Reader::find_doc(const std::string& doc_key,
                                               const std::optional<std::string>& topic) {
  return internal::db_step("get doc", [&] {
    pqxx::read_transaction tx(conn_);
    internal::pin_search_path(tx);
    std::vector<FoundDoc> docs;
    for (const auto& row : tx.exec_params(kGetDocSql, doc_key, topic ? topic->c_str() : nullptr)) {
      FoundDoc found;
      found.doc = doc_from_row(row["topic"].as<std::string>(), row);
      found.position = {found.doc.topic, row["epoch"].as<std::string>(),
                        row["head"].as<std::int64_t>(), row["purged_through"].as<std::int64_t>(),
                        row["epoch_counter"].as<std::int64_t>()};
      docs.push_back(std::move(found));
    }
    return docs;
  });
}

}  // namespace oasync

namespace oasync::internal {

const char* reader_page_sql() {
  return kReadPage.sql;
}

}  // namespace oasync::internal
