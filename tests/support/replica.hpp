// A streaming replica of the test cluster (the one scripts/with-postgres
// started), for failover and hot-standby tests: pg_basebackup -R into a
// folder beside the primary's, started on a port of its own, unix socket only.
#pragma once

#include <string>

namespace oasync::test {

class Replica {
 public:
  // Whether the environment has a cluster this test may copy (else the test
  // reports itself skipped: an existing server is never touched).
  static bool available();

  // Takes a base backup of the primary and starts the standby. Throws
  // std::runtime_error with the server's log on failure.
  Replica();
  // Stops the standby (immediately) and removes its folder.
  ~Replica();
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // A connection string to database `dbname` on the replica.
  std::string url(const std::string& dbname) const;
  // Waits until the replica has replayed everything the primary has written
  // so far (up to 30 s; throws otherwise).
  void catch_up() const;
  // Stops its WAL receiver for good (primary_conninfo = '' and a reload):
  // whatever the primary writes from now on is lost to it.
  void cut();
  // Promotes it to a primary of its own, on a new timeline.
  void promote();

 private:
  std::string dir_;
  std::string host_;
  int port_ = 0;
};

}  // namespace oasync::test
