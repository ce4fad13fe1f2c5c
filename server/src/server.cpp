// oasync serve's HTTP side: Boost.Beast on one I/O thread, one coroutine per
// connection. See serve.hpp for the surface, README for the details.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <variant>

#include <fmt/format.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <nlohmann/json.hpp>

#include "db_pool.hpp"
#include "hub.hpp"
#include "jwt.hpp"
#include "metrics.hpp"
#include "oasync/batch.hpp"
#include "oasync/error.hpp"
#include "oasync/serve/serve.hpp"
#include "streams.hpp"
#include "view.hpp"

namespace oasync::serve {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using Request = http::request<http::empty_body>;
using Response = http::response<http::string_body>;
using SystemClock = std::chrono::system_clock;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(SystemClock::now().time_since_epoch())
      .count();
}

// Reads a key file; an HS256 secret loses one trailing newline.
std::string read_key(const AuthConfig& auth) {
  std::ifstream in(auth.key_file, std::ios::binary);
  if (!in) {
    throw Error(Code::not_found,
                fmt::format("serve.auth.key_file: cannot read \"{}\"", auth.key_file));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string key = text.str();
  if (auth.algorithm == "HS256" && !key.empty() && key.back() == '\n') key.pop_back();
  return key;
}

Algorithm parse_algorithm(const std::string& name) {
  if (name == "HS256") return Algorithm::hs256;
  if (name == "RS256") return Algorithm::rs256;
  if (name == "ES256") return Algorithm::es256;
  throw Error(Code::invalid_argument,
              fmt::format("serve.auth.algorithm: \"{}\" is not HS256, RS256 or ES256", name));
}

// An answer that ends a request early: status, message, extra headers.
struct Refusal {
  http::status status;
  std::string message;
  std::vector<std::pair<std::string, std::string>> headers = {};
};

// The Long-poll cursor (PROTOCOL.md §10.1): 20-second intervals, always
// ahead of the client's.
std::string next_cursor(const std::string& client) {
  const std::int64_t interval = unix_now() / 20;
  std::int64_t theirs = -1;
  try {
    theirs = client.empty() ? -1 : std::stoll(client);
  } catch (...) {
    theirs = -1;
  }
  if (theirs == std::numeric_limits<std::int64_t>::max()) return std::to_string(theirs);
  return std::to_string(std::max(interval, theirs + 1));
}

// Counts a response in progress while it lives.
class Counted {
 public:
  explicit Counted(std::atomic<std::int64_t>& gauge) : gauge_(gauge) { ++gauge_; }
  ~Counted() { --gauge_; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;

 private:
  std::atomic<std::int64_t>& gauge_;
};

// Counts a live subscriber of a topic while it lives.
class Subscribed {
 public:
  Subscribed(Metrics& metrics, std::string topic) : metrics_(metrics), topic_(std::move(topic)) {
    metrics_.add_subscriber(topic_, 1);
  }
  ~Subscribed() { metrics_.add_subscriber(topic_, -1); }
  Subscribed(const Subscribed&) = delete;
  Subscribed& operator=(const Subscribed&) = delete;

 private:
  Metrics& metrics_;
  std::string topic_;
};

class Server {
 public:
  Server(const std::string& database_url, const ServeConfig& config,
         const std::function<void(const std::string&)>& log)
      : config_(config),
        log_(log),
        verifier_(VerifierOptions{parse_algorithm(config.auth.algorithm), read_key(config.auth),
                                  config.auth.issuer, config.auth.audience,
                                  config.auth.leeway_seconds}),
        hub_(database_url, config.limits, metrics_, log),
        pool_(database_url, static_cast<int>(config.limits.db_pool), config.limits.db_queue),
        streams_(hub_, pool_, metrics_, config.limits),
        acceptor_(ioc_) {}

  void run() {
    raise_file_limit();
    const auto address = asio::ip::make_address(config_.listen);
    tcp::endpoint endpoint(address, config_.port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    boost::system::error_code ec;
    acceptor_.bind(endpoint, ec);
    if (ec) {
      throw Error(Code::refused, fmt::format("cannot listen on {}:{}: {}", config_.listen,
                                             config_.port, ec.message()));
    }
    acceptor_.listen(asio::socket_base::max_listen_connections);
    hub_.start();
    const auto bound = acceptor_.local_endpoint();
    log_(fmt::format("listening on {}:{}", bound.address().to_string(), bound.port()));
    asio::signal_set signals(ioc_, SIGINT, SIGTERM);
    signals.async_wait([this](const boost::system::error_code& error, int) {
      if (!error) shutdown();
    });
    asio::co_spawn(ioc_, accept(), asio::detached);
    ioc_.run();
    // The pool's last jobs finish before the io_context they answer to goes.
    pool_.stop();
    hub_.stop();
    log_("stopped");
  }

 private:
  static void raise_file_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      setrlimit(RLIMIT_NOFILE, &limit);
    }
  }

  // Stops accepting, answers every waiting request, and stops once the open
  // responses have ended or limits.drain_seconds have passed.
  void shutdown() {
    if (stopping_) return;
    stopping_ = true;
    log_("shutting down: draining open responses");
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    // Connections waiting for a request (keep-alive) end now.
    for (beast::tcp_stream* idle : idle_) idle->cancel();
    hub_.wake_all();
    asio::co_spawn(
        ioc_,
        [this]() -> awaitable<void> {
          asio::steady_timer timer(ioc_);
          const auto until =
              std::chrono::steady_clock::now() + std::chrono::seconds(config_.limits.drain_seconds);
          while (metrics_.connections > 0 && std::chrono::steady_clock::now() < until) {
            hub_.wake_all();
            timer.expires_after(std::chrono::milliseconds(50));
            co_await timer.async_wait(use_awaitable);
          }
          ioc_.stop();
        },
        asio::detached);
  }

  awaitable<void> accept() {
    for (;;) {
      tcp::socket socket(ioc_);
      boost::system::error_code ec;
      co_await acceptor_.async_accept(socket, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        if (stopping_) co_return;
        if (ec == asio::error::connection_aborted) continue;  // the client went away
        // Out of descriptors (EMFILE) or memory: wait, instead of spinning
        // on the one I/O thread.
        asio::steady_timer pause(ioc_, std::chrono::milliseconds(100));
        co_await pause.async_wait(use_awaitable);
        continue;
      }
      if (metrics_.connections >= config_.limits.max_connections) {
        ++metrics_.connections_refused;
        asio::co_spawn(ioc_, refuse(std::move(socket)), asio::detached);
        continue;
      }
      asio::co_spawn(ioc_, session(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  // At the connection limit: 503 and close, without reading the request.
  awaitable<void> refuse(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    Response res{http::status::service_unavailable, 11};
    res.set(http::field::retry_after, "1");
    res.set(http::field::content_type, "application/json");
    res.body() = R"({"error":"too_many_connections"})";
    res.keep_alive(false);
    res.prepare_payload();
    stream.expires_after(std::chrono::seconds(5));
    boost::system::error_code ec;
    co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
  }

  awaitable<void> session(beast::tcp_stream stream) {
    ++metrics_.connections;
    beast::flat_buffer buffer;
    try {
      while (!stopping_) {
        http::request_parser<http::empty_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(config_.limits.max_request_bytes));
        // Only the head is read: no request here has a body, and a write
        // (which would) is answered 405 without reading it.
        parser.body_limit(std::numeric_limits<std::uint64_t>::max());
        stream.expires_after(std::chrono::seconds(config_.limits.idle_timeout_seconds));
        boost::system::error_code ec;
        idle_.insert(&stream);
        co_await http::async_read_header(stream, buffer, parser,
                                         asio::redirect_error(use_awaitable, ec));
        idle_.erase(&stream);
        if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
            ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
          break;
        }
        if (ec) {
          const auto status = ec == http::error::header_limit
                                  ? http::status::request_header_fields_too_large
                                  : http::status::bad_request;
          {
            Response answer = error_response(11, status, "bad_request",
                                             fmt::format("bad request: {}", ec.message()));
            co_await send(stream, answer, false);
          }
          break;
        }
        const bool has_body = !parser.is_done();
        Request req = parser.release();
        const bool keep = co_await handle(stream, req);
        // A body left unread ends the connection.
        if (!keep || !req.keep_alive() || has_body) break;
      }
    } catch (const std::exception& e) {
      // The client went away, or a write to it timed out: nothing to answer.
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    --metrics_.connections;
  }

  // ---- responses ----

  void cors(const Request& req, http::fields& headers) const {
    if (config_.cors_origins.empty()) return;
    const auto origin = req[http::field::origin];
    if (origin.empty()) return;
    const bool any = std::find(config_.cors_origins.begin(), config_.cors_origins.end(), "*") !=
                     config_.cors_origins.end();
    const bool listed = std::find(config_.cors_origins.begin(), config_.cors_origins.end(),
                                  std::string(origin)) != config_.cors_origins.end();
    if (!any && !listed) return;
    headers.set(http::field::access_control_allow_origin, any ? "*" : std::string(origin));
    if (!any) headers.set(http::field::vary, "Origin");
    headers.set(http::field::access_control_expose_headers,
                "Stream-Next-Offset, Stream-Up-To-Date, Stream-Cursor, Oasync-Stale-Reason, "
                "Oasync-Floor, Oasync-Head, Oasync-Epoch");
  }

  static Response error_response(unsigned version, http::status status, const std::string& code,
                                 const std::string& message) {
    Response res{status, version};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::cache_control, "no-store");
    // (Messages quote the request, which need not be UTF-8.)
    res.body() = nlohmann::json{{"error", code}, {"message", message}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace);
    res.prepare_payload();
    return res;
  }

  // (`res` is a named object of the caller's: GCC 12 destroys temporaries of
  // a co_await expression twice, so none is built inside one.)
  awaitable<void> send(beast::tcp_stream& stream, Response& res, bool keep_alive) {
    res.keep_alive(keep_alive);
    stream.expires_after(std::chrono::seconds(config_.limits.send_timeout_seconds));
    co_await http::async_write(stream, res, use_awaitable);
  }

  Response refusal_response(const Request& req, const Refusal& r) {
    Response res = error_response(req.version(), r.status,
                                  r.status == http::status::unauthorized          ? "unauthorized"
                                  : r.status == http::status::forbidden           ? "forbidden"
                                  : r.status == http::status::not_found           ? "not_found"
                                  : r.status == http::status::service_unavailable ? "unavailable"
                                                                                  : "bad_request",
                                  r.message);
    for (const auto& [name, value] : r.headers) res.set(name, value);
    cors(req, res);
    return res;
  }

  // ---- auth ----

  struct Caller {
    Claims claims;
    View view;
  };

  // The caller of `req`, from its token; or why not.
  std::variant<Caller, Refusal> authenticate(const Request& req, const boost::urls::url_view& url) {
    std::string token;
    const auto header = req[http::field::authorization];
    if (header.size() > 7 && beast::iequals(header.substr(0, 7), "Bearer ")) {
      token = std::string(header.substr(7));
    } else if (auto it = url.params().find(config_.auth.query_parameter);
               it != url.params().end()) {
      token = (*it).value;
    }
    const auto refuse = [&](const std::string& reason, const std::string& message) {
      metrics_.count_auth_refused(reason);
      return Refusal{http::status::unauthorized,
                     message,
                     {{"WWW-Authenticate", fmt::format("Bearer error=\"invalid_token\", "
                                                       "error_description=\"{}\"",
                                                       message)}}};
    };
    if (token.empty()) return refuse("missing", "a token is required");
    Caller caller;
    try {
      caller.claims = verifier_.verify(token, unix_now());
    } catch (const TokenError& e) {
      return refuse(e.reason(), e.what());
    }
    if (hub_.revoked(caller.claims.session_id)) {
      return refuse("revoked", "the token's session was revoked");
    }
    caller.view.scope = config_.tenancy.scope_format;
    for (std::size_t at = 0; (at = caller.view.scope.find("{org_id}", at)) != std::string::npos;
         at += caller.claims.org_id.size()) {
      caller.view.scope.replace(at, 8, caller.claims.org_id);
    }
    caller.view.unscoped = config_.tenancy.unscoped;
    return caller;
  }

  static bool allowed(const Caller& caller, const std::string& topic) {
    return std::find(caller.claims.topics.begin(), caller.claims.topics.end(), topic) !=
           caller.claims.topics.end();
  }

  // ---- routing ----

  awaitable<bool> handle(beast::tcp_stream& stream, const Request& req) {
    const auto parsed = boost::urls::parse_origin_form(req.target());
    if (!parsed) {
      {
        Response answer = error_response(req.version(), http::status::bad_request, "bad_request",
                                         "the request target is not a path");
        co_await send(stream, answer, false);
      }
      co_return false;
    }
    const boost::urls::url_view url = *parsed;
    std::vector<std::string> path;
    for (auto segment : url.segments()) path.push_back(segment);
    const bool stream_path = path.size() == 3 && path[0] == "v1" && path[1] == "topics";
    const bool doc_path =
        path.size() == 4 && path[0] == "sync" && path[1] == "v1" && path[2] == "doc";
    if (req.method() == http::verb::options) {
      Response res{http::status::no_content, req.version()};
      cors(req, res);
      res.set(http::field::access_control_allow_methods, "GET, HEAD, OPTIONS");
      res.set(http::field::access_control_allow_headers, "Authorization, Content-Type");
      res.set(http::field::access_control_max_age, "600");
      co_await send(stream, res, true);
      co_return true;
    }
    if (path.size() == 1 && (path[0] == "healthz" || path[0] == "metrics") &&
        (req.method() == http::verb::get || req.method() == http::verb::head)) {
      Response res{http::status::ok, req.version()};
      res.set(http::field::cache_control, "no-store");
      if (path[0] == "healthz") {
        const bool healthy = hub_.healthy() && !stopping_;
        res.result(healthy ? http::status::ok : http::status::service_unavailable);
        res.set(http::field::content_type, "text/plain");
        res.body() = healthy ? "ok\n" : (stopping_ ? "stopping\n" : "database unreachable\n");
      } else {
        res.set(http::field::content_type, "text/plain; version=0.0.4");
        res.body() = metrics_.text();
      }
      if (req.method() == http::verb::head) res.body().clear();
      res.prepare_payload();
      co_await send(stream, res, true);
      co_return true;
    }
    if (!stream_path && !doc_path) {
      {
        Response answer =
            error_response(req.version(), http::status::not_found, "not_found", "no such resource");
        co_await send(stream, answer, true);
      }
      co_return true;
    }
    // A topic or key that the database could not hold (invalid UTF-8, a NUL
    // that would cut it short) never reaches a query.
    if (!storable_text(path.back())) {
      {
        Response answer =
            error_response(req.version(), http::status::bad_request, "bad_request",
                           fmt::format("the {} in the path is not UTF-8 text without NUL",
                                       doc_path ? "doc key" : "topic"));
        cors(req, answer);
        co_await send(stream, answer, true);
      }
      co_return true;
    }
    const bool read =
        req.method() == http::verb::get || (stream_path && req.method() == http::verb::head);
    if (!read) {
      // The sink is the only writer.
      Response res = error_response(req.version(), http::status::method_not_allowed,
                                    "method_not_allowed", "streams are read-only here");
      res.set(http::field::allow, stream_path ? "GET, HEAD, OPTIONS" : "GET, OPTIONS");
      cors(req, res);
      co_await send(stream, res, true);
      co_return true;
    }
    auto who = authenticate(req, url);
    if (auto* refusal = std::get_if<Refusal>(&who)) {
      {
        Response answer = refusal_response(req, *refusal);
        co_await send(stream, answer, true);
      }
      co_return true;
    }
    const Caller& caller = std::get<Caller>(who);
    if (!doc_path && !allowed(caller, path[2])) {
      {
        Response answer = refusal_response(
            req,
            {http::status::forbidden, fmt::format("the token may not read topic \"{}\"", path[2])});
        co_await send(stream, answer, true);
      }
      co_return true;
    }
    std::optional<Error> failure;
    try {
      if (doc_path) co_return co_await get_doc(stream, req, url, caller, path[3]);
      if (req.method() == http::verb::head) co_return co_await head(stream, req, path[2]);
      co_return co_await get_stream(stream, req, url, caller, path[2]);
    } catch (const Error& e) {
      failure = e;
    }
    // (No co_await in a handler: answered here.)
    const Error& e = *failure;
    const http::status status = e.code() == Code::not_found          ? http::status::not_found
                                : e.code() == Code::invalid_argument ? http::status::bad_request
                                : e.code() == Code::database ? http::status::service_unavailable
                                                             : http::status::internal_server_error;
    // The database's and the library's own words (its address, its role,
    // SQL) go to the log; the client learns only what kind of failure it was.
    const bool ours = status == http::status::service_unavailable ||
                      status == http::status::internal_server_error;
    if (ours) log_(fmt::format("request failed ({}): {}", static_cast<int>(status), e.what()));
    Response res = error_response(req.version(), status,
                                  status == http::status::not_found             ? "not_found"
                                  : status == http::status::bad_request         ? "bad_request"
                                  : status == http::status::service_unavailable ? "unavailable"
                                                                                : "internal",
                                  !ours ? std::string(e.what())
                                  : status == http::status::service_unavailable
                                      ? std::string("the database is unavailable; try again")
                                      : std::string("the server failed; see its log"));
    if (status == http::status::service_unavailable) res.set(http::field::retry_after, "1");
    cors(req, res);
    co_await send(stream, res, true);
    co_return true;
  }

  // ---- HEAD ----

  awaitable<bool> head(beast::tcp_stream& stream, const Request& req, const std::string& topic) {
    const auto p = co_await streams_.position(topic);
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
    cors(req, res);
    res.content_length(0);
    res.keep_alive(req.keep_alive());
    stream.expires_after(std::chrono::seconds(config_.limits.send_timeout_seconds));
    http::response_serializer<http::string_body> sr{res};
    co_await http::async_write_header(stream, sr, use_awaitable);
    co_return true;
  }

  // ---- GET /sync/v1/doc/{key} ----

  awaitable<bool> get_doc(beast::tcp_stream& stream, const Request& req,
                          const boost::urls::url_view& url, const Caller& caller,
                          const std::string& key) {
    std::optional<std::string> topic;
    if (auto it = url.params().find("topic"); it != url.params().end()) topic = (*it).value;
    if (topic && !allowed(caller, *topic)) {
      {
        Response answer = refusal_response(
            req,
            {http::status::forbidden, fmt::format("the token may not read topic \"{}\"", *topic)});
        co_await send(stream, answer, true);
      }
      co_return true;
    }
    if (!pool_.has_room()) throw Error(Code::database, "too many reads waiting for the database");
    ++metrics_.request_queries;
    std::function<std::vector<Reader::FoundDoc>(Reader&)> job = [key, topic](Reader& r) {
      return r.find_doc(key, topic);
    };
    const std::vector<Reader::FoundDoc> found = co_await pool_.run(std::move(job));
    // Only the caller's topics and view: another tenant's doc is not there.
    std::vector<const Reader::FoundDoc*> visible;
    for (const Reader::FoundDoc& f : found) {
      if (allowed(caller, f.doc.topic) && caller.view.contains(f.doc.scope)) visible.push_back(&f);
    }
    if (visible.empty()) {
      {
        Response answer = refusal_response(
            req, {http::status::not_found, fmt::format("no doc \"{}\"", key.substr(0, 200))});
        co_await send(stream, answer, true);
      }
      co_return true;
    }
    if (visible.size() > 1) {
      Response res = error_response(req.version(), http::status::conflict, "ambiguous",
                                    "the key is in several topics: name one with ?topic=");
      cors(req, res);
      co_await send(stream, res, true);
      co_return true;
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
    Response res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::cache_control, "no-store");
    cors(req, res);
    res.body() = std::move(text);
    res.prepare_payload();
    co_await send(stream, res, true);
    co_return true;
  }

  // ---- GET /v1/topics/{topic} ----

  struct StreamRequest {
    std::string topic;
    std::string offset = "-1";
    std::string live;  // "", "long-poll", "sse"
    std::string cursor;
    bool reset_on_stale = false;
    std::optional<std::int64_t> wait_for;
  };

  static std::optional<StreamRequest> parse_stream(const boost::urls::url_view& url,
                                                   const std::string& topic, std::string& error) {
    StreamRequest s;
    s.topic = topic;
    for (auto param : url.params()) {
      const std::string key = param.key;
      const std::string value = param.value;
      if (key == "offset") {
        s.offset = value;
      } else if (key == "live") {
        if (value != "long-poll" && value != "sse") {
          error = fmt::format("live must be long-poll or sse, not \"{}\"", value.substr(0, 40));
          return std::nullopt;
        }
        s.live = value;
      } else if (key == "cursor") {
        s.cursor = value;
      } else if (key == "on_stale") {
        if (value != "reset" && value != "410") {
          error = fmt::format("on_stale must be reset or 410, not \"{}\"", value.substr(0, 40));
          return std::nullopt;
        }
        s.reset_on_stale = value == "reset";
      } else if (key == "wait_for") {
        try {
          std::size_t used = 0;
          s.wait_for = std::stoll(value, &used);
          if (used != value.size() || *s.wait_for < 0) throw std::invalid_argument(value);
        } catch (...) {
          error = fmt::format("wait_for must be a watermark, not \"{}\"", value.substr(0, 40));
          return std::nullopt;
        }
      }
    }
    if (s.offset.empty()) {
      error = "offset must not be empty (use -1 or now)";
      return std::nullopt;
    }
    return s;
  }

  // The 410 answer for a stale offset (PROTOCOL.md: Gone), naming why.
  Response stale_response(const Request& req, const ResumeCheck& stale) {
    const std::string reason = to_string(stale.reason);
    metrics_.count_stale(reason);
    Response res{http::status::gone, req.version()};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::cache_control, "no-store");
    res.set("Oasync-Stale-Reason", reason);
    res.set("Oasync-Floor", std::to_string(stale.position.purged_through));
    res.set("Oasync-Head", std::to_string(stale.position.head));
    res.set("Oasync-Epoch", stale.position.epoch);
    res.body() = nlohmann::ordered_json{{"error", "stale_offset"},
                                        {"reason", reason},
                                        {"floor", stale.position.purged_through},
                                        {"head", stale.position.head},
                                        {"epoch", stale.position.epoch},
                                        {"message",
                                         "the offset cannot resume: start again at "
                                         "offset=-1 (or ask on_stale=reset)"}}
                     .dump();
    cors(req, res);
    res.prepare_payload();
    return res;
  }

  // How long a request may wait: until `limit` from now, and never past its
  // token's expiry.
  static std::chrono::steady_clock::time_point deadline(const Caller& caller,
                                                        std::chrono::seconds limit) {
    const auto now = std::chrono::steady_clock::now();
    const std::int64_t left = std::max<std::int64_t>(0, caller.claims.valid_until - unix_now());
    return now + std::min(limit, std::chrono::seconds(left));
  }

  // Whether the caller may go on (not revoked, not expired).
  bool still_valid(const Caller& caller) const {
    return !hub_.revoked(caller.claims.session_id) && unix_now() < caller.claims.valid_until &&
           !stopping_;
  }

  // Waits until the topic changes after `seen`, or `until`: with `view`, a
  // change that concerns the view (new events of other scopes do not).
  // Returns false at `until`.
  awaitable<bool> wait_change(const std::string& topic, std::uint64_t seen,
                              std::chrono::steady_clock::time_point until,
                              const View* view = nullptr) {
    if (std::chrono::steady_clock::now() >= until) co_return false;
    auto waiter = std::make_shared<Waiter>(co_await asio::this_coro::executor);
    if (view != nullptr) waiter->scopes = view->parts();
    if (!hub_.wait(topic, seen, waiter)) co_return true;
    waiter->timer.expires_at(until);
    boost::system::error_code ec;
    co_await waiter->timer.async_wait(asio::redirect_error(use_awaitable, ec));
    co_return ec == asio::error::operation_aborted;
  }

  // The next chunk from `offset`, stale answered as the request asks: in
  // reset mode a reset and a fresh snapshot; else the chunk's `stale` is set.
  awaitable<Chunk> next_chunk(const StreamRequest& s, const Caller& caller,
                              const std::string& offset) {
    Chunk chunk = co_await streams_.read(s.topic, caller.view, offset);
    if (chunk.stale && s.reset_on_stale) {
      metrics_.count_reset(to_string(chunk.stale->reason));
      chunk = co_await streams_.reset(s.topic, caller.view);
    }
    metrics_.messages += static_cast<std::int64_t>(chunk.messages.size());
    co_return chunk;
  }

  awaitable<bool> get_stream(beast::tcp_stream& stream, const Request& req,
                             const boost::urls::url_view& url, const Caller& caller,
                             const std::string& topic) {
    std::string error;
    const auto parsed = parse_stream(url, topic, error);
    if (!parsed) {
      Response res = error_response(req.version(), http::status::bad_request, "bad_request", error);
      cors(req, res);
      co_await send(stream, res, true);
      co_return true;
    }
    const StreamRequest& s = *parsed;
    if (!pool_.has_room()) {
      Response res =
          refusal_response(req, Refusal{http::status::service_unavailable,
                                        std::string("too many reads waiting for the database"),
                                        {}});
      res.set(http::field::retry_after, "1");
      co_await send(stream, res, true);
      co_return true;
    }
    // Read-your-writes: hold the answer until the hub has read through W.
    if (s.wait_for) {
      const auto until = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(config_.limits.max_wait_for_ms);
      hub_.follow(topic);
      for (;;) {
        const std::uint64_t seen = hub_.generation(topic);
        const auto p = hub_.position(topic);
        if ((p && p->head >= *s.wait_for) || !still_valid(caller)) break;
        if (!co_await wait_change(topic, seen, until)) break;
      }
    }
    if (s.live == "sse") co_return co_await sse(stream, req, s, caller);
    const bool long_poll = s.live == "long-poll";
    const Counted counted(long_poll ? metrics_.long_poll : metrics_.catch_up);
    std::string offset = s.offset;
    const auto until = deadline(caller, std::chrono::seconds(config_.limits.long_poll_seconds));
    Chunk chunk;
    for (;;) {
      const std::uint64_t seen = hub_.generation(topic);
      chunk = co_await next_chunk(s, caller, offset);
      if (chunk.stale) {
        {
          Response answer = stale_response(req, *chunk.stale);
          co_await send(stream, answer, true);
        }
        co_return true;
      }
      // A catch-up answers what there is; a long-poll waits for something.
      if (!long_poll || !chunk.messages.empty() || !chunk.journal) break;
      offset = chunk.next;
      if (!chunk.up_to_date) continue;  // other scopes' events only: read on
      if (!still_valid(caller)) break;
      if (!co_await wait_change(topic, seen, until, &caller.view)) break;
      if (!still_valid(caller)) {
        if (hub_.revoked(caller.claims.session_id) || unix_now() >= caller.claims.valid_until) {
          {
            Response answer = refusal_response(
                req, {http::status::unauthorized, "the token expired or its session was revoked"});
            co_await send(stream, answer, false);
          }
          co_return false;
        }
        break;
      }
    }
    Response res{chunk.messages.empty() && long_poll ? http::status::no_content : http::status::ok,
                 req.version()};
    res.set("Stream-Next-Offset", chunk.next);
    if (chunk.up_to_date) res.set("Stream-Up-To-Date", "true");
    if (long_poll) res.set("Stream-Cursor", next_cursor(s.cursor));
    res.set(http::field::cache_control, "no-store");
    cors(req, res);
    if (res.result() == http::status::ok) {
      res.set(http::field::content_type, "application/json");
      res.body() = json_array(chunk.messages);
    }
    res.prepare_payload();
    co_await send(stream, res, true);
    co_return true;
  }

  // ---- SSE ----

  awaitable<bool> sse(beast::tcp_stream& stream, const Request& req, const StreamRequest& s,
                      const Caller& caller) {
    const Counted counted(metrics_.sse);
    const Subscribed subscribed(metrics_, s.topic);
    std::string offset = s.offset;
    // The generation before each read: a commit during the read or the
    // write after it makes the next wait return at once.
    std::uint64_t seen = hub_.generation(s.topic);
    // A stale offset answers before the stream starts: 410, or a reset.
    Chunk chunk = co_await next_chunk(s, caller, offset);
    if (chunk.stale) {
      {
        Response answer = stale_response(req, *chunk.stale);
        co_await send(stream, answer, false);
      }
      co_return false;
    }
    http::response<http::empty_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "text/event-stream");
    res.set(http::field::cache_control, "no-store");
    res.set("X-Accel-Buffering", "no");
    cors(req, res);
    res.keep_alive(false);
    stream.expires_after(std::chrono::seconds(config_.limits.send_timeout_seconds));
    http::response_serializer<http::empty_body> sr{res};
    co_await http::async_write_header(stream, sr, use_awaitable);
    const auto until = deadline(caller, std::chrono::seconds(config_.limits.sse_seconds));
    std::string cursor = s.cursor;
    bool told_up_to_date = false;
    // From here on a failure can only end the stream: the status is sent.
    // The client reconnects from its offset, and then hears why.
    try {
      for (;;) {
        const bool moved = chunk.next != offset;
        if (!chunk.messages.empty() || moved || (chunk.up_to_date && !told_up_to_date)) {
          std::string text;
          if (!chunk.messages.empty()) {
            text += "event: data\ndata: ";
            text += json_array(chunk.messages);
            text += "\n\n";
          }
          cursor = next_cursor(cursor);
          // (Offsets and cursors are digits, '_' and letters: no escaping.)
          text += fmt::format(
              "event: control\ndata: {{\"streamNextOffset\":\"{}\",\"streamCursor\":\"{}\"{}}}\n\n",
              chunk.next, cursor, chunk.up_to_date ? ",\"upToDate\":true" : "");
          stream.expires_after(std::chrono::seconds(config_.limits.send_timeout_seconds));
          boost::system::error_code ec;
          co_await asio::async_write(stream, asio::buffer(text),
                                     asio::redirect_error(use_awaitable, ec));
          if (ec) {
            if (ec == beast::error::timeout) ++metrics_.slow_subscribers;
            co_return false;
          }
          told_up_to_date = chunk.up_to_date;
        }
        offset = chunk.next;
        // Catching up too: a revoked or expired token, or the stream's time
        // up, closes it; the client reconnects from its offset.
        if (!still_valid(caller) || std::chrono::steady_clock::now() >= until) co_return false;
        if (chunk.up_to_date && !co_await wait_change(s.topic, seen, until, &caller.view)) {
          co_return false;
        }
        if (!still_valid(caller)) co_return false;
        seen = hub_.generation(s.topic);
        chunk = co_await next_chunk(s, caller, offset);
        if (chunk.stale) co_return false;  // the client reconnects, and hears why
      }
    } catch (const Error&) {
      // The database failed or the topic went away: the stream ends.
    }
    co_return false;
  }

  ServeConfig config_;
  std::function<void(const std::string&)> log_;
  Metrics metrics_;
  Verifier verifier_;
  Hub hub_;
  DbPool pool_;
  Streams streams_;
  asio::io_context ioc_{1};
  tcp::acceptor acceptor_;
  bool stopping_ = false;
  // Connections waiting for their next request (I/O thread only).
  std::set<beast::tcp_stream*> idle_;
};

}  // namespace

void run(const std::string& database_url, const ServeConfig& config,
         const std::function<void(const std::string&)>& log) {
  std::unique_ptr<Server> server;
  try {
    server = std::make_unique<Server>(database_url, config, log);
  } catch (const std::invalid_argument& e) {
    throw Error(Code::invalid_argument, fmt::format("serve.auth: {}", e.what()));
  }
  server->run();
}

}  // namespace oasync::serve
