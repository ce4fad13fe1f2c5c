#include "subscription.hpp"

#include <algorithm>
#include <memory>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace oasync::serve {

namespace asio = boost::asio;

Subscription::Subscription(Context& context, const Caller& caller, std::string topic,
                           std::string offset, OnStale on_stale, std::string offset_epoch)
    : context_(context),
      caller_(caller),
      topic_(std::move(topic)),
      offset_(std::move(offset)),
      on_stale_(on_stale),
      offset_epoch_(std::move(offset_epoch)) {}

asio::awaitable<std::optional<Chunk>> Subscription::read() {
  if (ended(status())) co_return std::nullopt;
  held_.release();
  const auto& limits = context_.config.limits;
  const auto until = Clock::now() + std::chrono::milliseconds(limits.budget_wait_ms);
  Budget::Lease lease = co_await context_.budget.reserve(limits.page_bytes, until);
  seen_ = context_.hub.generation(topic_);
  Chunk chunk = co_await context_.streams.read(topic_, caller_.view, offset_);
  if (chunk.stale && on_stale_ == OnStale::reset) {
    context_.metrics.count_reset(to_string(chunk.stale->reason));
    const ResumeCheck stale = *chunk.stale;
    chunk = co_await context_.streams.reset(topic_, caller_.view, offset_, stale, offset_epoch_);
  }
  if (ended(status())) co_return std::nullopt;
  std::int64_t bytes = 0;
  for (const Message& m : chunk.messages) bytes += static_cast<std::int64_t>(m->size());
  lease.resize(bytes);
  held_ = std::move(lease);
  context_.metrics.messages += static_cast<std::int64_t>(chunk.messages.size());
  co_return chunk;
}

asio::awaitable<bool> Subscription::wait(Clock::time_point until) {
  co_return co_await wait_change(seen_, until, &caller_.view);
}

asio::awaitable<void> Subscription::wait_for(std::int64_t watermark) {
  // Never past the token's expiry: the read after it refuses the caller.
  const auto until = std::min(
      expiry(), Clock::now() + std::chrono::milliseconds(context_.config.limits.max_wait_for_ms));
  context_.hub.follow(topic_);
  for (;;) {
    const std::uint64_t seen = context_.hub.generation(topic_);
    const auto p = context_.hub.position(topic_);
    if ((p && p->head >= watermark) || status() != Status::valid) break;
    if (!co_await wait_change(seen, until, nullptr)) break;
  }
}

asio::awaitable<bool> Subscription::wait_change(std::uint64_t seen, Clock::time_point until,
                                                const View* view) {
  if (Clock::now() >= until) co_return false;
  auto waiter = std::make_shared<Waiter>(co_await asio::this_coro::executor);
  if (view != nullptr) waiter->scopes = view->parts();
  if (!context_.hub.wait(topic_, seen, waiter)) co_return true;
  waiter->timer.expires_at(until);
  waiting_ = waiter;
  boost::system::error_code ec;
  co_await waiter->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return ec == asio::error::operation_aborted;
}

void Subscription::interrupt() {
  if (const auto waiter = waiting_.lock()) waiter->timer.cancel();
}

Status status_of(const Context& context, const Caller& caller) {
  switch (context.auth.standing(caller)) {
    case Standing::revoked:
      return Status::revoked;
    case Standing::expired:
      return Status::expired;
    case Standing::valid:
      break;
  }
  return context.stopping ? Status::stopping : Status::valid;
}

Status Subscription::status() const {
  return status_of(context_, caller_);
}

Subscription::Clock::time_point Subscription::expiry() const {
  const std::int64_t left = std::max<std::int64_t>(0, caller_.claims.valid_until - unix_now());
  return Clock::now() + std::chrono::seconds(left);
}

Subscription::Clock::time_point Subscription::deadline(std::chrono::seconds limit) const {
  return std::min(expiry(), Clock::now() + limit);
}

}  // namespace oasync::serve
