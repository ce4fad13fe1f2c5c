// The hub: one database session that follows every topic a client asked
// for. On each commit notification (and every poll_ms without one) it reads
// the topics' positions in one query, and each changed topic's new events in
// one read, with Detail::routing (every scope's view at once), into a buffer
// of the latest live_buffer_events events (at most live_buffer_bytes) per
// topic. Then it wakes the
// subscribers of the changed topics whose scopes the new events concern
// (other changes wake them all), which take what their view sees from
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
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "metrics.hpp"
#include "oasync/reader.hpp"
#include "oasync/serve/serve.hpp"
#include "view.hpp"

namespace oasync::serve {

// A waiting subscriber: the hub cancels `timer` (on `executor`) to wake it.
struct Waiter {
  explicit Waiter(boost::asio::any_io_executor ex) : executor(ex), timer(ex) {}
  boost::asio::any_io_executor executor;
  boost::asio::steady_timer timer;
  // The scopes whose events it reads (its view's); empty: every change
  // wakes it. New events of other scopes do not: on a topic shared by many
  // tenants, a commit wakes only its own tenant's subscribers. Any other
  // change (an epoch, a purge, a revocation, shutdown) wakes everyone.
  std::vector<std::string> scopes;
};

// What an event costs in memory, as the buffer and the byte limits count it:
// its payload, key and scope, and 64 bytes for the rest.
std::int64_t footprint(const Event& event);

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

  // How many of the hub's looks at `topic` have begun or ended: read before
  // a database read whose result is to `seed` the hub.
  std::uint64_t looks(const std::string& topic) const;

  // Takes `position`, which a reader read from the database after `looks`
  // was `looks_then`, as the hub's first look at `topic`: its buffer starts,
  // empty, at that head, so that readers at the head are answered without a
  // database read each (a burst of joins after a start). Everyone waiting
  // wakes, as at a first look. Does nothing when the hub has a position,
  // when one of its looks is under way or has begun or ended since
  // `looks_then` (its own read may be older or newer than this one: it
  // decides), or when its session is down (nothing would move the head on).
  // Its next wake moves on from a seed as from its own look.
  void seed(const std::string& topic, const TopicPosition& position, std::uint64_t looks_then);

  // The buffered events of `topic` after `after` that concern `scopes` (a
  // view's parts: an event of one of them, or a move out of one), at most
  // `max`, in order: present when the buffer holds every event of epoch
  // `epoch_counter` after `after`. The other scopes' events are not looked
  // at: a reader's cost does not grow with the other tenants' commits.
  // `through` is where a reader that took them all stands: the last
  // watermark taken, or the buffer's end when every one was taken. The
  // events are shared with the buffer, and with them the messages their
  // readers made of them (SharedEvent).
  struct Buffered {
    std::vector<std::shared_ptr<const SharedEvent>> events;
    std::int64_t through = 0;
    TopicPosition position;
  };
  std::optional<Buffered> buffered(const std::string& topic, std::int64_t epoch_counter,
                                   std::int64_t after, std::int64_t max,
                                   const std::vector<std::string>& scopes) const;

  // How many times the topic changed (new events, epoch, registration), or
  // any session was revoked, or shutdown began: what a subscriber notes
  // before it reads, and hands to wait().
  std::uint64_t generation(const std::string& topic) const;

  // Registers `waiter` for the topic's next change that concerns it, unless
  // one came after generation `seen` already (then false: read again
  // instead of waiting). New events of scopes it does not read do not count.
  bool wait(const std::string& topic, std::uint64_t seen, const std::shared_ptr<Waiter>& waiter);

  bool revoked(const std::string& session_id) const;
  // Whether the revoked sessions have been read at least once since start:
  // until then revoked() knows nothing, and no token may be trusted.
  bool revocations_read() const { return revocations_read_; }
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
    std::deque<std::shared_ptr<const SharedEvent>> events;
    // The same events by the scopes they concern (an event under its scope,
    // and under the scope it left), each list in order.
    std::unordered_map<std::string, std::deque<std::shared_ptr<const SharedEvent>>> of_scope;
    void push(std::shared_ptr<const SharedEvent> e);
    void pop_front();
    void clear_events();
    // What the messages its events keep may take (live_buffer_bytes).
    std::shared_ptr<EncodingBudget> encodings;
    std::int64_t bytes = 0;  // footprint() of `events`
    std::uint64_t generation = 0;
    // The generation of the last change that concerned everyone, and of the
    // last new events of each scope.
    std::uint64_t everyone_at = 0;
    std::unordered_map<std::string, std::uint64_t> scope_at;
    // The waiters, by scope (a waiter of several scopes is listed under
    // each), and those that every change wakes (no scopes): a commit of one
    // tenant looks at its own tenant's waiters only, however many others
    // wait on the topic.
    std::unordered_map<std::string, std::vector<std::weak_ptr<Waiter>>> waiters_of;
    std::vector<std::weak_ptr<Waiter>> waiters_of_all;
    std::size_t waiting = 0;      // entries in both
    std::size_t compact_at = 64;  // drop expired entries at this many
    // Bumped when a look at the feed begins and when it ends; `looking`
    // between the two (the look's positions were read without the lock).
    std::uint64_t looks = 0;
    bool looking = false;
    bool has_waiters() const { return !waiters_of_all.empty() || !waiters_of.empty(); }
  };

  void loop();
  // One wake: positions, new events, wake-ups.
  void refresh(Reader& reader);
  void poll_revocations(pqxx::connection_base& conn);
  // With mutex_ held: a change of the feed; the waiters alone. With
  // `touched`, new events of those scopes only: the waiters of other scopes
  // keep waiting.
  void wake(Feed& feed, const std::set<std::string>* touched = nullptr);
  void wake_waiters(Feed& feed, const std::set<std::string>* touched = nullptr);

  std::string database_url_;
  LimitsConfig limits_;
  Metrics& metrics_;
  std::function<void(const std::string&)> log_;

  mutable std::mutex mutex_;
  std::map<std::string, Feed> feeds_;
  std::unordered_set<std::string> revoked_;
  double revoked_after_ = 0;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> healthy_{false};
  std::atomic<bool> revocations_read_{false};
  std::thread thread_;
};

}  // namespace oasync::serve
