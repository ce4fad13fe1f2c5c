// oasync inspect [TOPIC] [--format table|json|prometheus]
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/inspect.hpp"

namespace oasync::cli {
namespace {

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

void print_json(const Inspection& inspection) {
  nlohmann::json doc = {{"topics", nlohmann::json::array()}, {"tables", nlohmann::json::array()}};
  for (const auto& t : inspection.topics) {
    const TopicSpec& spec = t.state.spec;
    doc["topics"].push_back(
        {{"topic", spec.name},
         {"epoch", t.state.epoch},
         {"head", t.state.head},
         {"purged_through", t.state.purged_through},
         {"retained_events", t.retained_events},
         {"live_docs", t.live_docs},
         {"tombstones", t.tombstones},
         {"oldest_event_age_seconds", t.oldest_event_age_seconds},
         {"payload_mode", to_string(spec.payload_mode)},
         {"max_payload_bytes", spec.max_payload_bytes},
         {"retention_max_age_seconds", spec.retention_max_age_seconds.value_or(0)},
         {"retention_min_events", spec.retention_min_events},
         {"tombstone_retention_seconds", spec.tombstone_retention_seconds.value_or(0)}});
  }
  for (const auto& s : inspection.tables) {
    doc["tables"].push_back(
        {{"table", s.table}, {"table_bytes", s.table_bytes}, {"index_bytes", s.index_bytes}});
  }
  fmt::print("{}\n", doc.dump(2));
}

void print_prometheus(const Inspection& inspection) {
  const std::pair<const char*, std::int64_t (*)(const TopicStats&)> metrics[] = {
      {"head", [](const TopicStats& t) { return t.state.head; }},
      {"purged_through", [](const TopicStats& t) { return t.state.purged_through; }},
      {"retained_events", [](const TopicStats& t) { return t.retained_events; }},
      {"live_docs", [](const TopicStats& t) { return t.live_docs; }},
      {"tombstones", [](const TopicStats& t) { return t.tombstones; }},
      {"oldest_event_age_seconds", [](const TopicStats& t) { return t.oldest_event_age_seconds; }},
  };
  for (const auto& [name, value] : metrics) {
    fmt::print("# TYPE oasync_topic_{} gauge\n", name);
    for (const auto& t : inspection.topics) {
      fmt::print("oasync_topic_{}{{topic=\"{}\"}} {}\n", name, prom_escape(t.state.spec.name),
                 value(t));
    }
  }
  fmt::print("# TYPE oasync_table_bytes gauge\n");
  for (const auto& s : inspection.tables) {
    fmt::print("oasync_table_bytes{{table=\"{}\",kind=\"table\"}} {}\n", s.table, s.table_bytes);
    fmt::print("oasync_table_bytes{{table=\"{}\",kind=\"indexes\"}} {}\n", s.table, s.index_bytes);
  }
}

void print_table(const Inspection& inspection) {
  fmt::print("{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:<8} {:<36}\n", "TOPIC", "HEAD",
             "PURGED", "EVENTS", "LIVE DOCS", "TOMBSTONE", "OLDEST", "MODE", "EPOCH");
  for (const auto& t : inspection.topics) {
    fmt::print("{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}s {:<8} {:<36}\n", t.state.spec.name,
               t.state.head, t.state.purged_through, t.retained_events, t.live_docs, t.tombstones,
               t.oldest_event_age_seconds, to_string(t.state.spec.payload_mode), t.state.epoch);
  }
  fmt::print("\n{:<34} {:>14} {:>14}\n", "TABLE", "TABLE BYTES", "INDEX BYTES");
  for (const auto& s : inspection.tables) {
    fmt::print("{:<34} {:>14} {:>14}\n", s.table, s.table_bytes, s.index_bytes);
  }
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
  out.push_back({sub, [&ctx, options]() {
                   auto conn = ctx.connect();
                   const Inspection inspection = inspect(
                       *conn, options->topic.empty() ? std::nullopt
                                                     : std::optional<std::string>(options->topic));
                   if (options->format == "json") {
                     print_json(inspection);
                   } else if (options->format == "prometheus") {
                     print_prometheus(inspection);
                   } else {
                     print_table(inspection);
                   }
                   return to_int(ExitCode::ok);
                 }});
}

}  // namespace oasync::cli
