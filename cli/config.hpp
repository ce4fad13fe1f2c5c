// Configuration of the `oasync` command: flags > environment > oasync.yaml.
//
// oasync.yaml (given with --config) may hold:
//   database_url: "postgresql://..."      # like OASYNC_DATABASE_URL
//   sink:
//     max_batch_writes: 2000              # group-commit bound, in writes
//     max_delay_ms: 0                     # how long a frame may wait for company
//     max_frame_bytes: 16777216           # largest frame or NDJSON line
//   serve:                                # oasync serve (see serve.hpp)
//     listen: 127.0.0.1
//     port: 4437
//     cors_origins: ["https://app.example"]
//     auth: {algorithm: RS256, key_file: /etc/oasync/jwt.pub, issuer: ..., audience: ...,
//            query_parameter: access_token, leeway_seconds: 30}
//     tenancy: {scope_format: "org:{org_id}", unscoped: false}
//     limits: {max_connections: 10000, long_poll_seconds: 20, sse_seconds: 60, ...}
// Unknown keys and wrong types are errors reported as "FILE:LINE: ...".
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "oasync/serve/serve.hpp"

namespace oasync::cli {

struct SinkConfig {
  // Most writes one group-commit transaction takes.
  std::size_t max_batch_writes = 2000;
  // How long the first frame of a group waits for more frames (0: only frames
  // already waiting join).
  std::uint32_t max_delay_ms = 0;
  // Largest frame (stdio) or line (NDJSON) accepted, in bytes.
  std::size_t max_frame_bytes = 16u << 20;
};

struct Config {
  // libpq connection string or URI; empty means libpq's defaults (PG* vars).
  std::string database_url;
  SinkConfig sink;
  serve::ServeConfig serve;
};

// Reads an oasync.yaml. Throws oasync::Error "PATH:LINE: message" on a bad
// key, value or syntax.
Config load_config(const std::string& path);

// Parses oasync.yaml text; errors read "ORIGIN:LINE: message".
Config parse_config(std::string_view text, const std::string& origin);

// The connection string to use: the --database-url flag, else
// OASYNC_DATABASE_URL, else (when PGHOST, PGDATABASE or PGSERVICE is set)
// libpq's environment, else the config file's database_url.
std::string resolve_database_url(const std::string& flag, const Config& config);

// Whether a duration may be zero ("0s").
enum class ZeroDuration { refused, allowed };

// Parses "90s", "15m", "72h", "7d" (also "1w") into seconds. Throws
// oasync::Error (invalid_argument) quoting the text on anything else.
std::int64_t parse_duration(const std::string& text, ZeroDuration zero = ZeroDuration::refused);

}  // namespace oasync::cli
