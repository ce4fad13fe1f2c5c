#include "topics_file.hpp"

#include <fmt/format.h>

#include "config.hpp"
#include "oasync/error.hpp"
#include "yaml_util.hpp"

namespace oasync::cli {
namespace {

std::int64_t duration(const YamlContext& ctx, const YAML::Node& node, const std::string& key) {
  const std::string text = ctx.string(node, key);
  try {
    return parse_duration(text);
  } catch (const Error& e) {
    ctx.fail(node, fmt::format("\"{}\": {}", key, e.what()));
  }
}

TopicSpec parse_topic(const YamlContext& ctx, const YAML::Node& node) {
  ctx.require_map(node, "a topic");
  TopicSpec spec;
  bool has_name = false;
  bool has_prefix = false;
  for (const auto& item : node) {
    const std::string key = ctx.key(item);
    const YAML::Node& value = item.second;
    if (key == "name") {
      spec.name = ctx.string(value, key);
      has_name = true;
    } else if (key == "doc_key_prefix") {
      spec.doc_key_prefix = ctx.string(value, key);
      has_prefix = true;
    } else if (key == "payload_mode") {
      const std::string mode = ctx.string(value, key);
      if (mode == "inline") {
        spec.payload_mode = PayloadMode::inline_payload;
      } else if (mode == "pointer") {
        spec.payload_mode = PayloadMode::pointer;
      } else {
        ctx.fail(value,
                 fmt::format("\"payload_mode\" must be inline or pointer, found \"{}\"", mode));
      }
    } else if (key == "max_payload_bytes") {
      spec.max_payload_bytes = ctx.integer(value, key, 1, 1 << 30);
    } else if (key == "retention") {
      ctx.require_map(value, key);
      for (const auto& r : value) {
        const std::string sub = ctx.key(r);
        if (sub == "max_age") {
          spec.retention_max_age_seconds = duration(ctx, r.second, "retention.max_age");
        } else if (sub == "min_events") {
          spec.retention_min_events =
              ctx.integer(r.second, "retention.min_events", 0, std::int64_t{1} << 62);
        } else if (sub == "tombstones") {
          spec.tombstone_retention_seconds = duration(ctx, r.second, "retention.tombstones");
        } else {
          ctx.unknown(r.first, "retention." + sub);
        }
      }
    } else {
      ctx.unknown(item.first, key);
    }
  }
  if (!has_name) ctx.fail(node, "a topic needs \"name\"");
  if (!has_prefix) ctx.fail(node, fmt::format("topic \"{}\" needs \"doc_key_prefix\"", spec.name));
  try {
    validate(spec);
  } catch (const Error& e) {
    ctx.fail(node, e.what());
  }
  return spec;
}

std::vector<TopicSpec> topics_from(const YAML::Node& root, const std::string& origin) {
  const YamlContext ctx{origin};
  ctx.require_map(root, "the top level");
  std::vector<TopicSpec> specs;
  bool has_topics = false;
  for (const auto& item : root) {
    const std::string key = ctx.key(item);
    if (key != "topics") ctx.unknown(item.first, key);
    has_topics = true;
    if (item.second.IsNull()) continue;
    if (!item.second.IsSequence()) ctx.fail(item.second, "\"topics\" must be a list");
    for (const auto& topic : item.second) specs.push_back(parse_topic(ctx, topic));
  }
  if (!has_topics) ctx.fail(root, "the file needs a \"topics\" list");
  return specs;
}

}  // namespace

std::vector<TopicSpec> load_topics_file(const std::string& path) {
  return topics_from(load_yaml_file(path), path);
}

std::vector<TopicSpec> parse_topics(std::string_view text, const std::string& origin) {
  return topics_from(parse_yaml(text, origin), origin);
}

}  // namespace oasync::cli
