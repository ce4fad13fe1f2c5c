// oasync purge [--topic T]... [--older-than DURATION] [--keep-last N] [--dry-run] ...
#include <unistd.h>

#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/error.hpp"
#include "oasync/purge.hpp"

namespace oasync::cli {

void add_purge_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  struct Options {
    std::vector<std::string> topics;
    std::string older_than;
    std::int64_t keep_last = -1;
    bool dry_run = false;
    std::int64_t batch_size = 5000;
    bool force = false;
    std::int64_t consumer_days = 7;
  };
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("purge", "Remove old journal events by retention policy");
  sub->footer(
      "\nDeletes only a prefix of each topic's journal, never a hole: the cutoff is the largest\n"
      "watermark such that it and every earlier event are older than the age limit and at\n"
      "least keep-last events remain. Each batch advances purged_through in its own\n"
      "transaction, so stale-cursor detection stays exact. Defaults come from each topic's\n"
      "retention policy (schema/topics.yaml); flags override them for this run. Old tombstones\n"
      "go too, and the delta-resync floor follows them. Refuses to cross the position of a\n"
      "consumer seen within --consumer-window-days unless --force. Exits 1 when it refused.");
  sub->add_option("--topic", o->topics, "Only this topic (repeatable); default: all");
  sub->add_option("--older-than", o->older_than,
                  "Age limit for this run: 90s, 72h, 7d, ...; 0s: everything that keep-last "
                  "allows");
  sub->add_option("--keep-last", o->keep_last, "Keep at least N newest events")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--dry-run", o->dry_run, "Print what would happen; change nothing");
  sub->add_option("--batch-size", o->batch_size, "Events deleted per transaction (default 5000)")
      ->check(CLI::Range(1, 1000000));
  sub->add_flag("--force", o->force, "Cross the positions of recently seen consumers");
  sub->add_option("--consumer-window-days", o->consumer_days,
                  "Protect consumers seen within this many days (default 7)")
      ->check(CLI::NonNegativeNumber);
  out.push_back(
      {sub, [&ctx, o]() {
         PurgeOptions options;
         options.topics = o->topics;
         if (!o->older_than.empty())
           options.older_than_seconds = parse_duration(o->older_than, ZeroDuration::allowed);
         if (o->keep_last >= 0) options.keep_last = o->keep_last;
         options.dry_run = o->dry_run ? DryRun::yes : DryRun::no;
         options.batch_size = o->batch_size;
         options.force = o->force ? Force::yes : Force::no;
         options.consumer_window_seconds = o->consumer_days * 86400;
         auto conn = ctx.connect();
         const bool tty = isatty(STDERR_FILENO) != 0;
         const auto results = purge(
             *conn, options, [&](const std::string& topic, std::int64_t done, std::int64_t total) {
               if (tty) fmt::print(stderr, "\rpurging {}: {}/{} events", topic, done, total);
               if (tty && done == total) fmt::print(stderr, "\n");
             });
         const char* verb = o->dry_run ? "would delete" : "deleted";
         bool refused = false;
         for (const TopicPurge& r : results) {
           for (const BlockingConsumer& c : r.blocking) {
             fmt::print("{}: consumer \"{}\" at watermark {} (last seen {}) would be crossed\n",
                        r.topic, c.name, c.watermark, c.last_seen);
           }
           if (r.refused) {
             refused = true;
             fmt::print(
                 "{}: refused: the new floor {} would cross {} recent consumer{}; nothing deleted "
                 "(use --force to purge anyway)\n",
                 r.topic, r.cutoff, r.blocking.size(), r.blocking.size() == 1 ? "" : "s");
             continue;
           }
           fmt::print("{}: {} {} events, floor {} -> {}, head {}; {} {} tombstones{}\n", r.topic,
                      verb, r.events_deleted, r.old_floor, r.new_floor, r.head,
                      o->dry_run ? "would remove" : "removed", r.tombstones_removed,
                      r.note.empty() ? "" : " (" + r.note + ")");
         }
         return to_int(refused ? ExitCode::error : ExitCode::ok);
       }});
}

}  // namespace oasync::cli
