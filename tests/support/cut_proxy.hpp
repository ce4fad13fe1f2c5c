// A TCP proxy on 127.0.0.1 in front of the test server, for losing a
// connection at a chosen PostgreSQL protocol message: the proof that a lost
// COMMIT, a lost round trip and a stalled network are answered truthfully.
//
// It reads the protocol's framing (a type byte and a length; the client's
// startup packet has no type byte) and forwards whole messages. When a
// message matches the armed cut, the proxy cuts that connection once:
// closes it (before or after forwarding the message), or stalls it (forwards
// nothing more in either direction and keeps both sockets open, as a network
// black hole does) until release(). Connections after the cut pass through.
#pragma once

#include <atomic>
#include <memory>
#include <string>

namespace oasync::test {

class CutProxy {
 public:
  enum class Direction { to_server, to_client };
  // Whether the matched message passes before the cut.
  enum class Forward { no, yes };
  enum class Action { close, stall };
  struct Cut {
    Direction direction = Direction::to_client;
    // The message type ('C' CommandComplete, 'B' Bind, ...); '\0': any.
    char type = 'C';
    std::string contains;  // a substring of the message body ("COMMIT", a statement name)
    Forward forward = Forward::no;
    Action action = Action::close;
  };

  // Proxies to the test server (OASYNC_PG_HOST and OASYNC_PG_PORT, as
  // scripts/with-postgres exports them). Throws when they are missing.
  CutProxy();
  ~CutProxy();
  CutProxy(const CutProxy&) = delete;
  CutProxy& operator=(const CutProxy&) = delete;

  // A libpq connection string to `dbname` through the proxy.
  std::string url(const std::string& dbname) const;
  int port() const;

  // Arms one cut (instead of any not yet fired); the next matching message
  // of any connection fires it.
  void arm(const Cut& cut);
  // Arms another cut, to fire after the ones armed before it.
  void then(const Cut& cut);
  // How many armed cuts have fired.
  int fired() const;
  // How many connections it has accepted.
  int connections() const;
  // Closes every stalled connection.
  void release();
  // Cuts every open connection now (as a network that fails mid-wait).
  void cut_all();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The database name of a libpq connection string or URI.
std::string dbname_of(const std::string& url);

}  // namespace oasync::test
