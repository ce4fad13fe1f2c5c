// Reads of one thing: a topic's metadata (HEAD), and one doc by key.
#include <fmt/format.h>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "offset.hpp"
#include "transports.hpp"

namespace oasync::serve {

namespace asio = boost::asio;

asio::awaitable<Keep> answer_head(Context& context, boost::beast::tcp_stream& stream,
                                  const Request& req, const std::string& topic) {
  const auto p = co_await context.streams.position(topic);
  if (!p) throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", topic));
  Response res{http::status::ok, req.version()};
  Offset at;
  at.epoch_counter = p->epoch_counter;
  at.watermark = p->head;
  res.set("Stream-Next-Offset", encode(at));
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.set("Oasync-Epoch", p->epoch);
  res.set("Oasync-Head", std::to_string(p->head));
  res.set("Oasync-Floor", std::to_string(p->purged_through));
  context.answers.decorate(req, res);
  res.content_length(0);
  res.keep_alive(req.keep_alive());
  stream.expires_after(std::chrono::seconds(context.config.limits.send_timeout_seconds));
  http::response_serializer<http::string_body> sr{res};
  co_await http::async_write_header(stream, sr, asio::use_awaitable);
  co_return Keep::alive;
}

asio::awaitable<Keep> answer_doc(Context& context, boost::beast::tcp_stream& stream,
                                 const Request& req, const boost::urls::url_view& url,
                                 const Caller& caller, const std::string& key) {
  std::optional<std::string> topic;
  if (auto it = url.params().find("topic"); it != url.params().end()) topic = (*it).value;
  if (topic && !Auth::allowed(caller, *topic)) {
    {
      Response answer = context.answers.refusal(
          req,
          {http::status::forbidden, fmt::format("the token may not read topic \"{}\"", *topic)});
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  if (!context.pool.has_room()) {
    throw Error(Code::database, "too many reads waiting for the database");
  }
  // Within the response budget, as stream reads are.
  Budget::Lease bytes = co_await context.budget.reserve(
      context.config.limits.page_bytes,
      std::chrono::steady_clock::now() +
          std::chrono::milliseconds(context.config.limits.budget_wait_ms));
  ++context.metrics.request_queries;
  std::function<std::vector<Reader::FoundDoc>(Reader&)> job = [key, topic](Reader& r) {
    return r.find_doc(key, topic);
  };
  const std::vector<Reader::FoundDoc> found = co_await context.pool.run(std::move(job));
  // Revoked or expired while the read ran: what it read does not go out.
  if (context.auth.standing(caller) != Standing::valid) {
    {
      Response answer = context.answers.ended(req);
      co_await context.answers.send(stream, answer, Keep::close);
    }
    co_return Keep::close;
  }
  // Only the caller's topics and view: another tenant's doc is not there.
  std::vector<const Reader::FoundDoc*> visible;
  for (const Reader::FoundDoc& f : found) {
    if (Auth::allowed(caller, f.doc.topic) && caller.view.contains(f.doc.scope)) {
      visible.push_back(&f);
    }
  }
  if (visible.empty()) {
    {
      Response answer = context.answers.refusal(
          req, {http::status::not_found, fmt::format("no doc \"{}\"", key.substr(0, 200))});
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  if (visible.size() > 1) {
    {
      Response answer =
          context.answers.error(req, http::status::conflict, "ambiguous",
                                "the key is in several topics: name one with ?topic=");
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  // The offset is the topic's head in the doc's own snapshot: the doc's
  // later changes all come after it.
  const Doc& d = visible.front()->doc;
  const TopicPosition* p = &visible.front()->position;
  Offset at;
  at.epoch_counter = p->epoch_counter;
  at.watermark = p->head;
  nlohmann::ordered_json body = {{"topic", d.topic},     {"doc_key", d.doc_key},
                                 {"scope", d.scope},     {"doc_version", d.doc_version},
                                 {"deleted", d.deleted}, {"last_watermark", d.last_watermark},
                                 {"epoch", p->epoch},    {"offset", encode(at)}};
  std::string text = body.dump();
  text.pop_back();
  text += R"(,"value":)" + (d.payload.empty() ? std::string("null") : d.payload) + "}";
  bytes.resize(static_cast<std::int64_t>(text.size()));
  Response res{http::status::ok, req.version()};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  context.answers.decorate(req, res);
  res.body() = std::move(text);
  res.prepare_payload();
  co_await context.answers.send(stream, res, Keep::alive);
  co_return Keep::alive;
}

}  // namespace oasync::serve
