#include "budget.hpp"

#include <utility>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace oasync::serve {

namespace asio = boost::asio;

Budget::Lease::Lease(Lease&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

Budget::Lease& Budget::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::exchange(other.owner_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void Budget::Lease::resize(std::int64_t bytes) {
  if (owner_ == nullptr) return;
  owner_->used_ += bytes - bytes_;
  const bool shrunk = bytes < bytes_;
  bytes_ = bytes;
  owner_->gauge_ = owner_->used_;
  if (shrunk) owner_->wake();
}

void Budget::Lease::release() {
  if (owner_ == nullptr) return;
  owner_->used_ -= bytes_;
  bytes_ = 0;
  Budget* owner = std::exchange(owner_, nullptr);
  owner->wake();
}

void Budget::wake() {
  gauge_ = used_;
  for (asio::steady_timer* timer : waiting_) timer->cancel();
}

asio::awaitable<Budget::Lease> Budget::reserve(std::int64_t bytes,
                                               std::chrono::steady_clock::time_point until) {
  for (;;) {
    if (used_ == 0 || used_ + bytes <= limit_) {
      used_ += bytes;
      gauge_ = used_;
      co_return Lease(this, bytes);
    }
    if (std::chrono::steady_clock::now() >= until) throw Busy();
    asio::steady_timer timer(co_await asio::this_coro::executor, until);
    // Off the list however the wait ends, the frame destroyed while
    // suspended (shutdown) included.
    struct Listed {
      std::list<asio::steady_timer*>& list;
      std::list<asio::steady_timer*>::iterator at;
      ~Listed() { list.erase(at); }
    } listed{waiting_, waiting_.insert(waiting_.end(), &timer)};
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

}  // namespace oasync::serve
