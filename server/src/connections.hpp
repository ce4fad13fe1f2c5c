// The room connections take (the listener's bookkeeping, I/O thread only):
// how many are open, per client address, and which are idle: waiting for a
// request, or still receiving its head. At the limit, a new connection takes
// the place of the one idle longest; connections serving a response are
// never taken, so idle or unauthenticated clients cannot crowd out
// authenticated streams.
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/beast/core/tcp_stream.hpp>

namespace oasync::serve {

class Connections {
 public:
  Connections(std::int64_t max_connections, std::int64_t max_per_client,
              std::vector<std::string> trusted_proxies);

  // What to do with a new connection from `address`.
  enum class Admission { admit, refuse_full, refuse_client };
  // At the limit, takes the place of the connection idle longest (it is
  // cancelled: its read ends) when there is one.
  Admission admit(const std::string& address);

  // Counts a connection (or a proxied request) of `address` while it lives.
  class Lease {
   public:
    Lease() = default;
    Lease(Connections* owner, std::string address);
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    void release();
    Connections* owner_ = nullptr;
    std::string address_;
  };
  // (None for a trusted proxy: its requests count against their clients.)
  Lease lease(const std::string& address);
  // The canonical text of an address (IPv4-mapped IPv6 as IPv4), as peers
  // and trusted proxies are compared; `text` itself when it is none.
  static std::string canonical(const std::string& text);

  // A lease for a request from a trusted proxy, counted against the client
  // it names; an empty lease when the peer is no trusted proxy or names no
  // client. `over` is set when that client is at its limit (no lease then).
  Lease lease_forwarded(const std::string& peer, std::string_view forwarded_for, bool& over);

  // Marks `stream` idle while the returned handle lives: it may be cancelled
  // to make room, or at shutdown.
  class Idle {
   public:
    Idle(Connections& owner, boost::beast::tcp_stream& stream);
    ~Idle();
    Idle(const Idle&) = delete;
    Idle& operator=(const Idle&) = delete;

    // Whether it was taken to make room: its connection must end.
    bool evicted() const { return !listed_; }

   private:
    friend class Connections;
    Connections& owner_;
    boost::beast::tcp_stream& stream_;
    std::list<Idle*>::iterator at_;
    bool listed_ = true;
  };

  // Cancels every idle connection (shutdown).
  void cancel_idle();

  std::int64_t open() const { return open_; }
  std::int64_t max_connections() const { return max_connections_; }
  void set_max_connections(std::int64_t max) { max_connections_ = max; }
  // Counts an open connection while the handle lives.
  void opened() { ++open_; }
  void closed() { --open_; }

 private:
  bool trusted(const std::string& peer) const;

  std::int64_t max_connections_;
  std::int64_t max_per_client_;
  std::vector<std::string> trusted_proxies_;
  std::int64_t open_ = 0;
  std::unordered_map<std::string, std::int64_t> per_client_;
  // Oldest first.
  std::list<Idle*> idle_;
};

}  // namespace oasync::serve
