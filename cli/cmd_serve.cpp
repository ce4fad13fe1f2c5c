// oasync serve [--listen HOST] [--port N] [--auth-algorithm ALG] [--auth-key-file FILE]
//              [--cors-origin ORIGIN]... [--unscoped]
#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "oasync/serve/serve.hpp"

namespace oasync::cli {

void add_serve_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  struct Flags {
    std::optional<std::string> listen;
    std::optional<int> port;
    std::optional<std::string> algorithm;
    std::optional<std::string> key_file;
    std::vector<std::string> cors_origins;
    bool unscoped = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "serve",
      "Serve every topic as a Durable Stream of State Protocol messages (HTTP), and over the "
      "sync:v1 WebSocket channel (Phoenix Channels)");
  sub->footer(
      "\nGET /v1/topics/TOPIC?offset=-1|now|OFFSET[&live=long-poll|sse][&on_stale=reset]\n"
      "    [&wait_for=W][&versions=true]   a topic's stream: a snapshot (offset -1), then its\n"
      "                         journal; a catch-up has an ETag (If-None-Match: 304)\n"
      "HEAD /v1/topics/TOPIC   its Stream-Next-Offset\n"
      "GET /sync/v1/doc/KEY[?topic=T]   one doc, and the offset to follow it from\n"
      "GET /sync/v1/socket/websocket?vsn=2.0.0[&encoding=json]   the sync:v1 channel: a\n"
      "                         WebSocket speaking Phoenix Channels V2 (the phoenix npm\n"
      "                         package), one channel sync:v1:TOPIC per topic, protobuf\n"
      "                         pushes (sync.proto); the token in phoenix's authToken\n"
      "GET /healthz, /metrics  (Prometheus text)\n\n"
      "Every stream and doc request needs a JWT (Authorization: Bearer, or the\n"
      "access_token query parameter), signed with the configured algorithm: its scopes claim\n"
      "lists the topics it may read, its org_id names the tenant whose scope it sees. A\n"
      "stale offset answers 410 (or, with on_stale=reset, a reset and a fresh snapshot).\n"
      "Until it has read the revoked sessions once, every token gets 503 (Retry-After).\n"
      "Other settings live under serve: in oasync.yaml (see README, \"oasync serve\"):\n"
      "trusted_proxies, cors_origins, and under limits: connections (max_connections,\n"
      "max_connections_per_client, request_head_seconds, idle_timeout_seconds), memory\n"
      "(page_events, page_bytes, response_bytes, budget_wait_ms, live_buffer_bytes), the\n"
      "channel (channel_idle_seconds, channel_heartbeat_seconds, socket_queue_bytes,\n"
      "max_channels_per_socket, channel_payload_bytes), ...\n"
      "Stops on SIGINT or SIGTERM, after the open responses drain.");
  sub->add_option("--listen", f->listen, "Address to listen on (default 127.0.0.1)");
  sub->add_option("--port", f->port, "Port (default 4437; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  sub->add_option("--auth-algorithm", f->algorithm, "HS256, RS256 or ES256 (default HS256)")
      ->check(CLI::IsMember({"HS256", "RS256", "ES256"}));
  sub->add_option("--auth-key-file", f->key_file,
                  "HS256: the shared secret's file; RS256, ES256: a PEM public key");
  sub->add_option("--cors-origin", f->cors_origins, "A browser origin to allow (repeatable; *)");
  sub->add_flag("--unscoped", f->unscoped, "Tenants also read the unscoped docs (scope \"\")");
  out.push_back({sub, [&ctx, f]() {
                   serve::ServeConfig config = ctx.config.serve;
                   if (f->listen) config.listen = *f->listen;
                   if (f->port) config.port = static_cast<std::uint16_t>(*f->port);
                   if (f->algorithm) config.auth.algorithm = *f->algorithm;
                   if (f->key_file) config.auth.key_file = *f->key_file;
                   if (!f->cors_origins.empty()) config.cors_origins = f->cors_origins;
                   if (f->unscoped) config.tenancy.unscoped = true;
                   if (config.auth.key_file.empty()) {
                     throw Error(Code::invalid_argument,
                                 "oasync serve needs a key: --auth-key-file FILE (or "
                                 "serve.auth.key_file)");
                   }
                   serve::run(ctx.database_url(), config, [](const std::string& line) {
                     fmt::print(stderr, "oasync serve: {}\n", line);
                     std::fflush(stderr);
                   });
                   return to_int(ExitCode::ok);
                 }});
}

}  // namespace oasync::cli
