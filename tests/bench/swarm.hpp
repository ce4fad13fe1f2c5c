// A swarm of SSE clients for the oasync serve scenarios of scripts/bench:
// thousands of connections on one Asio thread, each reading its stream and
// noting when each write (its "seq" in the payload) arrived.
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

class Swarm {
 public:
  // One client per target ("/v1/topics/...?...": the request line's path),
  // to 127.0.0.1:port.
  Swarm(int port, std::vector<std::string> targets, const Commits& commits);
  ~Swarm();
  Swarm(const Swarm&) = delete;
  Swarm& operator=(const Swarm&) = delete;

  // Connects every client (in waves), and returns once all have their
  // response head, or `timeout` passed.
  void start(std::chrono::seconds timeout);
  void stop();

  std::int64_t streaming() const { return streaming_; }
  std::int64_t failed() const { return failed_; }
  std::int64_t deliveries() const { return deliveries_; }
  // Commit-to-client delays of every delivery so far, in milliseconds.
  std::vector<double> latencies_ms() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<std::int64_t> streaming_{0};
  std::atomic<std::int64_t> failed_{0};
  std::atomic<std::int64_t> deliveries_{0};
};

}  // namespace oasync::bench
