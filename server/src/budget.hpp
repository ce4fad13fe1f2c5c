// The budget of response bytes in flight, across all clients (I/O thread
// only): what bounds the memory that responses being built or written hold,
// whatever the clients do. A read reserves limits.page_bytes before it
// starts, keeps what it built (its lease resized to it) until the response
// has been written, then releases it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <optional>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "oasync/error.hpp"

namespace oasync::serve {

// Thrown when no room came within limits.budget_wait_ms: the client is told
// 503 with Retry-After.
class Busy : public Error {
 public:
  Busy() : Error(Code::refused, "the server is busy; try again") {}
};

class Budget {
 public:
  // `in_use` (a gauge of /metrics) follows the bytes in use.
  Budget(std::int64_t limit, std::atomic<std::int64_t>& in_use) : limit_(limit), gauge_(in_use) {}
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  // Holds some bytes of the budget while it lives.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { release(); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    // Now holds `bytes` (what was built: it may exceed the reservation by
    // one event larger than a page).
    void resize(std::int64_t bytes);
    // Gives the bytes back, and wakes whoever waits for room.
    void release();

   private:
    friend class Budget;
    Lease(Budget* owner, std::int64_t bytes) : owner_(owner), bytes_(bytes) {}
    Budget* owner_ = nullptr;
    std::int64_t bytes_ = 0;
  };

  // Reserves `bytes`, waiting until `until` for room (granted at once when
  // nothing is in use, so one large response always goes). Throws Busy when
  // no room came.
  boost::asio::awaitable<Lease> reserve(std::int64_t bytes,
                                        std::chrono::steady_clock::time_point until);

  std::int64_t in_use() const { return used_; }

 private:
  void wake();

  std::int64_t limit_;
  std::atomic<std::int64_t>& gauge_;
  std::int64_t used_ = 0;
  std::list<boost::asio::steady_timer*> waiting_;
};

}  // namespace oasync::serve
