// The subscription core: one reader of one topic's stream, from an offset,
// as its caller's view sees it. It holds the rules every transport shares:
// where the reader stands, what a stale offset gives (a reset and a fresh
// snapshot, or the stale answer), what wakes a waiting reader (the hub: a
// change that concerns its view), and whether its caller may still be
// served. Transports (long_poll.cpp, sse.cpp) only frame what it gives.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "auth.hpp"
#include "budget.hpp"
#include "context.hpp"
#include "streams.hpp"

namespace oasync::serve {

// What a stale offset gets: the stale answer (410), or a reset control and a
// fresh snapshot in its place (on_stale=reset).
enum class OnStale { report, reset };

// Whether a subscriber may go on.
enum class Status { valid, revoked, expired, stopping };

// `caller`'s status now: revoked or expired (its session or token), else
// stopping while the server shuts down, else valid.
Status status_of(const Context& context, const Caller& caller);
// Whether `status` ends the caller's service (revoked or expired).
inline bool ended(Status status) {
  return status == Status::revoked || status == Status::expired;
}

class Subscription {
 public:
  using Clock = std::chrono::steady_clock;

  // `offset_epoch`: the epoch the offset belongs to, when the client named
  // it (a channel's position of another epoch has no offset of its own): the
  // stale notice quotes it. "" when the offset says all there is.
  Subscription(Context& context, const Caller& caller, std::string topic, std::string offset,
               OnStale on_stale, std::string offset_epoch = {});
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  const std::string& topic() const { return topic_; }
  // The view it reads: its caller's.
  const View& view() const { return caller_.view; }
  // Where the reader stands: the offset the next read starts from.
  const std::string& offset() const { return offset_; }

  // The next chunk from offset(); nullopt when the caller's session was
  // revoked or its token expired, checked before the read and again after
  // it: nothing read is handed over for a caller that is no longer valid
  // (status() says why). Reserves limits.page_bytes of the response budget
  // first, and holds what the chunk takes until sent(); throws Busy when no
  // room came within limits.budget_wait_ms. Notes the topic's generation
  // first, so that a
  // change during the read, or while its answer is written, ends the next
  // wait() at once. Throws oasync::Error as Streams::read does.
  boost::asio::awaitable<std::optional<Chunk>> read();
  // Moves the reader past `chunk`.
  void advance(const Chunk& chunk) {
    offset_ = chunk.next;
    offset_epoch_ = chunk.epoch;
  }
  // What read() built has been written (or dropped): its bytes go back to
  // the budget. (Also when the subscription ends, or at the next read.)
  void sent() { held_.release(); }
  // Hands what read() built over to whoever writes it later (a socket's
  // queue): the bytes go back to the budget when the lease goes.
  Budget::Lease take_held() { return std::move(held_); }
  // Ends a wait() or wait_for() in progress now (it returns true, as for a
  // change): the subscriber is to look at its state again.
  void interrupt();

  // Waits for a change that concerns the view since the last read(), or
  // until `until`. False at `until`.
  boost::asio::awaitable<bool> wait(Clock::time_point until);

  // Read-your-writes (wait_for=W): waits until the hub has read the topic
  // through W, at most limits.max_wait_for_ms and never past the token's
  // expiry, or until the caller's session is revoked. The read after it
  // refuses a caller that is no longer valid.
  boost::asio::awaitable<void> wait_for(std::int64_t watermark);

  // Whether the caller may still be served.
  Status status() const;
  // When the caller's token expires (exp + leeway), on this clock.
  Clock::time_point expiry() const;
  // `limit` from now, never past the caller's token's expiry.
  Clock::time_point deadline(std::chrono::seconds limit) const;

 private:
  // Waits for the topic's next change after `seen`; with `view`, only a
  // change that concerns it. False at `until`.
  boost::asio::awaitable<bool> wait_change(std::uint64_t seen, Clock::time_point until,
                                           const View* view);

  Context& context_;
  const Caller& caller_;
  std::string topic_;
  std::string offset_;
  OnStale on_stale_;
  std::string offset_epoch_;
  std::uint64_t seen_ = 0;
  Budget::Lease held_;
  std::weak_ptr<Waiter> waiting_;
};

}  // namespace oasync::serve
