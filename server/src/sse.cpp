// Server-Sent Events (PROTOCOL.md §5.8): `data` events carry a JSON array of
// messages, `control` events the next offset and cursor.
#include <fmt/format.h>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "transports.hpp"

namespace oasync::serve {

namespace asio = boost::asio;

boost::asio::awaitable<Keep> answer_sse(Context& context, boost::beast::tcp_stream& stream,
                                        const Request& req, const StreamRequest& s,
                                        Subscription& subscription) {
  const Counted counted(context.metrics.sse);
  const Subscribed subscribed(context.metrics, s.topic);
  // A stale offset answers before the stream starts: 410, or a reset.
  auto first = co_await subscription.read();
  if (!first) {
    {
      Response answer = context.answers.ended(req);
      co_await context.answers.send(stream, answer, Keep::close);
    }
    co_return Keep::close;
  }
  Chunk chunk = std::move(*first);
  if (chunk.stale) {
    context.metrics.count_stale(to_string(chunk.stale->reason));
    {
      Response answer = context.answers.stale(req, *chunk.stale);
      co_await context.answers.send(stream, answer, Keep::close);
    }
    co_return Keep::close;
  }
  const auto& limits = context.config.limits;
  http::response<http::empty_body> res{http::status::ok, req.version()};
  res.set(http::field::content_type, "text/event-stream");
  res.set(http::field::cache_control, "no-store");
  res.set("X-Accel-Buffering", "no");
  context.answers.decorate(req, res);
  res.keep_alive(false);
  stream.expires_after(std::chrono::seconds(limits.send_timeout_seconds));
  http::response_serializer<http::empty_body> sr{res};
  co_await http::async_write_header(stream, sr, asio::use_awaitable);
  // (The header's write may have waited on a full send buffer.)
  if (ended(subscription.status())) {
    co_return Keep::close;
  }
  const auto until = subscription.deadline(std::chrono::seconds(limits.sse_seconds));
  bool told_up_to_date = false;
  // From here on a failure can only end the stream: the status is sent.
  // The client reconnects from its offset, and then hears why.
  try {
    for (;;) {
      const bool moved = chunk.next != subscription.offset();
      if (!chunk.messages.empty() || moved || (chunk.up_to_date && !told_up_to_date)) {
        std::string text;
        if (!chunk.messages.empty()) {
          text += "event: data\ndata: ";
          text += json_array(chunk.messages);
          text += "\n\n";
          std::vector<Message>().swap(chunk.messages);
        }
        // From the request's cursor each time, as the reference server does:
        // chained, the jitter would add up event after event.
        const std::string cursor = next_cursor(s.cursor);
        // (Offsets and cursors are digits, '_' and letters: no escaping.)
        text += fmt::format(
            "event: control\ndata: {{\"streamNextOffset\":\"{}\",\"streamCursor\":\"{}\"{}}}\n\n",
            chunk.next, cursor, chunk.up_to_date ? ",\"upToDate\":true" : "");
        stream.expires_after(std::chrono::seconds(limits.send_timeout_seconds));
        boost::system::error_code ec;
        co_await asio::async_write(stream, asio::buffer(text),
                                   asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          if (ec == boost::beast::error::timeout) ++context.metrics.slow_subscribers;
          co_return Keep::close;
        }
        told_up_to_date = chunk.up_to_date;
      }
      subscription.sent();
      subscription.advance(chunk);
      // Catching up too: a revoked or expired token, or the stream's time
      // up, closes it; the client reconnects from its offset.
      if (subscription.status() != Status::valid || Subscription::Clock::now() >= until) {
        co_return Keep::close;
      }
      if (chunk.up_to_date && !co_await subscription.wait(until)) co_return Keep::close;
      if (subscription.status() != Status::valid) co_return Keep::close;
      auto next = co_await subscription.read();
      // Revoked or expired during the read: what it read does not go out.
      if (!next) co_return Keep::close;
      chunk = std::move(*next);
      if (chunk.stale) co_return Keep::close;  // the client reconnects, and hears why
    }
  } catch (const Error&) {
    // The database failed or the topic went away: the stream ends.
  }
  co_return Keep::close;
}

}  // namespace oasync::serve
