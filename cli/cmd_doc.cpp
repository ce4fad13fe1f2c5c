// oasync doc get KEY [--topic T] [--format json|proto]
#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/error.hpp"
#include "oasync/reader.hpp"
#include "output.hpp"

namespace oasync::cli {

void add_doc_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  struct Options {
    std::string key;
    std::string topic;
    std::string format = "json";
  };
  auto o = std::make_shared<Options>();
  CLI::App* doc = app.add_subcommand("doc", "Read docs");
  doc->require_subcommand(1);
  CLI::App* get = doc->add_subcommand("get", "Print the current doc with this key");
  get->footer(
      "\nPrints topic, scope, version, hash, tombstone flag and last watermark, read through\n"
      "oasync.get_doc (the function a delivery service calls too). An unknown key exits 1.");
  get->add_option("KEY", o->key, "Doc key")->required();
  get->add_option("--topic", o->topic, "The topic, when the key exists in several");
  get->add_option("--format", o->format, "json or proto (length-delimited ServerMessage)")
      ->check(CLI::IsMember({"json", "proto"}));
  out.push_back(
      {get, [&ctx, o]() {
         auto conn = ctx.connect();
         Reader reader(*conn);
         const auto topic = o->topic.empty() ? std::nullopt : std::optional<std::string>(o->topic);
         const std::vector<Reader::FoundDoc> found = reader.find_doc(o->key, topic);
         if (found.empty()) {
           throw Error(Code::not_found, fmt::format("no doc with key \"{}\"{}", o->key,
                                                    topic ? " in topic \"" + *topic + "\"" : ""));
         }
         if (found.size() > 1) {
           throw Error(Code::invalid_argument,
                       fmt::format("doc key \"{}\" exists in topics \"{}\" and \"{}\"; "
                                   "pass --topic",
                                   o->key, found[0].doc.topic, found[1].doc.topic));
         }
         Output output(parse_format(o->format));
         output.doc(found.front().doc);
         return to_int(ExitCode::ok);
       }});
}

}  // namespace oasync::cli
