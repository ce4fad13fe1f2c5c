// oasync consumers [--format table|json]
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/consumers.hpp"

namespace oasync::cli {

void add_consumers_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  auto format = std::make_shared<std::string>("table");
  CLI::App* sub = app.add_subcommand("consumers", "List consumer cursors and their lag");
  sub->footer(
      "\nConsumers record their position with `oasync tail --consumer NAME` (or\n"
      "oasync.ack_consumer from a delivery service). Lag is head - watermark; a consumer whose\n"
      "epoch or position no longer resumes is marked stale.");
  sub->add_option("--format", *format, "table or json")->check(CLI::IsMember({"table", "json"}));
  out.push_back({sub, [&ctx, format]() {
                   auto conn = ctx.connect();
                   const auto consumers = list_consumers(*conn);
                   if (*format == "json") {
                     nlohmann::ordered_json list = nlohmann::ordered_json::array();
                     for (const auto& c : consumers) {
                       list.push_back({{"name", c.name},
                                       {"topic", c.topic},
                                       {"epoch", c.position.epoch},
                                       {"watermark", c.position.watermark},
                                       {"head", c.head},
                                       {"lag", c.lag()},
                                       {"last_seen", c.last_seen},
                                       {"stale", !c.resumable}});
                     }
                     fmt::print("{}\n", list.dump(2));
                     return to_int(ExitCode::ok);
                   }
                   fmt::print("{:<24} {:<34} {:>12} {:>12} {:>10}  {:<32} {}\n", "CONSUMER",
                              "TOPIC", "WATERMARK", "HEAD", "LAG", "LAST SEEN", "STATE");
                   for (const auto& c : consumers) {
                     fmt::print("{:<24} {:<34} {:>12} {:>12} {:>10}  {:<32} {}\n", c.name, c.topic,
                                c.position.watermark, c.head, c.lag(), c.last_seen,
                                c.resumable ? "ok" : "stale");
                   }
                   return to_int(ExitCode::ok);
                 }});
}

}  // namespace oasync::cli
