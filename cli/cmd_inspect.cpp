// oasync inspect [TOPIC] [--format table|json|prometheus]
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/error.hpp"

namespace oasync::cli {
namespace {

// Per topic, read in one snapshot. Counts come from the (topic, ...) indexes.
const char* const kInspectSql = R"SQL(
SELECT t.topic, t.epoch::text, t.head, t.purged_through, t.payload_mode, t.max_payload_bytes,
       coalesce(extract(epoch FROM t.retention_max_age)::bigint, 0), t.retention_min_events,
       coalesce(extract(epoch FROM t.tombstone_retention)::bigint, 0),
       (SELECT count(*) FROM oasync.events e WHERE e.topic = t.topic),
       (SELECT count(*) FROM oasync.docs d WHERE d.topic = t.topic AND NOT d.deleted),
       (SELECT count(*) FROM oasync.docs d WHERE d.topic = t.topic AND d.deleted),
       coalesce((SELECT extract(epoch FROM now() - e.committed_at)::bigint FROM oasync.events e
                 WHERE e.topic = t.topic ORDER BY e.watermark LIMIT 1), 0)
FROM oasync.topics t
WHERE $1 = '' OR t.topic = $1
ORDER BY t.topic COLLATE "C"
)SQL";

const char* const kSizesSql = R"SQL(
SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'oasync' AND c.relkind = 'r'
ORDER BY c.relname
)SQL";

struct TopicRow {
  std::string topic, epoch, mode;
  std::int64_t head, purged_through, max_payload_bytes, max_age_s, min_events, tombstone_s, events,
      live_docs, tombstones, oldest_age_s;
};

std::string prom_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

void add_inspect_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  struct Options {
    std::string topic;
    std::string format = "table";
  };
  auto options = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("inspect", "Show the state of each topic's journal");
  sub->footer(
      "\nShows per topic: head, purged_through, epoch, retained events, live docs,\n"
      "tombstones, the age of the oldest retained event, payload mode, retention, and\n"
      "the sizes of oasync's tables and indexes.");
  sub->add_option("TOPIC", options->topic, "Only this topic");
  sub->add_option("--format", options->format,
                  "table, json, or prometheus (text exposition for node_exporter's textfile "
                  "collector)")
      ->check(CLI::IsMember({"table", "json", "prometheus"}));
  out.push_back(
      {sub, [&ctx, options]() {
         auto conn = ctx.connect();
         pqxx::read_transaction tx(*conn);
         std::vector<TopicRow> rows;
         for (const auto& r : tx.exec_params(kInspectSql, options->topic)) {
           rows.push_back({r[0].as<std::string>(), r[1].as<std::string>(), r[4].as<std::string>(),
                           r[2].as<std::int64_t>(), r[3].as<std::int64_t>(),
                           r[5].as<std::int64_t>(), r[6].as<std::int64_t>(),
                           r[7].as<std::int64_t>(), r[8].as<std::int64_t>(),
                           r[9].as<std::int64_t>(), r[10].as<std::int64_t>(),
                           r[11].as<std::int64_t>(), r[12].as<std::int64_t>()});
         }
         if (!options->topic.empty() && rows.empty()) {
           throw Error(fmt::format("topic \"{}\" is not registered", options->topic));
         }
         std::vector<std::tuple<std::string, std::int64_t, std::int64_t>> sizes;
         for (const auto& r : tx.exec(kSizesSql)) {
           sizes.emplace_back(r[0].as<std::string>(), r[1].as<std::int64_t>(),
                              r[2].as<std::int64_t>());
         }
         if (options->format == "json") {
           nlohmann::json doc = {{"topics", nlohmann::json::array()},
                                 {"tables", nlohmann::json::array()}};
           for (const auto& t : rows) {
             doc["topics"].push_back({{"topic", t.topic},
                                      {"epoch", t.epoch},
                                      {"head", t.head},
                                      {"purged_through", t.purged_through},
                                      {"retained_events", t.events},
                                      {"live_docs", t.live_docs},
                                      {"tombstones", t.tombstones},
                                      {"oldest_event_age_seconds", t.oldest_age_s},
                                      {"payload_mode", t.mode},
                                      {"max_payload_bytes", t.max_payload_bytes},
                                      {"retention_max_age_seconds", t.max_age_s},
                                      {"retention_min_events", t.min_events},
                                      {"tombstone_retention_seconds", t.tombstone_s}});
           }
           for (const auto& [name, table, index] : sizes) {
             doc["tables"].push_back(
                 {{"table", "oasync." + name}, {"table_bytes", table}, {"index_bytes", index}});
           }
           fmt::print("{}\n", doc.dump(2));
         } else if (options->format == "prometheus") {
           const std::pair<const char*, std::int64_t TopicRow::*> metrics[] = {
               {"head", &TopicRow::head},
               {"purged_through", &TopicRow::purged_through},
               {"retained_events", &TopicRow::events},
               {"live_docs", &TopicRow::live_docs},
               {"tombstones", &TopicRow::tombstones},
               {"oldest_event_age_seconds", &TopicRow::oldest_age_s}};
           for (const auto& [name, member] : metrics) {
             fmt::print("# TYPE oasync_topic_{} gauge\n", name);
             for (const auto& t : rows) {
               fmt::print("oasync_topic_{}{{topic=\"{}\"}} {}\n", name, prom_escape(t.topic),
                          t.*member);
             }
           }
           fmt::print("# TYPE oasync_table_bytes gauge\n");
           for (const auto& [name, table, index] : sizes) {
             fmt::print("oasync_table_bytes{{table=\"oasync.{}\",kind=\"table\"}} {}\n", name,
                        table);
             fmt::print("oasync_table_bytes{{table=\"oasync.{}\",kind=\"indexes\"}} {}\n", name,
                        index);
           }
         } else {
           fmt::print("{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:<8} {:<36}\n", "TOPIC",
                      "HEAD", "PURGED", "EVENTS", "LIVE DOCS", "TOMBSTONE", "OLDEST", "MODE",
                      "EPOCH");
           for (const auto& t : rows) {
             fmt::print("{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}s {:<8} {:<36}\n", t.topic,
                        t.head, t.purged_through, t.events, t.live_docs, t.tombstones,
                        t.oldest_age_s, t.mode, t.epoch);
           }
           fmt::print("\n{:<34} {:>14} {:>14}\n", "TABLE", "TABLE BYTES", "INDEX BYTES");
           for (const auto& [name, table, index] : sizes) {
             fmt::print("{:<34} {:>14} {:>14}\n", "oasync." + name, table, index);
           }
         }
         return to_int(ExitCode::ok);
       }});
}

}  // namespace oasync::cli
