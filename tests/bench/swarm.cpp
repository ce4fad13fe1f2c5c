#include "swarm.hpp"

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <mutex>
#include <optional>
#include <string_view>

#include <fmt/format.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "tokens.hpp"

namespace oasync::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

namespace {

// One client's connection and timers; stop() closes them from the swarm's
// thread, which ends the client's coroutines.
struct Connection {
  explicit Connection(asio::io_context& ioc) : socket(ioc), pause(ioc), heartbeat(ioc) {}
  tcp::socket socket;                                // SSE
  std::optional<websocket::stream<tcp::socket>> ws;  // WebSocket (new for each attempt)
  asio::steady_timer pause;                          // between attempts
  asio::steady_timer heartbeat;                      // a socket's phoenix heartbeat
  bool done = false;                                 // its reading has ended

  void close() {
    done = true;
    boost::system::error_code ignored;
    socket.close(ignored);
    if (ws) ws->next_layer().close(ignored);
    pause.cancel();
    heartbeat.cancel();
  }
};

// The digits at `i` of `text` as a number, `i` moved past them; false when
// there are none.
bool read_number(std::string_view text, std::size_t& i, std::size_t& n) {
  const std::size_t from = i;
  n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    n = n * 10 + static_cast<std::size_t>(text[i] - '0');
    ++i;
  }
  return i > from;
}

constexpr std::string_view kSeq = "\"seq\":";

// Scans a stream's `data` for "seq":N and reports each N; `carry` keeps what
// may go on in the next read.
template <typename Fn>
void each_seq(std::string_view data, std::string& carry, Fn&& fn) {
  carry.append(data);
  std::size_t at = 0;
  for (;;) {
    const std::size_t found = carry.find(kSeq, at);
    if (found == std::string::npos) break;
    std::size_t i = found + kSeq.size();
    std::size_t n = 0;
    const bool digits = read_number(carry, i, n);
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

// The "seq" of a whole payload.
std::optional<std::size_t> seq_of(std::string_view payload) {
  const std::size_t found = payload.find(kSeq);
  if (found == std::string_view::npos) return std::nullopt;
  std::size_t i = found + kSeq.size();
  std::size_t n = 0;
  if (!read_number(payload, i, n)) return std::nullopt;
  return n;
}

// --- Just enough protobuf to find the updates of a push ----------------------

bool read_varint(std::string_view b, std::size_t& at, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && at < b.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(b[at++]);
    v |= std::uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80u) == 0) return true;
  }
  return false;
}

// Calls fn(field number, bytes) for each length-delimited field of the
// message `m`, and skips the others. Stops at anything malformed.
template <typename Fn>
void each_bytes_field(std::string_view m, Fn&& fn) {
  std::size_t at = 0;
  while (at < m.size()) {
    std::uint64_t key = 0, v = 0;
    if (!read_varint(m, at, key)) return;
    switch (key & 7) {
      case 0:
        if (!read_varint(m, at, v)) return;
        break;
      case 1:
        at += 8;
        break;
      case 5:
        at += 4;
        break;
      case 2:
        if (!read_varint(m, at, v) || v > m.size() - at) return;
        fn(key >> 3, m.substr(at, v));
        at += v;
        break;
      default:
        return;
    }
  }
}

// The payload of each Update in a ServerMessage of sync.proto:
// ServerMessage.batch (8) -> Batch.messages (1) -> ServerMessage.update (2)
// -> Update.payload (4). Snapshot docs (ServerMessage.doc), errors and
// heartbeats are passed over.
template <typename Fn>
void each_update_payload(std::string_view server_message, Fn&& fn) {
  each_bytes_field(server_message, [&](std::uint64_t field, std::string_view batch) {
    if (field != 8) return;
    each_bytes_field(batch, [&](std::uint64_t field, std::string_view message) {
      if (field != 1) return;
      each_bytes_field(message, [&](std::uint64_t field, std::string_view update) {
        if (field != 2) return;
        each_bytes_field(update, [&](std::uint64_t field, std::string_view payload) {
          if (field == 4) fn(payload);
        });
      });
    });
  });
}

// The payload of a Phoenix V2 binary push, [0][len join_ref][len topic]
// [len event] join_ref topic event payload, when its event is `event`.
std::optional<std::string_view> push_payload(std::string_view frame, std::string_view event) {
  if (frame.size() < 4 || frame[0] != 0) return std::nullopt;
  const auto length = [&](int i) {
    return static_cast<std::size_t>(static_cast<unsigned char>(frame[i]));
  };
  const std::size_t head = 4 + length(1) + length(2) + length(3);
  if (frame.size() < head || frame.substr(4 + length(1) + length(2), length(3)) != event) {
    return std::nullopt;
  }
  return frame.substr(head);
}

// A phx_reply to the client's push `ref`: its status, and the reason of a
// refusal.
struct Reply {
  std::string status;
  std::string reason;
};
std::optional<Reply> reply_to(std::string_view text, const std::string& ref) {
  const auto f = nlohmann::json::parse(text, nullptr, false);
  const auto is = [&](std::size_t i, std::string_view want) {
    return f[i].is_string() && f[i].get_ref<const std::string&>() == want;
  };
  if (!f.is_array() || f.size() != 5 || !is(1, ref) || !is(3, "phx_reply") || !f[4].is_object()) {
    return std::nullopt;
  }
  Reply r{f[4].value("status", ""), ""};
  if (const auto response = f[4].find("response");
      response != f[4].end() && response->is_object()) {
    r.reason = response->value("reason", "");
  }
  return r;
}

// phoenix.js's delays before it joins again after a refused join.
std::chrono::milliseconds rejoin_delay(int attempt) {
  constexpr int steps[] = {1000, 2000, 5000};
  return std::chrono::milliseconds(attempt < 3 ? steps[attempt] : 10000);
}

constexpr int kAttempts = 5;  // connections per client, and joins per channel

}  // namespace

struct Swarm::Impl {
  Swarm& owner;
  int port = 0;
  Transport transport;
  std::vector<Client> clients;
  const Commits& commits;
  tcp::endpoint endpoint;
  std::mutex mutex;
  // Each delivery: the write's seq, and when it arrived. A delivery may come
  // before the writer heard the commit: its delay counts as 0.
  std::vector<std::pair<std::size_t, std::int64_t>> arrivals;
  // (After the arrivals: a client's coroutine destroyed with it hands its
  // last ones over.)
  asio::io_context ioc{1};
  // Keeps the thread running until stop(), when every client has ended too
  // (its CPU time is read until then).
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::shared_ptr<Connection>> connections;
  bool stopping = false;  // (on the swarm's thread)
  std::thread thread;

  Impl(Swarm& s, int p, Transport t, std::vector<Client> c, const Commits& commits)
      : owner(s),
        port(p),
        transport(t),
        clients(std::move(c)),
        commits(commits),
        endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(p)) {}

  // One client's deliveries, counted at once and handed to `arrivals` in
  // bunches (a lock per 256).
  class Pending {
   public:
    explicit Pending(Impl& impl) : impl_(impl) {}
    ~Pending() { flush(); }
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    void note(std::size_t seq, std::int64_t at) {
      ++impl_.owner.deliveries_;
      items_.emplace_back(seq, at);
      if (items_.size() >= 256) flush();
    }
    void flush() {
      std::lock_guard lock(impl_.mutex);
      impl_.arrivals.insert(impl_.arrivals.end(), items_.begin(), items_.end());
      items_.clear();
    }

   private:
    Impl& impl_;
    std::vector<std::pair<std::size_t, std::int64_t>> items_;
  };

  static std::int64_t now() { return Clock::now().time_since_epoch().count(); }

  // Waits before attempt `attempt + 1`, counted in `retries`; false when
  // there is none (or the swarm stops).
  awaitable<bool> again(Connection& c, int attempt, std::chrono::milliseconds delay,
                        std::atomic<std::int64_t>& retries) {
    if (attempt + 1 >= kAttempts || stopping) co_return false;
    ++retries;
    c.pause.expires_after(delay);
    boost::system::error_code ignored;
    co_await c.pause.async_wait(asio::redirect_error(use_awaitable, ignored));
    co_return !stopping;
  }

  awaitable<void> stream_client(std::shared_ptr<Connection> c, const Client& client) {
    tcp::socket& socket = c->socket;
    boost::system::error_code ec;
    const std::string request = "GET " + client.target +
                                " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
    std::string head;
    // As a real client would, it tries again when the connection is refused
    // or reset (10,000 at once overflow the listen backlog).
    for (int attempt = 0;; ++attempt) {
      head.clear();
      co_await socket.async_connect(endpoint, asio::redirect_error(use_awaitable, ec));
      if (!ec) {
        co_await asio::async_write(socket, asio::buffer(request),
                                   asio::redirect_error(use_awaitable, ec));
      }
      if (!ec) {
        co_await asio::async_read_until(socket, asio::dynamic_buffer(head), "\r\n\r\n",
                                        asio::redirect_error(use_awaitable, ec));
      }
      if (!ec && head.rfind("HTTP/1.1 200", 0) == 0) break;
      boost::system::error_code ignored;
      socket.close(ignored);
      if (!co_await again(*c, attempt, std::chrono::milliseconds(200 * (attempt + 1)),
                          owner.reconnects_)) {
        ++owner.failed_;
        co_return;
      }
    }
    ++owner.streaming_;
    std::string carry = head.substr(head.find("\r\n\r\n") + 4);
    Pending pending(*this);
    const auto note = [&](std::size_t seq) { pending.note(seq, now()); };
    char buffer[4096];
    each_seq({}, carry, note);
    for (;;) {
      const std::size_t n = co_await socket.async_read_some(
          asio::buffer(buffer), asio::redirect_error(use_awaitable, ec));
      if (ec) break;
      each_seq(std::string_view(buffer, n), carry, note);
    }
    if (!stopping) ++owner.ended_;
  }

  // Counts the updates of a frame from the server, and returns the reply to
  // `awaited` (a push's ref) if the frame is that.
  std::optional<Reply> on_frame(bool binary, const beast::flat_buffer& buffer, Pending& pending,
                                const std::string& awaited) {
    const std::string_view frame(static_cast<const char*>(buffer.data().data()), buffer.size());
    if (binary) {
      if (const auto payload = push_payload(frame, "batch")) {
        const std::int64_t at = now();
        each_update_payload(*payload, [&](std::string_view doc) {
          if (const auto seq = seq_of(doc)) pending.note(*seq, at);
        });
      }
      return std::nullopt;
    }
    // Text: replies, phx_close, a disconnect notice; only an awaited reply
    // matters.
    if (awaited.empty()) return std::nullopt;
    return reply_to(frame, awaited);
  }

  awaitable<void> socket_client(std::shared_ptr<Connection> c, const Client& client) {
    boost::system::error_code ec;
    const std::string protocols =
        "phoenix, base64url.bearer.phx." + test::base64_unpadded(client.token);
    const std::string host = fmt::format("127.0.0.1:{}", port);
    for (int attempt = 0;; ++attempt) {
      auto& ws = c->ws.emplace(ioc);
      ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
      ws.set_option(websocket::stream_base::decorator([protocols](websocket::request_type& r) {
        r.set(beast::http::field::sec_websocket_protocol, protocols);
      }));
      co_await ws.next_layer().async_connect(endpoint, asio::redirect_error(use_awaitable, ec));
      if (!ec) {
        co_await ws.async_handshake(host, client.target, asio::redirect_error(use_awaitable, ec));
      }
      if (!ec) break;
      boost::system::error_code ignored;
      ws.next_layer().close(ignored);
      if (!co_await again(*c, attempt, std::chrono::milliseconds(200 * (attempt + 1)),
                          owner.reconnects_)) {
        ++owner.failed_;
        co_return;
      }
    }
    websocket::stream<tcp::socket>& ws = *c->ws;
    beast::flat_buffer buffer;
    Pending pending(*this);
    int ref = 0;
    const auto fail = [&] {
      ++owner.failed_;
      c->close();
    };
    // The joins, one at a time: each waits for its reply (counting what the
    // channels joined before it push meanwhile), and one refused as
    // "unavailable" (the database queue is full) is tried again, as
    // phoenix.js does.
    for (const Join& channel : client.joins) {
      for (int attempt = 0;; ++attempt) {
        const std::string r = std::to_string(++ref);
        const std::string join = fmt::format(R"(["{0}","{0}","sync:v1:{1}","phx_join",{2}])", r,
                                             channel.topic, channel.params);
        ws.text(true);
        co_await ws.async_write(asio::buffer(join), asio::redirect_error(use_awaitable, ec));
        std::optional<Reply> reply;
        while (!ec && !reply) {
          co_await ws.async_read(buffer, asio::redirect_error(use_awaitable, ec));
          if (!ec) reply = on_frame(ws.got_binary(), buffer, pending, r);
          buffer.consume(buffer.size());
        }
        if (ec) {
          fail();
          co_return;
        }
        if (reply->status == "ok") break;
        if (reply->reason != "unavailable" ||
            !co_await again(*c, attempt, rejoin_delay(attempt), owner.rejoins_)) {
          fail();
          co_return;
        }
      }
    }
    ++owner.streaming_;
    asio::co_spawn(ioc, heartbeats(c, ref), asio::detached);
    const std::string none;
    for (;;) {
      co_await ws.async_read(buffer, asio::redirect_error(use_awaitable, ec));
      if (ec) break;
      on_frame(ws.got_binary(), buffer, pending, none);
      buffer.consume(buffer.size());
    }
    if (!stopping) ++owner.ended_;
    c->done = true;
    c->heartbeat.cancel();
  }

  // phoenix.js's heartbeat, every 30 s from the join (its reply is read and
  // passed over by the read loop).
  awaitable<void> heartbeats(std::shared_ptr<Connection> c, int ref) {
    boost::system::error_code ec;
    for (;;) {
      c->heartbeat.expires_after(std::chrono::seconds(30));
      co_await c->heartbeat.async_wait(asio::redirect_error(use_awaitable, ec));
      if (stopping || c->done) co_return;
      const std::string beat = fmt::format(R"([null,"{}","phoenix","heartbeat",{{}}])", ++ref);
      c->ws->text(true);
      co_await c->ws->async_write(asio::buffer(beat), asio::redirect_error(use_awaitable, ec));
      if (ec) co_return;
    }
  }
};

Swarm::Swarm(int port, Transport transport, std::vector<Client> clients, const Commits& commits)
    : impl_(std::make_unique<Impl>(*this, port, transport, std::move(clients), commits)) {}

Swarm::~Swarm() {
  stop();
}

void Swarm::start(std::chrono::seconds timeout) {
  Impl& m = *impl_;
  for (const Client& client : m.clients) {
    auto c = std::make_shared<Connection>(m.ioc);
    m.connections.push_back(c);
    asio::co_spawn(
        m.ioc,
        m.transport == Transport::sse ? m.stream_client(c, client) : m.socket_client(c, client),
        asio::detached);
  }
  m.work.emplace(m.ioc.get_executor());
  m.thread = std::thread([this] { impl_->ioc.run(); });
  const auto until = Clock::now() + timeout;
  while (streaming_ + failed_ < static_cast<std::int64_t>(m.clients.size()) &&
         Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Swarm::stop() {
  Impl& m = *impl_;
  if (!m.thread.joinable()) return;
  asio::post(m.ioc, [&m] {
    m.stopping = true;
    for (auto& c : m.connections) c->close();
    m.work.reset();
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

double Swarm::cpu_seconds() const {
  // (pthread_getcpuclockid needs the thread running: only between start and stop.)
  clockid_t id{};
  timespec t{};
  if (!impl_->thread.joinable() || pthread_getcpuclockid(impl_->thread.native_handle(), &id) != 0 ||
      clock_gettime(id, &t) != 0) {
    return 0;
  }
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

}  // namespace oasync::bench
