#include "config.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "oasync/error.hpp"
#include "yaml_util.hpp"

namespace oasync::cli {

namespace {

// The serve: section (serve.hpp names every key).
void read_serve(const YamlContext& ctx, const YAML::Node& node, serve::ServeConfig& out) {
  ctx.require_map(node, "serve");
  for (const auto& item : node) {
    const std::string key = ctx.key(item);
    const YAML::Node& v = item.second;
    if (key == "listen") {
      out.listen = ctx.string(v, "serve.listen");
    } else if (key == "port") {
      out.port = static_cast<std::uint16_t>(ctx.integer(v, "serve.port", 0, 65535));
    } else if (key == "cors_origins") {
      out.cors_origins = ctx.strings(v, "serve.cors_origins");
    } else if (key == "trusted_proxies") {
      out.trusted_proxies = ctx.strings(v, "serve.trusted_proxies");
      for (std::size_t i = 0; i < out.trusted_proxies.size(); ++i) {
        const std::string& address = out.trusted_proxies[i];
        unsigned char bytes[sizeof(in6_addr)];
        if (inet_pton(AF_INET, address.c_str(), bytes) != 1 &&
            inet_pton(AF_INET6, address.c_str(), bytes) != 1) {
          ctx.fail(v[i], fmt::format("serve.trusted_proxies: \"{}\" is not an IP address",
                                     out.trusted_proxies[i]));
        }
      }
    } else if (key == "auth") {
      ctx.require_map(v, "serve.auth");
      for (const auto& a : v) {
        const std::string sub = ctx.key(a);
        const std::string name = "serve.auth." + sub;
        if (sub == "algorithm") {
          out.auth.algorithm = ctx.string(a.second, name);
          if (out.auth.algorithm != "HS256" && out.auth.algorithm != "RS256" &&
              out.auth.algorithm != "ES256") {
            ctx.fail(a.second, fmt::format("\"{}\" must be HS256, RS256 or ES256, found \"{}\"",
                                           name, out.auth.algorithm));
          }
        } else if (sub == "key_file") {
          out.auth.key_file = ctx.string(a.second, name);
        } else if (sub == "issuer") {
          out.auth.issuer = ctx.string(a.second, name);
        } else if (sub == "audience") {
          out.auth.audience = ctx.string(a.second, name);
        } else if (sub == "query_parameter") {
          out.auth.query_parameter = ctx.string(a.second, name);
        } else if (sub == "leeway_seconds") {
          out.auth.leeway_seconds = ctx.integer(a.second, name, 0, 3600);
        } else {
          ctx.unknown(a.first, name);
        }
      }
    } else if (key == "tenancy") {
      ctx.require_map(v, "serve.tenancy");
      for (const auto& t : v) {
        const std::string sub = ctx.key(t);
        if (sub == "scope_format") {
          out.tenancy.scope_format = ctx.string(t.second, "serve.tenancy.scope_format");
          if (out.tenancy.scope_format.find("{org_id}") == std::string::npos) {
            ctx.fail(t.second, "\"serve.tenancy.scope_format\" must contain {org_id}");
          }
        } else if (sub == "unscoped") {
          out.tenancy.unscoped = ctx.boolean(t.second, "serve.tenancy.unscoped");
        } else {
          ctx.unknown(t.first, "serve.tenancy." + sub);
        }
      }
    } else if (key == "limits") {
      ctx.require_map(v, "serve.limits");
      serve::LimitsConfig& l = out.limits;
      const std::pair<const char*, std::int64_t*> fields[] = {
          {"max_connections", &l.max_connections},
          {"max_connections_per_client", &l.max_connections_per_client},
          {"request_head_seconds", &l.request_head_seconds},
          {"max_request_bytes", &l.max_request_bytes},
          {"idle_timeout_seconds", &l.idle_timeout_seconds},
          {"send_timeout_seconds", &l.send_timeout_seconds},
          {"long_poll_seconds", &l.long_poll_seconds},
          {"sse_seconds", &l.sse_seconds},
          {"page_events", &l.page_events},
          {"page_bytes", &l.page_bytes},
          {"response_bytes", &l.response_bytes},
          {"budget_wait_ms", &l.budget_wait_ms},
          {"live_buffer_bytes", &l.live_buffer_bytes},
          {"snapshot_page_docs", &l.snapshot_page_docs},
          {"max_wait_for_ms", &l.max_wait_for_ms},
          {"live_buffer_events", &l.live_buffer_events},
          {"db_pool", &l.db_pool},
          {"db_queue", &l.db_queue},
          {"revocation_poll_ms", &l.revocation_poll_ms},
          {"poll_ms", &l.poll_ms},
          {"wake_coalesce_ms", &l.wake_coalesce_ms},
          {"drain_seconds", &l.drain_seconds},
          {"channel_idle_seconds", &l.channel_idle_seconds},
          {"channel_heartbeat_seconds", &l.channel_heartbeat_seconds},
          {"socket_queue_bytes", &l.socket_queue_bytes},
          {"max_channels_per_socket", &l.max_channels_per_socket},
          {"channel_payload_bytes", &l.channel_payload_bytes}};
      for (const auto& f : v) {
        const std::string sub = ctx.key(f);
        const auto field = std::find_if(std::begin(fields), std::end(fields),
                                        [&](const auto& p) { return sub == p.first; });
        if (field == std::end(fields)) ctx.unknown(f.first, "serve.limits." + sub);
        *field->second = ctx.integer(f.second, "serve.limits." + sub, 1, 1000000000);
      }
    } else {
      ctx.unknown(item.first, "serve." + key);
    }
  }
}

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
    } else if (key == "serve") {
      read_serve(ctx, item.second, config.serve);
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
