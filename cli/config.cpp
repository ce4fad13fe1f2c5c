#include "config.hpp"

#include <cstdlib>
#include <limits>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "oasync/error.hpp"
#include "yaml_util.hpp"

namespace oasync::cli {

namespace {

Config config_from(const YAML::Node& root, const std::string& origin) {
  Config config;
  if (root.IsNull()) return config;
  YamlContext ctx{origin};
  ctx.require_map(root, "the top level");
  for (const auto& item : root) {
    const std::string key = ctx.key(item);
    if (key == "database_url") {
      config.database_url = ctx.string(item.second, key);
    } else if (key == "sink") {
      ctx.require_map(item.second, key);
      for (const auto& s : item.second) {
        const std::string sub = ctx.key(s);
        if (sub == "max_batch_writes") {
          config.sink.max_batch_writes = ctx.integer(s.second, "sink.max_batch_writes", 1, 1000000);
        } else if (sub == "max_delay_ms") {
          config.sink.max_delay_ms =
              static_cast<std::uint32_t>(ctx.integer(s.second, "sink.max_delay_ms", 0, 60000));
        } else if (sub == "max_frame_bytes") {
          config.sink.max_frame_bytes =
              ctx.integer(s.second, "sink.max_frame_bytes", 1024, std::int64_t{1} << 31);
        } else {
          ctx.unknown(s.first, "sink." + sub);
        }
      }
    } else {
      ctx.unknown(item.first, key);
    }
  }
  return config;
}

}  // namespace

Config load_config(const std::string& path) {
  return config_from(load_yaml_file(path), path);
}

Config parse_config(std::string_view text, const std::string& origin) {
  return config_from(parse_yaml(text, origin), origin);
}

std::string resolve_database_url(const std::string& flag, const Config& config) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("OASYNC_DATABASE_URL"); env != nullptr && *env != '\0') {
    return env;
  }
  for (const char* name : {"PGHOST", "PGDATABASE", "PGSERVICE"}) {
    if (const char* env = std::getenv(name); env != nullptr && *env != '\0') return "";
  }
  return config.database_url;
}

std::int64_t parse_duration(const std::string& text, ZeroDuration zero) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string unit = text.substr(digits);
  std::int64_t scale = 0;
  if (unit == "s") scale = 1;
  if (unit == "m") scale = 60;
  if (unit == "h") scale = 3600;
  if (unit == "d") scale = 86400;
  if (unit == "w") scale = 7 * 86400;
  if (digits == 0 || digits > 12 || scale == 0) {
    throw Error(Code::invalid_argument,
                fmt::format("invalid duration \"{}\": use a whole number and a unit, like 90s, "
                            "15m, 72h or 7d",
                            text));
  }
  const std::int64_t value = std::stoll(text.substr(0, digits));
  if (value == 0 && zero == ZeroDuration::refused) {
    throw Error(Code::invalid_argument,
                fmt::format("invalid duration \"{}\": must be positive", text));
  }
  return value * scale;
}

}  // namespace oasync::cli
