#include "journal_check.hpp"

#include <pqxx/pqxx>

namespace oasync::test {

std::vector<std::string> journal_violations(const TestDatabase& db) {
  auto conn = db.connect();
  pqxx::work tx(*conn);
  std::vector<std::string> out;
  for (const auto& row : tx.exec(R"SQL(
SELECT t.topic, t.head, count(e.watermark), coalesce(min(e.watermark), 0),
       coalesce(max(e.watermark), 0), count(DISTINCT e.watermark)
FROM oasync.topics t LEFT JOIN oasync.events e ON e.topic = t.topic
GROUP BY t.topic, t.head
HAVING t.head <> count(e.watermark) OR t.head <> coalesce(max(e.watermark), 0)
    OR (t.head > 0 AND min(e.watermark) <> 1) OR count(DISTINCT e.watermark) <> count(e.watermark)
)SQL")) {
    out.push_back("topic " + row[0].as<std::string>() + ": head " + row[1].as<std::string>() +
                  " but " + row[2].as<std::string>() + " events from " + row[3].as<std::string>() +
                  " to " + row[4].as<std::string>());
  }
  for (const auto& row : tx.exec(R"SQL(
SELECT topic, doc_key, count(*), max(doc_version), count(DISTINCT doc_version)
FROM oasync.events GROUP BY topic, doc_key
HAVING max(doc_version) <> count(*) OR count(DISTINCT doc_version) <> count(*) OR min(doc_version) <> 1
)SQL")) {
    out.push_back("doc " + row[1].as<std::string>() + ": " + row[2].as<std::string>() +
                  " events but versions up to " + row[3].as<std::string>());
  }
  for (const auto& row : tx.exec(R"SQL(
WITH latest AS (
  SELECT DISTINCT ON (topic, doc_key) *
  FROM oasync.events ORDER BY topic, doc_key, watermark DESC
)
SELECT d.topic, d.doc_key, d.doc_version, d.last_watermark, e.doc_version, e.watermark
FROM oasync.docs d LEFT JOIN latest e ON e.topic = d.topic AND e.doc_key = d.doc_key
WHERE e.watermark IS NULL OR d.doc_version <> e.doc_version OR d.last_watermark <> e.watermark
   OR d.deleted <> (e.op = 'delete') OR d.payload_hash IS DISTINCT FROM e.payload_hash
   OR (d.payload IS NOT NULL AND sha256(convert_to(d.payload::text, 'UTF8')) <> d.payload_hash)
)SQL")) {
    out.push_back("doc " + row[1].as<std::string>() + ": row at version " +
                  row[2].as<std::string>() + " does not match its latest event");
  }
  return out;
}

}  // namespace oasync::test
