// Catch-up and long-poll answers (PROTOCOL.md §5.6, §5.7): one JSON array of
// messages per response, or 204 when a long-poll's wait ends empty.
#include "transports.hpp"

namespace oasync::serve {

boost::asio::awaitable<Keep> answer_catch_up(Context& context, boost::beast::tcp_stream& stream,
                                             const Request& req, const StreamRequest& s,
                                             Subscription& subscription) {
  const bool long_poll = s.live == Live::long_poll;
  const Counted counted(long_poll ? context.metrics.long_poll : context.metrics.catch_up);
  const auto until =
      subscription.deadline(std::chrono::seconds(context.config.limits.long_poll_seconds));
  Chunk chunk;
  for (;;) {
    auto read = co_await subscription.read();
    if (!read) {
      // Revoked or expired: nothing read goes out, after a wait or not.
      {
        Response answer = context.answers.ended(req);
        co_await context.answers.send(stream, answer, Keep::close);
      }
      co_return Keep::close;
    }
    chunk = std::move(*read);
    if (chunk.stale) {
      context.metrics.count_stale(to_string(chunk.stale->reason));
      {
        Response answer = context.answers.stale(req, *chunk.stale);
        co_await context.answers.send(stream, answer, Keep::alive);
      }
      co_return Keep::alive;
    }
    // A catch-up answers what there is; a long-poll waits for something.
    if (!long_poll || !chunk.messages.empty() || !chunk.journal) break;
    subscription.advance(chunk);
    if (!chunk.up_to_date) continue;  // other scopes' events only: read on
    if (subscription.status() == Status::stopping) break;
    // After the wait the loop reads again, and read() refuses a caller that
    // is no longer valid; at the deadline (or shutdown) the answer is 204.
    if (!co_await subscription.wait(until)) break;
    if (subscription.status() == Status::stopping) break;
  }
  Response res{chunk.messages.empty() && long_poll ? http::status::no_content : http::status::ok,
               req.version()};
  res.set("Stream-Next-Offset", chunk.next);
  if (chunk.up_to_date) res.set("Stream-Up-To-Date", "true");
  if (long_poll) res.set("Stream-Cursor", next_cursor(s.cursor));
  // A catch-up may be kept by the browser and revalidated (its ETag names
  // its bytes); never by a shared cache: the bytes depend on the token.
  res.set(http::field::cache_control, long_poll ? "no-store" : "private, no-cache");
  context.answers.decorate(req, res);
  if (res.result() == http::status::ok) {
    res.set(http::field::content_type, "application/json");
    res.body() = json_array(chunk.messages);
    // Only the body is held while it is written (within the budget).
    std::vector<Message>().swap(chunk.messages);
    const std::string tag =
        entity_tag(s.topic,
                   subscription.view().unscoped ? subscription.view().scope + "\n+unscoped"
                                                : subscription.view().scope,
                   s.offset, chunk.next, res.body());
    res.set(http::field::etag, tag);
    if (matches(req[http::field::if_none_match], tag)) {
      res.result(http::status::not_modified);
      res.body().clear();
      res.erase(http::field::content_type);
      res.content_length(boost::none);
      co_await context.answers.send(stream, res, Keep::alive);
      co_return Keep::alive;
    }
  }
  res.prepare_payload();
  co_await context.answers.send(stream, res, Keep::alive);
  co_return Keep::alive;
}

}  // namespace oasync::serve
