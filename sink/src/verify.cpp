#include "oasync/verify.hpp"

#include <chrono>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"
#include "topic_rows.hpp"

namespace oasync {
namespace {

// Events whose version does not follow the doc's previous retained event.
const char* const kVersionsSql = R"SQL(
SELECT doc_key, watermark, doc_version, prev_version
FROM (SELECT doc_key, watermark, doc_version,
             lag(doc_version) OVER (PARTITION BY doc_key ORDER BY watermark) AS prev_version
      FROM oasync.events WHERE topic = $1 AND watermark > $2) AS x
WHERE (prev_version IS NOT NULL AND doc_version <> prev_version + 1)
   OR (prev_version IS NULL AND $3 AND doc_version <> 1)
ORDER BY watermark
)SQL";

// Docs against their latest retained event; only disagreements come back,
// with what was expected and what was found. A doc, live or a tombstone, is in
// the scope of its latest event (a delete keeps the doc's scope); one whose
// events were purged has nothing to be compared with.
const char* const kDocsSql = R"SQL(
WITH latest AS (
  SELECT DISTINCT ON (doc_key) doc_key, watermark, doc_version, op, scope,
         payload::text AS payload, payload_hash
  FROM oasync.events WHERE topic = $1 AND watermark > $2
  ORDER BY doc_key, watermark DESC
), doc AS (
  SELECT doc_key, doc_version, deleted, scope, payload::text AS payload, payload_hash,
         last_watermark
  FROM oasync.docs WHERE topic = $1 AND last_watermark > $2
)
SELECT coalesce(d.doc_key, e.doc_key) AS doc_key, m.what, m.expected, m.found
FROM latest e FULL JOIN doc d ON d.doc_key = e.doc_key
CROSS JOIN LATERAL (SELECT d.doc_key IS NOT NULL AND e.doc_key IS NOT NULL AS both_sides) AS b
CROSS JOIN LATERAL (VALUES
  (d.doc_key IS NULL, 'doc row', 'a doc row for the event at watermark ' || e.watermark, 'none'),
  (e.doc_key IS NULL AND d.last_watermark > $3, 'latest event',
   'an event at watermark ' || d.last_watermark, 'none'),
  (b.both_sides AND d.doc_version <> e.doc_version, 'version',
   'version ' || e.doc_version || ' (event at watermark ' || e.watermark || ')',
   'version ' || d.doc_version),
  (b.both_sides AND d.last_watermark <> e.watermark, 'last_watermark', 'watermark ' || e.watermark,
   'watermark ' || d.last_watermark),
  (b.both_sides AND d.scope <> e.scope, 'scope',
   'scope "' || e.scope || '" (event at watermark ' || e.watermark || ')',
   'scope "' || d.scope || '"'),
  (b.both_sides AND d.deleted <> (e.op = 'delete'), 'tombstone',
   CASE WHEN e.op = 'delete' THEN 'deleted' ELSE 'live' END,
   CASE WHEN d.deleted THEN 'deleted' ELSE 'live' END),
  (b.both_sides AND d.payload_hash IS DISTINCT FROM e.payload_hash, 'payload_hash',
   coalesce(encode(e.payload_hash, 'hex'), 'none'), coalesce(encode(d.payload_hash, 'hex'), 'none')),
  (b.both_sides AND $4 AND e.op = 'upsert' AND e.payload IS NOT NULL
   AND d.payload IS DISTINCT FROM e.payload, 'payload',
   left(coalesce(e.payload, 'none'), 80), left(coalesce(d.payload, 'none'), 80))
) AS m(bad, what, expected, found)
WHERE m.bad
ORDER BY 1, 2
)SQL";

// Scope moves: each retained event with a previous_scope has its exit row,
// and each exit row its event.
const char* const kExitsSql = R"SQL(
SELECT coalesce(e.watermark, x.watermark) AS watermark,
       CASE WHEN x.watermark IS NULL THEN 'an exit row of scope "' || e.previous_scope || '"'
            ELSE 'an event that left scope "' || x.scope || '"' END AS expected,
       CASE WHEN x.watermark IS NULL THEN 'none'
            WHEN e.watermark IS NULL THEN 'no such event'
            ELSE 'an event that left "' || coalesce(e.previous_scope, '') || '"' END AS found
FROM (SELECT * FROM oasync.events WHERE topic = $1 AND watermark > $2 AND previous_scope IS NOT NULL) e
FULL JOIN (SELECT * FROM oasync.scope_exits WHERE topic = $1 AND watermark > $2) x
  ON x.watermark = e.watermark AND x.scope = e.previous_scope AND x.doc_key = e.doc_key
     AND x.doc_version = e.doc_version
WHERE e.watermark IS NULL OR x.watermark IS NULL
ORDER BY 1
)SQL";

// The topic's doc counters (0007) against the docs they count.
const char* const kCountersSql = R"SQL(
SELECT t.live_docs, t.tombstones,
       (SELECT count(*) FROM oasync.docs d
        WHERE d.topic = t.topic AND d.doc_version > 0 AND NOT d.deleted) AS live_found,
       (SELECT count(*) FROM oasync.docs d
        WHERE d.topic = t.topic AND d.doc_version > 0 AND d.deleted) AS tombstones_found
FROM oasync.topics t WHERE t.topic = $1
)SQL";

const char* const kPrefixSql = R"SQL(
SELECT 'doc' AS kind, doc_key, 0 AS watermark FROM oasync.docs
WHERE topic = $1 AND NOT starts_with(doc_key, $2) AND last_watermark > $3
UNION ALL
SELECT 'event', doc_key, watermark FROM oasync.events
WHERE topic = $1 AND NOT starts_with(doc_key, $2) AND watermark > $3
ORDER BY 3, 2 LIMIT 1000
)SQL";

const char* const kUnregisteredSql = R"SQL(
SELECT 'events' AS table_name, topic, count(*) AS row_count FROM oasync.events
WHERE topic NOT IN (SELECT topic FROM oasync.topics) GROUP BY topic
UNION ALL
SELECT 'docs', topic, count(*) FROM oasync.docs
WHERE topic NOT IN (SELECT topic FROM oasync.topics) GROUP BY topic
ORDER BY 2, 1
)SQL";

// Events at or below the floor: there must be none.
const char* const kBelowFloorSql = R"SQL(
SELECT count(*) AS events, coalesce(min(watermark), 0) AS first
FROM oasync.events WHERE topic = $1 AND watermark <= $2 AND watermark > $3
)SQL";

// One page of retained watermarks.
const char* const kWatermarkPageSql = R"SQL(
SELECT watermark FROM oasync.events WHERE topic = $1 AND watermark > $2
ORDER BY watermark LIMIT $3
)SQL";

const char* const kDocCountSql = R"SQL(
SELECT count(*) AS docs FROM oasync.docs WHERE topic = $1 AND last_watermark > $2
)SQL";

// Payloads with their hashes: a random sample of docs, of events; a page of
// docs by key, of events by watermark.
const char* const kSampleDocsSql = R"SQL(
SELECT doc_key, payload::text AS payload, payload_hash FROM oasync.docs
WHERE topic = $1 AND payload IS NOT NULL AND last_watermark > $2 ORDER BY random() LIMIT $3
)SQL";
const char* const kSampleEventsSql = R"SQL(
SELECT watermark, payload::text AS payload, payload_hash FROM oasync.events
WHERE topic = $1 AND payload IS NOT NULL AND watermark > $2 ORDER BY random() LIMIT $3
)SQL";
const char* const kDocPayloadPageSql = R"SQL(
SELECT doc_key, payload::text AS payload, payload_hash FROM oasync.docs
WHERE topic = $1 AND doc_key > $2 AND payload IS NOT NULL AND last_watermark > $3
ORDER BY doc_key LIMIT $4
)SQL";
const char* const kEventPayloadPageSql = R"SQL(
SELECT watermark, payload::text AS payload, payload_hash FROM oasync.events
WHERE topic = $1 AND watermark > $2 AND payload IS NOT NULL ORDER BY watermark LIMIT $3
)SQL";

// What verify needs of a registered topic.
struct TopicRow {
  std::string name;
  std::string prefix;
  bool inline_payload = true;
  std::int64_t head = 0;
  std::int64_t purged_through = 0;
};

class Verifier {
 public:
  Verifier(pqxx::transaction_base& tx, const VerifyOptions& o,
           const std::function<void(const Problem&)>& on_problem, VerifyReport& report)
      : tx_(tx), o_(o), on_problem_(on_problem), report_(report) {
    for (const char* name :
         {"watermarks", "versions", "docs", "exits", "counters", "hashes", "prefixes", "topics"}) {
      report_.checks[name];
    }
  }

  void topic(const TopicRow& t) {
    ++report_.topics;
    const std::int64_t events = watermarks(t);
    versions(t, events);
    const std::int64_t doc_count = docs(t);
    exits(t, events);
    if (o_.since == 0) counters(t);  // whole-topic counts; not an incident's
    hashes(t);
    prefixes(t, events + doc_count);
  }

  void unregistered() {
    for (const auto& row : tx_.exec(kUnregisteredSql)) {
      ++report_.checks["topics"].checked;
      problem(row["topic"].as<std::string>(), "topics",
              fmt::format("{} table", row["table_name"].as<std::string>()), "a registered topic",
              fmt::format("{} rows of an unregistered topic", row["row_count"].as<std::int64_t>()));
    }
  }

 private:
  void problem(const std::string& topic, const std::string& check, std::string where,
               std::string expected, std::string found) {
    ++report_.checks[check].problems;
    on_problem_(Problem{topic, check, std::move(where), std::move(expected), std::move(found)});
  }

  // Returns the number of retained events read.
  std::int64_t watermarks(const TopicRow& t) {
    std::int64_t read = 0;
    CheckCount& count = report_.checks["watermarks"];
    const pqxx::row below = tx_.exec_params1(kBelowFloorSql, t.name, t.purged_through, o_.since);
    if (below["events"].as<std::int64_t>() > 0) {
      problem(t.name, "watermarks", fmt::format("watermark {}", below["first"].as<std::int64_t>()),
              fmt::format("no event at or below purged_through {}", t.purged_through),
              fmt::format("{} such events", below["events"].as<std::int64_t>()));
    }
    std::int64_t last = std::max(o_.since, t.purged_through);
    for (;;) {
      const pqxx::result rows = tx_.exec_params(kWatermarkPageSql, t.name, last, o_.page_size);
      for (const auto& row : rows) {
        const std::int64_t w = row["watermark"].as<std::int64_t>();
        ++count.checked;
        ++read;
        if (w > t.head) {
          problem(t.name, "watermarks", fmt::format("watermark {}", w),
                  fmt::format("no event above head {}", t.head), fmt::format("an event at {}", w));
        } else if (w != last + 1) {
          problem(t.name, "watermarks", fmt::format("watermark {}", last + 1),
                  fmt::format("watermark {}", last + 1),
                  w == last + 2 ? fmt::format("a gap: next is {}", w)
                                : fmt::format("a gap of {} .. {}: next is {}", last + 1, w - 1, w));
        }
        last = w;
      }
      if (static_cast<int>(rows.size()) < o_.page_size) break;
    }
    if (last < t.head) {
      problem(t.name, "watermarks", fmt::format("watermark {}", last + 1),
              fmt::format("events up to head {}", t.head),
              last == std::max(o_.since, t.purged_through)
                  ? std::string("no events")
                  : fmt::format("the last event at {}", last));
    }
    return read;
  }

  void versions(const TopicRow& t, std::int64_t events) {
    report_.checks["versions"].checked += events;
    const bool from_start = t.purged_through == 0 && o_.since == 0;
    for (const auto& row : tx_.exec_params(kVersionsSql, t.name, o_.since, from_start)) {
      const std::string key = row["doc_key"].as<std::string>();
      const std::int64_t watermark = row["watermark"].as<std::int64_t>();
      const std::int64_t v = row["doc_version"].as<std::int64_t>();
      if (row["prev_version"].is_null()) {
        problem(t.name, "versions", fmt::format("doc_key \"{}\" at watermark {}", key, watermark),
                "version 1 for the first event", fmt::format("version {}", v));
        continue;
      }
      const std::int64_t prev = row["prev_version"].as<std::int64_t>();
      problem(t.name, "versions", fmt::format("doc_key \"{}\" at watermark {}", key, watermark),
              fmt::format("version {}", prev + 1),
              v == prev ? fmt::format("version {} again (a duplicate)", v)
                        : fmt::format("version {}", v));
    }
  }

  // Returns the number of docs compared.
  std::int64_t docs(const TopicRow& t) {
    const std::int64_t count =
        tx_.exec_params1(kDocCountSql, t.name, o_.since)["docs"].as<std::int64_t>();
    report_.checks["docs"].checked += count;
    for (const auto& row :
         tx_.exec_params(kDocsSql, t.name, o_.since, t.purged_through, t.inline_payload)) {
      problem(t.name, "docs",
              fmt::format("doc_key \"{}\" ({})", row["doc_key"].as<std::string>(),
                          row["what"].as<std::string>()),
              row["expected"].as<std::string>(), row["found"].as<std::string>());
    }
    return count;
  }

  void exits(const TopicRow& t, std::int64_t events) {
    report_.checks["exits"].checked += events;
    const std::int64_t since = std::max(o_.since, t.purged_through);
    for (const auto& row : tx_.exec_params(kExitsSql, t.name, since)) {
      problem(t.name, "exits", fmt::format("watermark {}", row["watermark"].as<std::int64_t>()),
              row["expected"].as<std::string>(), row["found"].as<std::string>());
    }
  }

  // Recomputes canonical form and SHA-256 of stored payloads, in pages.
  void hashes(const TopicRow& t) {
    const auto check_one = [&](const std::string& where, const pqxx::row& row) {
      ++report_.checks["hashes"].checked;
      const std::string text = row["payload"].as<std::string>();
      const pqxx::field hash = row["payload_hash"];
      const std::string stored = hash.is_null() ? "" : to_hex(pqxx::binarystring(hash).str());
      try {
        const CanonicalJson c = canonicalize(text, JsonShape::object);
        if (c.text != text) {
          problem(t.name, "hashes", where, "canonical JSON", fmt::format("{:.80}", text));
        } else if (to_hex(c.sha256) != stored) {
          problem(t.name, "hashes", where, "payload_hash " + to_hex(c.sha256),
                  "payload_hash " + (stored.empty() ? std::string("none") : stored));
        }
      } catch (const Error& e) {
        problem(t.name, "hashes", where, "a JSON object", e.what());
      }
    };
    if (o_.sample) {
      for (const auto& row : tx_.exec_params(kSampleDocsSql, t.name, o_.since, *o_.sample)) {
        check_one(fmt::format("doc_key \"{}\"", row["doc_key"].as<std::string>()), row);
      }
      for (const auto& row : tx_.exec_params(kSampleEventsSql, t.name, o_.since, *o_.sample)) {
        check_one(fmt::format("watermark {}", row["watermark"].as<std::int64_t>()), row);
      }
      return;
    }
    std::string after_key;
    for (;;) {
      const pqxx::result rows =
          tx_.exec_params(kDocPayloadPageSql, t.name, after_key, o_.since, o_.page_size);
      for (const auto& row : rows) {
        after_key = row["doc_key"].as<std::string>();
        check_one(fmt::format("doc_key \"{}\"", after_key), row);
      }
      if (static_cast<int>(rows.size()) < o_.page_size) break;
    }
    std::int64_t after = o_.since;
    for (;;) {
      const pqxx::result rows = tx_.exec_params(kEventPayloadPageSql, t.name, after, o_.page_size);
      for (const auto& row : rows) {
        after = row["watermark"].as<std::int64_t>();
        check_one(fmt::format("watermark {}", after), row);
      }
      if (static_cast<int>(rows.size()) < o_.page_size) break;
    }
  }

  void counters(const TopicRow& t) {
    report_.checks["counters"].checked += 2;
    const pqxx::row row = tx_.exec_params1(kCountersSql, t.name);
    const std::pair<const char*, const char*> pairs[] = {{"live_docs", "live_found"},
                                                         {"tombstones", "tombstones_found"}};
    for (const auto& [counter, found] : pairs) {
      const auto kept = row[counter].as<std::int64_t>();
      const auto counted = row[found].as<std::int64_t>();
      if (kept != counted) {
        problem(t.name, "counters", fmt::format("topics.{}", counter), fmt::format("{}", counted),
                fmt::format("{}", kept));
      }
    }
  }

  void prefixes(const TopicRow& t, std::int64_t rows) {
    report_.checks["prefixes"].checked += rows;
    for (const auto& row : tx_.exec_params(kPrefixSql, t.name, t.prefix, o_.since)) {
      const std::string key = row["doc_key"].as<std::string>();
      problem(t.name, "prefixes",
              row["kind"].as<std::string>() == "doc"
                  ? fmt::format("doc_key \"{}\"", key)
                  : fmt::format("watermark {}", row["watermark"].as<std::int64_t>()),
              fmt::format("a doc_key starting with \"{}\"", t.prefix), fmt::format("\"{}\"", key));
    }
  }

  pqxx::transaction_base& tx_;
  const VerifyOptions& o_;
  const std::function<void(const Problem&)>& on_problem_;
  VerifyReport& report_;
};

}  // namespace

bool VerifyReport::clean() const {
  for (const auto& [name, count] : checks) {
    if (count.problems > 0) return false;
  }
  return true;
}

VerifyReport verify(pqxx::connection_base& conn, const VerifyOptions& options,
                    const std::function<void(const Problem&)>& on_problem) {
  const auto started = std::chrono::steady_clock::now();
  VerifyReport report;
  internal::db_step("verify", [&] {
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn, "oasync_verify");
    internal::pin_search_path(tx);
    Verifier verifier(tx, options, on_problem, report);
    for (const auto& row : internal::select_topics(internal::read_topic_rows(tx), options.topics)) {
      const TopicState& t = row.state;
      verifier.topic({t.spec.name, t.spec.doc_key_prefix,
                      t.spec.payload_mode == PayloadMode::inline_payload, t.head,
                      t.purged_through});
    }
    if (options.topics.empty()) verifier.unregistered();
    tx.commit();
  });
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace oasync
