// oasync verify [TOPIC]... [--format table|json] [--sample N] [--since W]
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/error.hpp"
#include "oasync/verify.hpp"

namespace oasync::cli {

void add_verify_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  struct Options {
    std::vector<std::string> topics;
    std::string format = "table";
    std::int64_t sample = 0;
    std::int64_t since = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* sub =
      app.add_subcommand("verify", "Check that the journal and docs keep every promise");
  sub->footer(
      "\nChecks per topic, in one consistent snapshot and in pages (flat memory):\n"
      "  watermarks  retained events are exactly purged_through+1 .. head\n"
      "  versions    per doc, versions rise by exactly 1; (doc_key, doc_version) unique\n"
      "  docs        each doc row agrees with its latest retained event\n"
      "  hashes      payloads are canonical JSON and payload_hash is their SHA-256\n"
      "  prefixes    doc keys carry the topic's prefix\n"
      "  topics      nothing belongs to an unregistered topic (when no TOPIC is given)\n"
      "Prints one line per problem (topic, place, expected, found), then a summary.\n"
      "Exits 0 when clean, 1 when a problem was found, 4 when it could not run to the end.");
  sub->add_option("TOPIC", o->topics, "Topics to check (default: all)");
  // "text" is the name this format had before 0.2; still accepted.
  sub->add_option("--format", o->format, "table or json")
      ->check(CLI::IsMember({"table", "json", "text"}));
  sub->add_option("--sample", o->sample, "Recompute N random hashes per topic instead of all")
      ->check(CLI::PositiveNumber);
  sub->add_option("--since", o->since, "Check only events after watermark W (after an incident)")
      ->check(CLI::NonNegativeNumber);
  out.push_back({sub, [&ctx, o]() {
                   VerifyOptions options;
                   options.topics = o->topics;
                   if (o->sample > 0) options.sample = o->sample;
                   options.since = o->since;
                   const bool json_out = o->format == "json";
                   nlohmann::ordered_json problems = nlohmann::ordered_json::array();
                   constexpr std::size_t kMaxJsonProblems = 10000;
                   VerifyReport report;
                   try {
                     auto conn = ctx.connect();
                     report = verify(*conn, options, [&](const Problem& p) {
                       if (!json_out) {
                         fmt::print("{}: {}: {}: expected {}, found {}\n", p.topic, p.where,
                                    p.check, p.expected, p.found);
                       } else if (problems.size() < kMaxJsonProblems) {
                         problems.push_back({{"topic", p.topic},
                                             {"check", p.check},
                                             {"where", p.where},
                                             {"expected", p.expected},
                                             {"found", p.found}});
                       }
                     });
                   } catch (const Error& e) {
                     throw ExitError(ExitCode::incomplete,
                                     e.with_context("verify could not run to the end"));
                   }
                   if (json_out) {
                     nlohmann::ordered_json checks = nlohmann::ordered_json::object();
                     for (const auto& [name, c] : report.checks) {
                       checks[name] = {{"checked", c.checked}, {"problems", c.problems}};
                     }
                     fmt::print("{}\n", nlohmann::ordered_json{{"clean", report.clean()},
                                                               {"topics", report.topics},
                                                               {"seconds", report.seconds},
                                                               {"checks", checks},
                                                               {"problems", problems}}
                                            .dump(2));
                   } else {
                     fmt::print("verify: {} topic{} in {:.2f} s: {}\n", report.topics,
                                report.topics == 1 ? "" : "s", report.seconds,
                                report.clean() ? "clean" : "PROBLEMS FOUND");
                     for (const auto& [name, c] : report.checks) {
                       fmt::print("  {:<11} {:>12} checked {:>8} problem{}\n", name, c.checked,
                                  c.problems, c.problems == 1 ? "" : "s");
                     }
                   }
                   return to_int(report.clean() ? ExitCode::ok : ExitCode::error);
                 }});
}

}  // namespace oasync::cli
