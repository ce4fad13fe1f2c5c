// oasync serve: every topic as a Durable Stream of State Protocol messages
// (github.com/durable-streams/durable-streams, PROTOCOL.md; STATE-PROTOCOL.md
// of @durable-streams/state), so that the open-source clients read oasync
// topics as they are. One asynchronous process (Boost.Beast and Asio, C++20
// coroutines) that keeps no client state: clients hold their offsets, and
// resume against any server.
//
//   GET  /v1/topics/{topic}?offset=-1|now|O[&live=long-poll|sse][&cursor=C]
//        [&on_stale=reset][&wait_for=W]      a topic's stream (JSON mode)
//   HEAD /v1/topics/{topic}                  its metadata (Stream-Next-Offset)
//   GET  /sync/v1/doc/{doc_key}[?topic=T]    one doc, with its topic's offset
//   GET  /healthz, /metrics                  health; Prometheus text
//
// Every stream and doc request needs a JWT (Authorization: Bearer, or the
// query parameter auth.query_parameter for EventSource): its `scopes` claim
// lists the topics it may read, its `org_id` names the tenant, whose scope
// (tenancy.scope_format) is all it sees. See README, "oasync serve".
//
// liboasync does not depend on this library: runtimes link the sink without
// Boost.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace oasync::serve {

struct AuthConfig {
  // HS256, RS256 or ES256: the only algorithm accepted, whatever a token's
  // header says.
  std::string algorithm = "HS256";
  // HS256: a file holding the shared secret (at least 32 bytes; one trailing
  // newline is dropped); RS256, ES256: a PEM public key file.
  std::string key_file;
  // When set, tokens must carry this iss, and name this aud.
  std::string issuer;
  std::string audience;
  // Where EventSource clients, which cannot set headers, put the token.
  std::string query_parameter = "access_token";
  std::int64_t leeway_seconds = 30;
};

struct TenancyConfig {
  // A token's scope: "{org_id}" is replaced by its org_id claim.
  std::string scope_format = "org:{org_id}";
  // Whether tenants also read the unscoped docs (scope "").
  bool unscoped = false;
};

struct LimitsConfig {
  // Open connections. At the limit, a new connection takes the place of the
  // one idle longest (between requests, or still sending its request head);
  // connections serving a response are never taken. Clamped at start to
  // what the open-file limit allows beside the database sessions.
  std::int64_t max_connections = 10000;
  // Open connections of one client address (the peer's, or the one a trusted
  // proxy names in X-Forwarded-For): beyond it, 503.
  std::int64_t max_connections_per_client = 128;
  // How long a client may take to send a whole request head once it has
  // begun (and a new connection to begin): a client trickling header lines
  // is cut off after it, whatever idle_timeout_seconds says.
  std::int64_t request_head_seconds = 10;
  // Largest request head (line and headers), in bytes; no request has a body.
  std::int64_t max_request_bytes = 16384;
  // How long a kept-alive connection may sit idle between requests.
  std::int64_t idle_timeout_seconds = 60;
  // How long a write to a client may take before the client is dropped (a
  // subscriber that cannot keep up).
  std::int64_t send_timeout_seconds = 30;
  // How long a long-poll waits for data before 204.
  std::int64_t long_poll_seconds = 20;
  // How long an SSE response stays open, so that proxies recycle it.
  std::int64_t sse_seconds = 60;
  // Most messages in one response (or one SSE data event): a catch-up costs
  // a round trip per page.
  std::int64_t page_events = 5000;
  // A response (or SSE data event) also ends once its events hold this many
  // bytes; one event larger than it still goes out, alone.
  std::int64_t page_bytes = 1 << 20;
  // The bytes of responses being read or written, across all clients: a
  // read reserves page_bytes first and keeps what it built until it has
  // been written (a client that does not read holds it for up to
  // send_timeout_seconds). Beyond it, a request waits up to budget_wait_ms,
  // then gets 503 with Retry-After. Peak memory is bounded by these budgets
  // (README, "Memory").
  std::int64_t response_bytes = 64 << 20;
  std::int64_t budget_wait_ms = 2000;
  // Docs per snapshot page.
  std::int64_t snapshot_page_docs = 1000;
  // Longest wait_for a request may ask.
  std::int64_t max_wait_for_ms = 10000;
  // Recent events kept per topic, from which live subscribers are served
  // without a query of their own.
  std::int64_t live_buffer_events = 10000;
  // ... and at most this many bytes of them (payloads and keys).
  std::int64_t live_buffer_bytes = 64 << 20;
  // Database connections for catch-up reads, snapshots and docs.
  std::int64_t db_pool = 4;
  // Requests waiting for one of them, beyond which the server answers 503.
  std::int64_t db_queue = 1000;
  // How often revoked sessions are read, and topics polled when no
  // notification comes.
  std::int64_t revocation_poll_ms = 2000;
  std::int64_t poll_ms = 1000;
  // After a notification, the hub waits until this long after its last read
  // began before it reads again: commits within it are read (and delivered)
  // together, so its database work per second stays bounded under a stream
  // of small commits, at the cost of at most this much latency.
  std::int64_t wake_coalesce_ms = 5;
  // How long shutdown waits for open responses to end.
  std::int64_t drain_seconds = 10;

  // The sync:v1 channel (a WebSocket at /sync/v1/socket/websocket).
  // A socket that has sent nothing for this long is closed (phoenix.js
  // sends a heartbeat every 30 s).
  std::int64_t channel_idle_seconds = 60;
  // A channel with nothing to push gets a heartbeat this often: the
  // position its view has been delivered through, to persist.
  std::int64_t channel_heartbeat_seconds = 30;
  // Bytes queued for one socket, beyond which its channels read no more
  // until it takes them (a page may go over it once). A channel that is
  // live (has reached the head) and waits longer than send_timeout_seconds
  // for room, or a write that takes that long, closes the socket as a slow
  // consumer. Queued bytes hold the response budget until written.
  std::int64_t socket_queue_bytes = 4 << 20;
  // Channels one socket may join.
  std::int64_t max_channels_per_socket = 64;
  // An update whose payload is larger goes out without it, with
  // fetch_required set: the client fetches the doc.
  std::int64_t channel_payload_bytes = 1 << 20;
};

struct ServeConfig {
  // Address and port to listen on (port 0: any free port, printed at start).
  std::string listen = "127.0.0.1";
  std::uint16_t port = 4437;
  AuthConfig auth;
  TenancyConfig tenancy;
  LimitsConfig limits;
  // Browser origins allowed by CORS; "*" for any. Empty: no CORS headers.
  std::vector<std::string> cors_origins;
  // Addresses of reverse proxies (nginx) whose X-Forwarded-For is believed:
  // a request through one counts against the client address it names last.
  // From any other peer, X-Forwarded-For is ignored.
  std::vector<std::string> trusted_proxies;
};

// Serves until SIGINT or SIGTERM, then drains (limits.drain_seconds). Prints
// "listening on HOST:PORT" through `log` once it accepts connections, and
// each notable event after. Throws oasync::Error for a configuration that
// cannot serve (an unreadable key, a port in use).
void run(const std::string& database_url, const ServeConfig& config,
         const std::function<void(const std::string&)>& log);

}  // namespace oasync::serve
