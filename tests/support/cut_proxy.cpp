#include "cut_proxy.hpp"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace oasync::test {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    throw std::runtime_error(fmt::format(
        "{} is not set: the cut proxy needs the throwaway server of scripts/with-postgres", name));
  }
  return v;
}

bool send_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

std::uint32_t read32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) | (std::uint32_t{u[2]} << 8) |
         u[3];
}

}  // namespace

struct CutProxy::Impl {
  std::string socket_path;
  int listener = -1;
  int port = 0;
  std::atomic<bool> stop{false};
  std::atomic<bool> released{false};
  std::atomic<int> fired{0};
  std::atomic<int> accepted{0};
  std::atomic<int> generation{0};  // cut_all() counts it up
  std::mutex mutex;
  std::deque<Cut> armed;  // fired front first
  std::vector<std::thread> threads;
  std::thread acceptor;

  // Takes the armed cut if `message` (type, body) matches it.
  std::optional<Cut> take(Direction direction, char type, std::string_view body) {
    std::lock_guard lock(mutex);
    if (armed.empty()) return std::nullopt;
    const Cut& next = armed.front();
    if (next.direction != direction || (next.type != '\0' && next.type != type) ||
        body.find(next.contains) == std::string_view::npos) {
      return std::nullopt;
    }
    std::optional<Cut> cut = next;
    armed.pop_front();
    return cut;
  }

  void serve(int client) {
    const int server = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
    if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(client);
      if (server >= 0) ::close(server);
      return;
    }
    // Per direction: bytes read and not yet forwarded; the client's first
    // message (startup) has no type byte.
    std::string buffered[2];
    bool startup_done = false;
    bool stalled = false;
    bool cut = false;
    const int born = generation.load();
    const int from[2] = {client, server};
    const int to[2] = {server, client};
    while (!stop && !cut && generation.load() == born) {
      if (stalled) {
        if (released) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(fds, 2, 100) <= 0) continue;
      bool closed = false;
      for (int d = 0; d < 2 && !cut && !stalled; ++d) {
        if ((fds[d].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        char chunk[65536];
        const ssize_t n = ::recv(from[d], chunk, sizeof(chunk), 0);
        if (n <= 0) {
          closed = true;
          break;
        }
        std::string& buf = buffered[d];
        buf.append(chunk, static_cast<std::size_t>(n));
        // Forward every whole message, checking each against the cut.
        std::size_t at = 0;
        for (;;) {
          const bool untyped = d == 0 && !startup_done;
          const std::size_t header = untyped ? 4 : 5;
          if (buf.size() - at < header) break;
          const std::uint32_t length = read32(buf.data() + at + (untyped ? 0 : 1));
          const std::size_t whole = (untyped ? 0 : 1) + length;
          if (length < 4 || buf.size() - at < whole) break;
          const char type = untyped ? '\0' : buf[at];
          const std::string_view body(buf.data() + at + header, whole - header);
          std::optional<Cut> hit;
          if (!untyped)
            hit = take(d == 0 ? Direction::to_server : Direction::to_client, type, body);
          if (untyped) {
            // An SSL or GSS request would be answered with one byte; the
            // proxy's connection strings disable both.
            startup_done = true;
          }
          if (hit) {
            ++fired;
            if (hit->forward == Forward::yes) send_all(to[d], buf.data() + at, whole);
            if (hit->action == Action::close) {
              cut = true;
            } else {
              stalled = true;
            }
            break;
          }
          if (!send_all(to[d], buf.data() + at, whole)) {
            closed = true;
            break;
          }
          at += whole;
        }
        buf.erase(0, at);
        if (closed) break;
      }
      if (closed) break;
    }
    ::shutdown(client, SHUT_RDWR);
    ::shutdown(server, SHUT_RDWR);
    ::close(client);
    ::close(server);
  }
};

CutProxy::CutProxy() : impl_(std::make_unique<Impl>()) {
  impl_->socket_path = fmt::format("{}/.s.PGSQL.{}", env("OASYNC_PG_HOST"), env("OASYNC_PG_PORT"));
  impl_->listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t size = sizeof(addr);
  if (impl_->listener < 0 ||
      ::bind(impl_->listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(impl_->listener, 64) != 0 ||
      ::getsockname(impl_->listener, reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
    throw std::runtime_error(fmt::format("cut proxy: cannot listen: {}", std::strerror(errno)));
  }
  impl_->port = ntohs(addr.sin_port);
  impl_->acceptor = std::thread([impl = impl_.get()] {
    while (!impl->stop) {
      pollfd fd{impl->listener, POLLIN, 0};
      if (::poll(&fd, 1, 100) <= 0) continue;
      const int client = ::accept(impl->listener, nullptr, nullptr);
      if (client < 0) continue;
      ++impl->accepted;
      std::lock_guard lock(impl->mutex);
      impl->threads.emplace_back([impl, client] { impl->serve(client); });
    }
  });
}

CutProxy::~CutProxy() {
  impl_->stop = true;
  impl_->acceptor.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(impl_->mutex);
    threads.swap(impl_->threads);
  }
  for (std::thread& t : threads) t.join();
  ::close(impl_->listener);
}

std::string CutProxy::url(const std::string& dbname) const {
  // The test server's user, from its URL.
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(env("OASYNC_DATABASE_URL").c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    throw std::runtime_error("cut proxy: cannot parse OASYNC_DATABASE_URL");
  }
  std::string user;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (std::string(o->keyword) == "user" && o->val != nullptr) user = o->val;
  }
  PQconninfoFree(options);
  return fmt::format("host=127.0.0.1 port={} dbname='{}'{} sslmode=disable gssencmode=disable",
                     port(), dbname, user.empty() ? "" : fmt::format(" user='{}'", user));
}

int CutProxy::port() const {
  return impl_->port;
}

void CutProxy::arm(const Cut& cut) {
  std::lock_guard lock(impl_->mutex);
  impl_->armed.assign(1, cut);
  impl_->released = false;
}

void CutProxy::then(const Cut& cut) {
  std::lock_guard lock(impl_->mutex);
  impl_->armed.push_back(cut);
}

int CutProxy::connections() const {
  return impl_->accepted.load();
}

int CutProxy::fired() const {
  return impl_->fired.load();
}

void CutProxy::release() {
  impl_->released = true;
}

void CutProxy::cut_all() {
  ++impl_->generation;
}

std::string dbname_of(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    throw std::runtime_error("cannot parse the connection string " + url);
  }
  std::string name;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (std::string(o->keyword) == "dbname" && o->val != nullptr) name = o->val;
  }
  PQconninfoFree(options);
  return name;
}

}  // namespace oasync::test
