#include "swarm.hpp"

#include <mutex>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace oasync::bench {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

struct Swarm::Impl {
  asio::io_context ioc{1};
  int port = 0;
  std::vector<std::string> targets;
  const Commits& commits;
  std::vector<std::shared_ptr<tcp::socket>> sockets;
  std::mutex mutex;
  // Each delivery: the write's seq, and when it arrived. A delivery may come
  // before the writer heard the commit: its delay counts as 0.
  std::vector<std::pair<std::size_t, std::int64_t>> arrivals;
  std::thread thread;

  Impl(int p, std::vector<std::string> t, const Commits& c)
      : port(p), targets(std::move(t)), commits(c) {}
};

Swarm::Swarm(int port, std::vector<std::string> targets, const Commits& commits)
    : impl_(std::make_unique<Impl>(port, std::move(targets), commits)) {}

Swarm::~Swarm() {
  stop();
}

namespace {

// Scans `data` for "seq":N and reports each N.
template <typename Fn>
void each_seq(std::string_view data, std::string& carry, Fn&& fn) {
  carry.append(data);
  std::size_t at = 0;
  for (;;) {
    const std::size_t found = carry.find("\"seq\":", at);
    if (found == std::string::npos) break;
    std::size_t i = found + 6;
    std::size_t n = 0;
    bool digits = false;
    while (i < carry.size() && carry[i] >= '0' && carry[i] <= '9') {
      n = n * 10 + static_cast<std::size_t>(carry[i] - '0');
      ++i;
      digits = true;
    }
    if (i == carry.size()) {  // the number may go on in the next read
      at = found;
      carry.erase(0, at);
      return;
    }
    if (digits) fn(n);
    at = i;
  }
  // Keep a tail that may hold the start of a "seq": split across reads.
  carry.erase(0, carry.size() > 8 ? carry.size() - 8 : 0);
}

}  // namespace

void Swarm::start(std::chrono::seconds timeout) {
  Impl& m = *impl_;
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"),
                               static_cast<unsigned short>(m.port));
  for (const std::string& target : m.targets) {
    auto socket = std::make_shared<tcp::socket>(m.ioc);
    m.sockets.push_back(socket);
    asio::co_spawn(
        m.ioc,
        [this, socket, endpoint, target]() -> awaitable<void> {
          Impl& m = *impl_;
          boost::system::error_code ec;
          const std::string request =
              "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
          std::string head;
          // As a real client would, it tries again when the connection is
          // refused or reset (10,000 at once overflow the listen backlog).
          for (int attempt = 0;; ++attempt) {
            head.clear();
            co_await socket->async_connect(endpoint, asio::redirect_error(use_awaitable, ec));
            if (!ec) {
              co_await asio::async_write(*socket, asio::buffer(request),
                                         asio::redirect_error(use_awaitable, ec));
            }
            if (!ec) {
              co_await asio::async_read_until(*socket, asio::dynamic_buffer(head), "\r\n\r\n",
                                              asio::redirect_error(use_awaitable, ec));
            }
            if (!ec && head.rfind("HTTP/1.1 200", 0) == 0) break;
            if (attempt == 4) {
              ++failed_;
              co_return;
            }
            boost::system::error_code ignored;
            socket->close(ignored);
            asio::steady_timer pause(m.ioc, std::chrono::milliseconds(200 * (attempt + 1)));
            co_await pause.async_wait(asio::redirect_error(use_awaitable, ignored));
          }
          ++streaming_;
          std::string carry = head.substr(head.find("\r\n\r\n") + 4);
          std::vector<std::pair<std::size_t, std::int64_t>> local;  // seq, when it came
          char buffer[4096];
          const auto note = [&](std::size_t seq) {
            ++deliveries_;
            local.emplace_back(seq, Clock::now().time_since_epoch().count());
          };
          each_seq({}, carry, note);
          for (;;) {
            const std::size_t n = co_await socket->async_read_some(
                asio::buffer(buffer), asio::redirect_error(use_awaitable, ec));
            if (ec) break;
            each_seq(std::string_view(buffer, n), carry, note);
            if (local.size() >= 256) {
              std::lock_guard lock(m.mutex);
              m.arrivals.insert(m.arrivals.end(), local.begin(), local.end());
              local.clear();
            }
          }
          std::lock_guard lock(m.mutex);
          m.arrivals.insert(m.arrivals.end(), local.begin(), local.end());
        },
        asio::detached);
  }
  m.thread = std::thread([this] { impl_->ioc.run(); });
  const auto until = Clock::now() + timeout;
  while (streaming_ + failed_ < static_cast<std::int64_t>(m.targets.size()) &&
         Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Swarm::stop() {
  Impl& m = *impl_;
  if (!m.thread.joinable()) return;
  asio::post(m.ioc, [&m] {
    for (auto& s : m.sockets) {
      boost::system::error_code ignored;
      s->close(ignored);
    }
  });
  m.thread.join();
}

std::vector<double> Swarm::latencies_ms() const {
  std::lock_guard lock(impl_->mutex);
  std::vector<double> out;
  out.reserve(impl_->arrivals.size());
  for (const auto& [seq, at] : impl_->arrivals) {
    const std::int64_t committed = impl_->commits.at(seq);
    out.push_back(committed == 0 ? 0
                                 : std::max<double>(0, static_cast<double>(at - committed) / 1e6));
  }
  return out;
}

}  // namespace oasync::bench
