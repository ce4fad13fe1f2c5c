// The hub: one database session that follows every topic a client asked
// for. On each commit notification (and every poll_ms without one) it reads
// the topics' positions in one query, and each changed topic's new events in
// one read, with Detail::routing (every scope's view at once), into a buffer
// of the latest live_buffer_events events per topic. Then it wakes the
// subscribers of the changed topics, which take what their view sees from
// the buffer in memory: the database work per commit does not grow with the
// number of subscribers. A subscriber behind the buffer reads the database
// itself (a catch-up read of its own scopes).
//
// It also reads the revoked sessions every revocation_poll_ms, and wakes
// every subscriber when one is added.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "metrics.hpp"
#include "oasync/reader.hpp"
#include "oasync/serve/serve.hpp"

namespace oasync::serve {

// A waiting subscriber: the hub cancels `timer` (on `executor`) to wake it.
struct Waiter {
  explicit Waiter(boost::asio::any_io_executor ex) : executor(ex), timer(ex) {}
  boost::asio::any_io_executor executor;
  boost::asio::steady_timer timer;
};

class Hub {
 public:
  Hub(std::string database_url, const LimitsConfig& limits, Metrics& metrics,
      std::function<void(const std::string&)> log);
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  void start();
  void stop();

  // Starts following `topic` (from the next wake on). Idempotent.
  void follow(const std::string& topic);

  // The topic's position as of the last wake; nullopt when it is not
  // followed yet, or not registered.
  std::optional<TopicPosition> position(const std::string& topic) const;

  // Buffered events of `topic` after `after`, at most `max`: present when
  // the buffer holds every event of epoch `epoch_counter` after `after`.
  // `through` is where a reader that took them all stands: the last
  // watermark taken, or the buffer's end when every buffered one was taken.
  struct Buffered {
    std::vector<std::shared_ptr<const Event>> events;
    std::int64_t through = 0;
    TopicPosition position;
  };
  std::optional<Buffered> buffered(const std::string& topic, std::int64_t epoch_counter,
                                   std::int64_t after, std::int64_t max) const;

  // How many times the topic changed (head, epoch or registration), or any
  // session was revoked: a subscriber that saw generation G waits only while
  // it is still G.
  std::uint64_t generation(const std::string& topic) const;

  // Registers `waiter` for the topic's next change, unless the generation
  // moved past `seen` already (then false: read again instead of waiting).
  bool wait(const std::string& topic, std::uint64_t seen, const std::shared_ptr<Waiter>& waiter);

  bool revoked(const std::string& session_id) const;
  // Wakes every waiting subscriber (shutdown: they answer and end).
  void wake_all();
  // False while the hub cannot reach the database.
  bool healthy() const { return healthy_; }

 private:
  struct Feed {
    std::optional<TopicPosition> position;
    std::int64_t epoch_counter = 0;
    std::int64_t start_after = 0;  // the buffer holds (start_after, end]
    std::int64_t end = 0;
    std::deque<std::shared_ptr<const Event>> events;
    std::uint64_t generation = 0;
    std::vector<std::weak_ptr<Waiter>> waiters;
    std::size_t compact_at = 64;  // drop expired waiters at this length
  };

  void loop();
  // One wake: positions, new events, wake-ups.
  void refresh(Reader& reader);
  void poll_revocations(pqxx::connection_base& conn);
  // With mutex_ held: a change of the feed; the waiters alone.
  void wake(Feed& feed);
  void wake_waiters(Feed& feed);

  std::string database_url_;
  LimitsConfig limits_;
  Metrics& metrics_;
  std::function<void(const std::string&)> log_;

  mutable std::mutex mutex_;
  std::map<std::string, Feed> feeds_;
  std::unordered_set<std::string> revoked_;
  double revoked_after_ = 0;
  std::uint64_t revocations_ = 0;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> healthy_{false};
  std::thread thread_;
};

}  // namespace oasync::serve
