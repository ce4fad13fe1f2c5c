#include "router.hpp"

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include "oasync/batch.hpp"
#include "oasync/error.hpp"
#include "stream_request.hpp"
#include "subscription.hpp"
#include "transports.hpp"

namespace oasync::serve {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::awaitable;

// The request's token: `Authorization: Bearer`, else the query parameter.
std::string token_of(const Context& context, const Request& req, const boost::urls::url_view& url) {
  const auto header = req[http::field::authorization];
  if (header.size() > 7 && beast::iequals(header.substr(0, 7), "Bearer ")) {
    return std::string(header.substr(7));
  }
  if (auto it = url.params().find(context.config.auth.query_parameter); it != url.params().end()) {
    return (*it).value;
  }
  return {};
}

awaitable<Keep> options(Context& context, beast::tcp_stream& stream, const Request& req) {
  Response res{http::status::no_content, req.version()};
  context.answers.decorate(req, res);
  res.set(http::field::access_control_allow_methods, "GET, HEAD, OPTIONS");
  res.set(http::field::access_control_allow_headers, "Authorization, Content-Type");
  res.set(http::field::access_control_max_age, "600");
  co_await context.answers.send(stream, res, Keep::alive);
  co_return Keep::alive;
}

awaitable<Keep> health_or_metrics(Context& context, beast::tcp_stream& stream, const Request& req,
                                  const std::string& what) {
  Response res{http::status::ok, req.version()};
  res.set(http::field::cache_control, "no-store");
  if (what == "healthz") {
    const bool healthy = context.hub.healthy() && !context.stopping;
    res.result(healthy ? http::status::ok : http::status::service_unavailable);
    res.set(http::field::content_type, "text/plain");
    res.body() = healthy ? "ok\n" : (context.stopping ? "stopping\n" : "database unreachable\n");
  } else {
    res.set(http::field::content_type, "text/plain; version=0.0.4");
    res.body() = context.metrics.text();
  }
  if (req.method() == http::verb::head) res.body().clear();
  context.answers.decorate(req, res);
  res.prepare_payload();
  co_await context.answers.send(stream, res, Keep::alive);
  co_return Keep::alive;
}

awaitable<Keep> get_stream(Context& context, beast::tcp_stream& stream, const Request& req,
                           const boost::urls::url_view& url, const Caller& caller,
                           const std::string& topic) {
  std::string error;
  const auto parsed = parse_stream(url, topic, error);
  if (!parsed) {
    {
      Response answer = context.answers.error(req, http::status::bad_request, "bad_request", error);
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  const StreamRequest& s = *parsed;
  if (!context.pool.has_room()) {
    {
      Response answer = context.answers.refusal(
          req, Refusal{http::status::service_unavailable,
                       std::string("too many reads waiting for the database"),
                       {{"Retry-After", "1"}}});
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  Caller reader = caller;  // with the headers the request asked for
  reader.view.headers = s.headers;
  Subscription subscription(context, reader, s.topic, s.offset, s.on_stale);
  if (s.wait_for) co_await subscription.wait_for(*s.wait_for);
  if (s.live == Live::sse) co_return co_await answer_sse(context, stream, req, s, subscription);
  co_return co_await answer_catch_up(context, stream, req, s, subscription);
}

// A failed read's answer: the kind of failure for the client, the details
// (the database's address, its role, SQL) in the log.
Response failure_response(Context& context, const Request& req, const Error& e) {
  const http::status status = e.code() == Code::not_found          ? http::status::not_found
                              : e.code() == Code::invalid_argument ? http::status::bad_request
                              : e.code() == Code::database ? http::status::service_unavailable
                                                           : http::status::internal_server_error;
  const bool ours =
      status == http::status::service_unavailable || status == http::status::internal_server_error;
  if (ours) {
    context.log(fmt::format("request failed ({}): {}", static_cast<int>(status), e.what()));
  }
  Response res = context.answers.error(req, status,
                                       status == http::status::not_found             ? "not_found"
                                       : status == http::status::bad_request         ? "bad_request"
                                       : status == http::status::service_unavailable ? "unavailable"
                                                                                     : "internal",
                                       !ours ? std::string(e.what())
                                       : status == http::status::service_unavailable
                                           ? std::string("the database is unavailable; try again")
                                           : std::string("the server failed; see its log"));
  if (status == http::status::service_unavailable) res.set(http::field::retry_after, "1");
  return res;
}

}  // namespace

Refusal unauthorized(const AuthRefusal& why) {
  if (why.judged == Judged::not_yet) {
    return Refusal{http::status::service_unavailable, why.message, {{"Retry-After", "1"}}};
  }
  return Refusal{http::status::unauthorized,
                 why.message,
                 {{"WWW-Authenticate", fmt::format("Bearer error=\"invalid_token\", "
                                                   "error_description=\"{}\"",
                                                   why.message)}}};
}

awaitable<Keep> route(Context& context, beast::tcp_stream& stream, const Request& req) {
  const auto parsed = boost::urls::parse_origin_form(req.target());
  if (!parsed) {
    {
      Response answer = context.answers.error(req, http::status::bad_request, "bad_request",
                                              "the request target is not a path");
      co_await context.answers.send(stream, answer, Keep::close);
    }
    co_return Keep::close;
  }
  const boost::urls::url_view url = *parsed;
  std::vector<std::string> path;
  for (auto segment : url.segments()) path.push_back(segment);
  const bool stream_path = path.size() == 3 && path[0] == "v1" && path[1] == "topics";
  const bool doc_path =
      path.size() == 4 && path[0] == "sync" && path[1] == "v1" && path[2] == "doc";
  const bool socket_path = path.size() == 4 && path[0] == "sync" && path[1] == "v1" &&
                           path[2] == "socket" && path[3] == "websocket";
  if (req.method() == http::verb::options) co_return co_await options(context, stream, req);
  if (path.size() == 1 && (path[0] == "healthz" || path[0] == "metrics") &&
      (req.method() == http::verb::get || req.method() == http::verb::head)) {
    co_return co_await health_or_metrics(context, stream, req, path[0]);
  }
  if (socket_path && req.method() == http::verb::get) {
    co_return co_await answer_socket(context, stream, req, url);
  }
  if (!stream_path && !doc_path) {
    {
      Response answer =
          context.answers.error(req, http::status::not_found, "not_found", "no such resource");
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  // A topic or key that the database could not hold (invalid UTF-8, a NUL
  // that would cut it short) never reaches a query.
  if (!storable_text(path.back())) {
    {
      Response answer =
          context.answers.error(req, http::status::bad_request, "bad_request",
                                fmt::format("the {} in the path is not UTF-8 text without NUL",
                                            doc_path ? "doc key" : "topic"));
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  const bool read =
      req.method() == http::verb::get || (stream_path && req.method() == http::verb::head);
  if (!read) {
    // The sink is the only writer.
    {
      Response answer = context.answers.error(req, http::status::method_not_allowed,
                                              "method_not_allowed", "streams are read-only here");
      answer.set(http::field::allow, stream_path ? "GET, HEAD, OPTIONS" : "GET, OPTIONS");
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  auto who = context.auth.authenticate(token_of(context, req, url));
  if (const auto* refused = std::get_if<AuthRefusal>(&who)) {
    {
      Response answer = context.answers.refusal(req, unauthorized(*refused));
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  const Caller& caller = std::get<Caller>(who);
  if (!doc_path && !Auth::allowed(caller, path[2])) {
    {
      Response answer = context.answers.refusal(
          req,
          {http::status::forbidden, fmt::format("the token may not read topic \"{}\"", path[2])});
      co_await context.answers.send(stream, answer, Keep::alive);
    }
    co_return Keep::alive;
  }
  std::optional<Error> failure;
  bool busy = false;
  try {
    if (doc_path) co_return co_await answer_doc(context, stream, req, url, caller, path[3]);
    if (req.method() == http::verb::head)
      co_return co_await answer_head(context, stream, req, path[2]);
    co_return co_await get_stream(context, stream, req, url, caller, path[2]);
  } catch (const Busy&) {
    busy = true;
  } catch (const Error& e) {
    failure = e;
  }
  // (No co_await in a handler: answered here.)
  if (busy) {
    ++context.metrics.budget_refused;
    Response answer = context.answers.refusal(
        req, {http::status::service_unavailable,
              "the server is busy: too many response bytes in flight; try again",
              {{"Retry-After", "1"}}});
    co_await context.answers.send(stream, answer, Keep::alive);
    co_return Keep::alive;
  }
  {
    Response answer = failure_response(context, req, *failure);
    co_await context.answers.send(stream, answer, Keep::alive);
  }
  co_return Keep::alive;
}

}  // namespace oasync::serve
