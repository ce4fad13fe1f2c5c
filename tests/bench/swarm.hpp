// A swarm of clients for the oasync serve scenarios of scripts/bench:
// thousands of connections on one Asio thread, Durable Streams SSE streams or
// sync:v1 WebSockets, each noting when each write (its "seq" in the payload)
// arrived. One bookkeeping serves both kinds: the delays are measured the
// same way whatever carried them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace oasync::bench {

using Clock = std::chrono::steady_clock;

// When each write committed (the sink's answer), by seq; 0 until then.
class Commits {
 public:
  explicit Commits(std::size_t writes) : at_(writes) {}
  void mark(std::size_t seq) {
    at_[seq].store(Clock::now().time_since_epoch().count(), std::memory_order_release);
  }
  std::int64_t at(std::size_t seq) const {
    return seq < at_.size() ? at_[seq].load(std::memory_order_acquire) : 0;
  }
  std::size_t size() const { return at_.size(); }

 private:
  std::vector<std::atomic<std::int64_t>> at_;
};

// How a swarm's clients read.
enum class Transport {
  // GET with Accept: text/event-stream; a delivery is a data line's "seq".
  sse,
  // The sync:v1 channel (Phoenix Channels V2, protobuf pushes); a delivery
  // is an Update of a "batch" push whose payload holds a "seq". Snapshot
  // docs and heartbeats count for nothing.
  websocket,
};

// A channel a WebSocket client joins: "sync:v1:" + topic, with the join
// params (a JSON object: {} for the tenant's snapshot then live, or
// {"epoch": E, "watermark": "W"} to resume after W).
struct Join {
  std::string topic;
  std::string params = "{}";
};

// One client of a swarm.
struct Client {
  // The request target: "/v1/topics/...?..." for SSE, or
  // "/sync/v1/socket/websocket?vsn=2.0.0&..." for a WebSocket.
  std::string target;
  // WebSocket only: the JWT, offered as phoenix.js offers its authToken (the
  // subprotocol "base64url.bearer.phx." + its standard base64, beside
  // "phoenix"), and the channels it joins, one after the other.
  std::string token;
  std::vector<Join> joins;
};

class Swarm {
 public:
  // The clients, to 127.0.0.1:port, all of one transport. Commits are read
  // when latencies_ms() is called.
  Swarm(int port, Transport transport, std::vector<Client> clients, const Commits& commits);
  ~Swarm();
  Swarm(const Swarm&) = delete;
  Swarm& operator=(const Swarm&) = delete;

  // Connects every client at once (a refused or reset connection is tried
  // again, up to 5 times, as is a join refused as "unavailable", with
  // phoenix.js's delays), and returns once all have started or failed, or
  // `timeout` passed. A WebSocket client sends a phoenix heartbeat every
  // 30 s once joined, and nothing else.
  void start(std::chrono::seconds timeout);
  // Closes every connection (abruptly) and joins the swarm's thread.
  void stop();

  // Clients started: an SSE response head 200, or a socket whose every join
  // was answered "ok".
  std::int64_t streaming() const { return streaming_; }
  // Clients that never started (connection, handshake, or a refused join).
  std::int64_t failed() const { return failed_; }
  // Connections tried again (refused or reset: a burst overflows the listen
  // backlog).
  std::int64_t reconnects() const { return reconnects_; }
  // Joins refused as "unavailable" (the server's database queue is full) and
  // tried again.
  std::int64_t rejoins() const { return rejoins_; }
  // Started clients whose connection the server ended before stop().
  std::int64_t ended() const { return ended_; }
  std::int64_t deliveries() const { return deliveries_; }
  // Commit-to-client delays of every delivery so far, in milliseconds.
  std::vector<double> latencies_ms() const;
  // CPU seconds (user and system) the swarm's thread has used so far: the
  // load generator's own cost. Only while it runs (between start and stop).
  double cpu_seconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<std::int64_t> streaming_{0};
  std::atomic<std::int64_t> failed_{0};
  std::atomic<std::int64_t> reconnects_{0};
  std::atomic<std::int64_t> rejoins_{0};
  std::atomic<std::int64_t> ended_{0};
  std::atomic<std::int64_t> deliveries_{0};
};

}  // namespace oasync::bench
