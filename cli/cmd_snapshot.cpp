// oasync snapshot TOPIC [--scope S] [--since W] [--format ndjson|proto]
#include <csignal>

#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/error.hpp"
#include "oasync/reader.hpp"
#include "output.hpp"

namespace oasync::cli {

void add_snapshot_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  struct SnapshotOptions {
    std::string topic;
    std::string scope;
    std::int64_t since = -1;
    std::string format = "ndjson";
    int page_size = 1000;
  };
  auto s = std::make_shared<SnapshotOptions>();
  CLI::App* snapshot =
      app.add_subcommand("snapshot", "Print every live doc of a topic, consistently");
  snapshot->footer(
      "\nReads in one REPEATABLE READ snapshot: first a header with the topic's epoch and head,\n"
      "then one line per doc. `snapshot` followed by `tail --after HEAD --epoch EPOCH` misses\n"
      "nothing and repeats nothing, even under concurrent writes: the way out of a stale cursor.\n"
      "--since W (delta resync) prints only docs changed after W, tombstones included; it exits\n"
      "3 when tombstones it would need were already purged. --scope S prints S's docs only;\n"
      "--scope '' prints the unscoped docs (scope ''), without --scope every scope's.");
  snapshot->add_option("TOPIC", s->topic, "Topic")->required();
  CLI::Option* scope_option = snapshot->add_option(
      "--scope", s->scope, "Only docs of this scope (tenant); '' is the unscoped docs");
  snapshot->add_option("--since", s->since, "Only docs changed after this watermark")
      ->check(CLI::NonNegativeNumber);
  snapshot->add_option("--format", s->format, "ndjson or proto (length-delimited ServerMessage)")
      ->check(CLI::IsMember({"ndjson", "proto"}));
  snapshot->add_option("--page-size", s->page_size, "Docs read per query")
      ->check(CLI::Range(1, 100000));
  out.push_back(
      {snapshot, [&ctx, s, scope_option]() {
         std::signal(SIGPIPE, SIG_IGN);
         auto conn = ctx.connect();
         Reader reader(*conn);
         Output output(parse_format(s->format));
         const auto since = s->since < 0 ? std::nullopt : std::optional<std::int64_t>(s->since);
         // --scope '' is the unscoped docs, as in oasync.snapshot_docs; no
         // --scope at all is every scope.
         const auto scope =
             scope_option->count() ? std::optional<std::string>(s->scope) : std::nullopt;
         const StaleReason reason = reader.snapshot(
             s->topic, scope, since, s->page_size,
             [&](const Reader::SnapshotHeader& h) { output.snapshot_header(h); },
             [&](const Doc& d) {
               output.doc(d);
               if (output.buffered() > (1 << 20)) output.flush();
             });
         if (reason == StaleReason::unknown_topic) {
           throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", s->topic));
         }
         if (reason != StaleReason::none) {
           ResumeCheck check = reader.check(s->topic, "", s->since);
           check.reason = reason;
           output.stale(check, "", s->since);
           output.flush();
           fmt::print(stderr,
                      "oasync: delta resync of \"{}\" since {} is no longer possible "
                      "(tombstones were purged); take a full snapshot\n",
                      s->topic, s->since);
           return to_int(ExitCode::resync_required);
         }
         return to_int(ExitCode::ok);
       }});
}

}  // namespace oasync::cli
