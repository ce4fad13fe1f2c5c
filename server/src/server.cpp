// oasync serve's listener: Boost.Beast on one I/O thread, one coroutine per
// connection, which reads request heads and hands each to the router. It
// owns the server's pieces (context.hpp), the connection limit, and the
// draining shutdown. See serve.hpp for the surface, README for the details.
#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "answers.hpp"
#include "auth.hpp"
#include "connections.hpp"
#include "context.hpp"
#include "db_pool.hpp"
#include "hub.hpp"
#include "metrics.hpp"
#include "oasync/error.hpp"
#include "oasync/serve/serve.hpp"
#include "router.hpp"
#include "streams.hpp"

namespace oasync::serve {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

// Undoes a count when it goes.
class Refusing {
 public:
  explicit Refusing(std::int64_t& count) : count_(count) {}
  ~Refusing() { --count_; }
  Refusing(const Refusing&) = delete;
  Refusing& operator=(const Refusing&) = delete;

 private:
  std::int64_t& count_;
};

// What a request's Transfer-Encoding makes of it (RFC 9112 §6.1, §6.3):
// nullopt when there is none, or exactly "chunked" (a body, left unread: the
// connection ends after the answer); else the status to close with: 501 for
// a coding not understood, 400 for any other list (chunked not last, chunked
// twice, empty), which a parser could read otherwise than Beast does.
std::optional<std::pair<http::status, std::string>> transfer_coding_problem(const Request& req) {
  const auto [first, last] = req.equal_range(http::field::transfer_encoding);
  if (first == last) return std::nullopt;
  std::vector<std::string> codings;
  for (auto it = first; it != last; ++it) {
    for (const auto& coding : http::token_list{it->value()}) {
      std::string name(coding);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      codings.push_back(std::move(name));
    }
  }
  if (codings.size() == 1 && codings.front() == "chunked") return std::nullopt;
  for (const std::string& c : codings) {
    if (c != "chunked") {
      return std::pair{
          http::status::not_implemented,
          fmt::format("the transfer coding \"{}\" is not understood", c.substr(0, 40))};
    }
  }
  return std::pair{http::status::bad_request,
                   std::string("the Transfer-Encoding of a request must be chunked, once")};
}

class Server {
 public:
  Server(const std::string& database_url, const ServeConfig& config,
         const std::function<void(const std::string&)>& log)
      : config_(config),
        log_(log),
        hub_(database_url, config.limits, metrics_, log),
        auth_(config.auth, config.tenancy, hub_, metrics_),
        answers_(config_),
        pool_(database_url, static_cast<int>(config.limits.db_pool), config.limits.db_queue),
        streams_(hub_, pool_, metrics_, config.limits),
        budget_(config.limits.response_bytes, metrics_.response_bytes),
        context_{config_,  log_,  metrics_, hub_,    pool_,
                 streams_, auth_, answers_, budget_, stopping_},
        connections_(config.limits.max_connections, config.limits.max_connections_per_client,
                     config.trusted_proxies),
        acceptor_(ioc_) {}

  void run() {
    reconcile_file_limit();
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
  // Descriptors kept beside the connections: the database sessions (the
  // pool's, the hub's), the refusals being written, and a margin for the
  // listener, the standard streams, Asio's own and files read at start.
  std::int64_t reserved_descriptors() const {
    return config_.limits.db_pool + 2 + kMaxRefusing + 32;
  }

  // Raises the open-file limit to its hard limit, then makes max_connections
  // fit in it: clamped with a message, or refused when nothing fits, so that
  // clients get 503 at the limit instead of hanging on a full descriptor
  // table, and database reads never fail with "Too many open files".
  void reconcile_file_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    if (limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      setrlimit(RLIMIT_NOFILE, &limit);
      getrlimit(RLIMIT_NOFILE, &limit);
    }
    if (limit.rlim_cur == RLIM_INFINITY) return;
    const auto files = static_cast<std::int64_t>(limit.rlim_cur);
    const std::int64_t reserved = reserved_descriptors();
    const std::int64_t room = files - reserved;
    if (room < 8) {
      throw Error(Code::refused,
                  fmt::format("the open-file limit (ulimit -n {}) leaves no room for connections "
                              "beside {} descriptors for the database and the server: raise it "
                              "to at least {}",
                              files, reserved, reserved + 8));
    }
    if (config_.limits.max_connections > room) {
      log_(
          fmt::format("serve.limits.max_connections: {} does not fit in the open-file limit "
                      "(ulimit -n {}, {} kept for the database and the server): serving at "
                      "most {} connections",
                      config_.limits.max_connections, files, reserved, room));
      config_.limits.max_connections = room;
      connections_.set_max_connections(room);
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
    connections_.cancel_idle();
    hub_.wake_all();
    asio::co_spawn(
        ioc_,
        [this]() -> awaitable<void> {
          asio::steady_timer timer(ioc_);
          const auto until =
              std::chrono::steady_clock::now() + std::chrono::seconds(config_.limits.drain_seconds);
          while (connections_.open() > 0 && std::chrono::steady_clock::now() < until) {
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
      boost::system::error_code peer_error;
      const auto peer = socket.remote_endpoint(peer_error);
      if (peer_error) continue;  // gone already
      const std::string address = Connections::canonical(peer.address().to_string());
      const auto admission = connections_.admit(address);
      if (admission != Connections::Admission::admit) {
        ++metrics_.connections_refused;
        // A few refusals are written at a time; beyond them, closed unanswered.
        if (refusing_ < kMaxRefusing) {
          asio::co_spawn(
              ioc_,
              refuse(std::move(socket), admission == Connections::Admission::refuse_client
                                            ? "too_many_connections_from_client"
                                            : "too_many_connections"),
              asio::detached);
        }
        continue;
      }
      asio::co_spawn(
          ioc_, session(beast::tcp_stream(std::move(socket)), address, connections_.lease(address)),
          asio::detached);
    }
  }

  // At the connection limit: 503 and close, without reading the request.
  static constexpr std::int64_t kMaxRefusing = 8;

  awaitable<void> refuse(tcp::socket socket, std::string code) {
    ++refusing_;
    const Refusing refusing(refusing_);
    beast::tcp_stream stream(std::move(socket));
    Response res{http::status::service_unavailable, 11};
    res.set(http::field::retry_after, "1");
    res.set(http::field::content_type, "application/json");
    res.body() = fmt::format(R"({{"error":"{}"}})", code);
    res.keep_alive(false);
    answers_.decorate(Request{}, res);
    res.prepare_payload();
    stream.expires_after(std::chrono::seconds(5));
    boost::system::error_code ec;
    co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
  }

  awaitable<void> session(beast::tcp_stream stream, std::string peer, Connections::Lease lease) {
    // (`lease` counts the connection against its client while it lives.)
    const Connections::Lease held = std::move(lease);
    connections_.opened();
    ++metrics_.connections;
    beast::flat_buffer buffer;
    const auto& limits = config_.limits;
    bool first = true;
    try {
      while (!stopping_) {
        http::request_parser<http::empty_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(limits.max_request_bytes));
        // Only the head is read: no request here has a body, and a write
        // (which would) is answered 405 without reading it.
        parser.body_limit(std::numeric_limits<std::uint64_t>::max());
        boost::system::error_code ec;
        {
          // Idle until a request begins (a new connection: at most
          // request_head_seconds; between requests: idle_timeout_seconds),
          // then the whole head within request_head_seconds. Meanwhile the
          // connection may be taken to make room.
          const Connections::Idle idle(connections_, stream);
          if (buffer.size() == 0) {
            stream.expires_after(std::chrono::seconds(first ? limits.request_head_seconds
                                                            : limits.idle_timeout_seconds));
            const std::size_t n = co_await stream.async_read_some(
                buffer.prepare(4096), asio::redirect_error(use_awaitable, ec));
            buffer.commit(n);
          }
          if (!ec && !idle.evicted()) {
            stream.expires_after(std::chrono::seconds(limits.request_head_seconds));
            co_await http::async_read_header(stream, buffer, parser,
                                             asio::redirect_error(use_awaitable, ec));
          }
          // Taken to make room after its read completed: it ends all the same.
          if (idle.evicted()) break;
        }
        first = false;
        if (ec == http::error::end_of_stream || ec == asio::error::eof ||
            ec == beast::error::timeout || ec == asio::error::connection_reset ||
            ec == asio::error::operation_aborted) {
          break;
        }
        if (ec) {
          const auto status = ec == http::error::header_limit
                                  ? http::status::request_header_fields_too_large
                                  : http::status::bad_request;
          {
            Response answer =
                answers_.error(Request{http::verb::get, "/", 11}, status, "bad_request",
                               fmt::format("bad request: {}", ec.message()));
            co_await answers_.send(stream, answer, Keep::close);
          }
          break;
        }
        const bool has_body = !parser.is_done();
        Request req = parser.release();
        if (const auto problem = transfer_coding_problem(req)) {
          {
            Response answer = answers_.error(req, problem->first, "bad_request", problem->second);
            co_await answers_.send(stream, answer, Keep::close);
          }
          break;
        }
        // Behind a trusted proxy, the request counts against its client.
        bool over = false;
        // (The last X-Forwarded-For line: a proxy may add a line of its own.)
        std::string_view forwarded_for;
        for (const auto& field : req) {
          if (beast::iequals(field.name_string(), "X-Forwarded-For")) forwarded_for = field.value();
        }
        const Connections::Lease forwarded =
            connections_.lease_forwarded(peer, forwarded_for, over);
        if (over) {
          ++metrics_.connections_refused;
          {
            Response answer = answers_.refusal(req, {http::status::service_unavailable,
                                                     "too many connections from this client",
                                                     {{"Retry-After", "1"}}});
            co_await answers_.send(stream, answer, Keep::alive);
          }
          if (!req.keep_alive() || has_body) break;
          continue;
        }
        if (beast::websocket::is_upgrade(req)) {
          // A WebSocket keeps this loop waiting for its whole life: it holds
          // no read buffer of the loop's (its client sends nothing before the
          // upgrade's answer).
          buffer.consume(buffer.size());
          buffer.shrink_to_fit();
        }
        const Keep keep = co_await route(context_, stream, req);
        // A body left unread ends the connection.
        if (keep == Keep::close || !req.keep_alive() || has_body) break;
      }
    } catch (const std::exception& e) {
      // The client went away, or a write to it timed out: nothing to answer.
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    --metrics_.connections;
    connections_.closed();
  }

  ServeConfig config_;
  std::function<void(const std::string&)> log_;
  Metrics metrics_;
  Hub hub_;
  Auth auth_;
  Answers answers_;
  DbPool pool_;
  Streams streams_;
  Budget budget_;
  bool stopping_ = false;
  Context context_;
  Connections connections_;
  // Refusals being written (each holds a descriptor): a few at a time.
  std::int64_t refusing_ = 0;
  // Last but the acceptor: destroying it destroys the coroutine frames still
  // suspended (a drain that timed out), whose destructors use the members
  // above.
  asio::io_context ioc_{1};
  tcp::acceptor acceptor_;
};

}  // namespace

void run(const std::string& database_url, const ServeConfig& config,
         const std::function<void(const std::string&)>& log) {
  Server server(database_url, config, log);
  server.run();
}

}  // namespace oasync::serve
