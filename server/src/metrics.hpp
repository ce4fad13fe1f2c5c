// What /metrics reports, in Prometheus text format. Counters and gauges are
// atomics: the I/O thread, the database pool and the hub update them.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace oasync::serve {

class Metrics {
 public:
  // Open connections, and responses in progress by mode.
  std::atomic<std::int64_t> connections{0};
  std::atomic<std::int64_t> catch_up{0};
  std::atomic<std::int64_t> long_poll{0};
  std::atomic<std::int64_t> sse{0};
  std::atomic<std::int64_t> connections_refused{0};
  // The hub: wakes, and the database reads they cost.
  std::atomic<std::int64_t> wakes{0};
  std::atomic<std::int64_t> wake_queries{0};
  // Reads for a single request (catch-up, snapshot, doc).
  std::atomic<std::int64_t> request_queries{0};
  // Messages delivered, and the latest delay between a commit becoming
  // visible to the hub and its delivery starting, in microseconds.
  std::atomic<std::int64_t> messages{0};
  std::atomic<std::int64_t> delivery_lag_us{0};
  // Subscribers ended because a write to them took too long.
  std::atomic<std::int64_t> slow_subscribers{0};
  // Requests refused because the response budget had no room in time.
  std::atomic<std::int64_t> budget_refused{0};
  // Response bytes in flight (the budget's use), set by the I/O thread.
  std::atomic<std::int64_t> response_bytes{0};
  // The sync:v1 channel: open sockets, joined channels, and bytes queued
  // for sockets (part of response_bytes).
  std::atomic<std::int64_t> sockets{0};
  std::atomic<std::int64_t> channels{0};
  std::atomic<std::int64_t> socket_queued_bytes{0};

  // Labelled counters: 410s and resets by reason, refused auth by reason.
  void count_stale(const std::string& reason);
  void count_reset(const std::string& reason);
  void count_auth_refused(const std::string& reason);
  // Sockets the server closed, by reason (unauthorized, draining,
  // slow_consumer, idle, bad_frame).
  void count_socket_closed(const std::string& reason);
  // Subscribers waiting per topic.
  void add_subscriber(const std::string& topic, int delta);

  std::string text() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::int64_t> stale_, resets_, auth_refused_, subscribers_, socket_closes_;
};

// Counts a response in progress while it lives.
class Counted {
 public:
  explicit Counted(std::atomic<std::int64_t>& gauge) : gauge_(gauge) { ++gauge_; }
  ~Counted() { --gauge_; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;

 private:
  std::atomic<std::int64_t>& gauge_;
};

// Counts a live subscriber of a topic while it lives.
class Subscribed {
 public:
  Subscribed(Metrics& metrics, std::string topic) : metrics_(metrics), topic_(std::move(topic)) {
    metrics_.add_subscriber(topic_, 1);
  }
  ~Subscribed() { metrics_.add_subscriber(topic_, -1); }
  Subscribed(const Subscribed&) = delete;
  Subscribed& operator=(const Subscribed&) = delete;

 private:
  Metrics& metrics_;
  std::string topic_;
};

}  // namespace oasync::serve
