// oasync serve's listener: Boost.Beast on one I/O thread, one coroutine per
// connection, which reads request heads and hands each to the router. It
// owns the server's pieces (context.hpp), the connection limit, and the
// draining shutdown. See serve.hpp for the surface, README for the details.
#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <limits>
#include <memory>
#include <set>

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

#include "answers.hpp"
#include "auth.hpp"
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
        context_{config_, log_, metrics_, hub_, pool_, streams_, auth_, answers_, stopping_},
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
    answers_.decorate(Request{}, res);
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
            Response answer =
                answers_.error(Request{http::verb::get, "/", 11}, status, "bad_request",
                               fmt::format("bad request: {}", ec.message()));
            co_await answers_.send(stream, answer, Keep::close);
          }
          break;
        }
        const bool has_body = !parser.is_done();
        Request req = parser.release();
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
  }

  ServeConfig config_;
  std::function<void(const std::string&)> log_;
  Metrics metrics_;
  Hub hub_;
  Auth auth_;
  Answers answers_;
  DbPool pool_;
  Streams streams_;
  bool stopping_ = false;
  Context context_;
  asio::io_context ioc_{1};
  tcp::acceptor acceptor_;
  // Connections waiting for their next request (I/O thread only).
  std::set<beast::tcp_stream*> idle_;
};

}  // namespace

void run(const std::string& database_url, const ServeConfig& config,
         const std::function<void(const std::string&)>& log) {
  Server server(database_url, config, log);
  server.run();
}

}  // namespace oasync::serve
