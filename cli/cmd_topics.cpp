// oasync topics apply FILE [--dry-run] | topics list [--format table|json]
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/topics.hpp"
#include "topics_file.hpp"

namespace oasync::cli {
namespace {

std::string seconds_text(const std::optional<std::int64_t>& seconds) {
  if (!seconds) return "forever";
  const std::int64_t s = *seconds;
  if (s % 86400 == 0) return fmt::format("{}d", s / 86400);
  if (s % 3600 == 0) return fmt::format("{}h", s / 3600);
  if (s % 60 == 0) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

void print_names(const char* label, const std::vector<std::string>& names) {
  for (const auto& name : names) fmt::print("{:<10} {}\n", label, name);
}

}  // namespace

void add_topics_commands(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  CLI::App* topics = app.add_subcommand("topics", "Manage the topic registry");
  topics->require_subcommand(1);

  struct ApplyOptions {
    std::string file;
    bool dry_run = false;
  };
  auto apply = std::make_shared<ApplyOptions>();
  CLI::App* apply_cmd =
      topics->add_subcommand("apply", "Make the registry equal to a topic catalog file");
  apply_cmd->footer(
      "\nCreates, updates and removes topics so that the registry equals FILE\n"
      "(schema/topics.yaml). Idempotent. Removing a topic that still has docs or events is\n"
      "refused and changes nothing.");
  apply_cmd->add_option("FILE", apply->file, "Topic catalog (YAML)")->required();
  apply_cmd->add_flag("--dry-run", apply->dry_run, "Print what would change; change nothing");
  out.push_back({apply_cmd, [&ctx, apply]() {
                   const auto specs = load_topics_file(apply->file);
                   auto conn = ctx.connect();
                   const DryRun dry = apply->dry_run ? DryRun::yes : DryRun::no;
                   const TopicsReport report = apply_topics(*conn, specs, dry);
                   print_names(dry == DryRun::yes ? "would create" : "created", report.created);
                   print_names(dry == DryRun::yes ? "would update" : "updated", report.updated);
                   print_names(dry == DryRun::yes ? "would remove" : "removed", report.removed);
                   fmt::print("{} created, {} updated, {} removed, {} unchanged\n",
                              report.created.size(), report.updated.size(), report.removed.size(),
                              report.unchanged.size());
                   return to_int(ExitCode::ok);
                 }});

  auto reset_topic = std::make_shared<std::string>();
  CLI::App* reset_cmd = topics->add_subcommand(
      "reset-epoch", "Give a topic a new epoch: every cursor of it goes stale");
  reset_cmd->footer(
      "\nUse after restoring the database from a backup, or when a topic's history was\n"
      "rewritten: clients holding a cursor get epoch_changed and resync with a snapshot.");
  reset_cmd->add_option("TOPIC", *reset_topic, "Topic")->required();
  out.push_back({reset_cmd, [&ctx, reset_topic]() {
                   auto conn = ctx.connect();
                   const std::string epoch = reset_epoch(*conn, *reset_topic);
                   fmt::print("{}: new epoch {}; every existing cursor of it is now stale\n",
                              *reset_topic, epoch);
                   return to_int(ExitCode::ok);
                 }});

  auto list_format = std::make_shared<std::string>("table");
  CLI::App* list_cmd = topics->add_subcommand("list", "Show the registered topics");
  list_cmd->add_option("--format", *list_format, "table or json")
      ->check(CLI::IsMember({"table", "json"}));
  out.push_back(
      {list_cmd, [&ctx, list_format]() {
         auto conn = ctx.connect();
         const auto topics = list_topics(*conn);
         if (*list_format == "json") {
           nlohmann::json rows = nlohmann::json::array();
           for (const auto& t : topics) {
             rows.push_back(
                 {{"topic", t.spec.name},
                  {"doc_key_prefix", t.spec.doc_key_prefix},
                  {"payload_mode", to_string(t.spec.payload_mode)},
                  {"max_payload_bytes", t.spec.max_payload_bytes},
                  {"retention_max_age", seconds_text(t.spec.retention_max_age_seconds)},
                  {"retention_min_events", t.spec.retention_min_events},
                  {"tombstone_retention", seconds_text(t.spec.tombstone_retention_seconds)},
                  {"epoch", t.epoch},
                  {"head", t.head},
                  {"purged_through", t.purged_through}});
           }
           fmt::print("{}\n", rows.dump(2));
           return to_int(ExitCode::ok);
         }
         fmt::print("{:<34} {:<24} {:<8} {:>9} {:>8} {:>10} {:>12} {:>14}\n", "TOPIC", "PREFIX",
                    "MODE", "MAX BYTES", "MAX AGE", "MIN EVENTS", "HEAD", "PURGED THRU");
         for (const auto& t : topics) {
           fmt::print("{:<34} {:<24} {:<8} {:>9} {:>8} {:>10} {:>12} {:>14}\n", t.spec.name,
                      t.spec.doc_key_prefix, to_string(t.spec.payload_mode),
                      t.spec.max_payload_bytes, seconds_text(t.spec.retention_max_age_seconds),
                      t.spec.retention_min_events, t.head, t.purged_through);
         }
         return to_int(ExitCode::ok);
       }});
}

}  // namespace oasync::cli
