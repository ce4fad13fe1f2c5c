// oasync::CommitListener: waiting for the sink's commits, which it announces
// on channel kNotifyChannel (see options.hpp) when they commit.
//
// A notification is only a hint to read now: a follower still reads from its
// cursor, and still polls now and then, because a notification can be missed
// (a reconnect) or never sent (Notify::off). On a hot standby, which can
// neither LISTEN nor receive notifications, the listener does not listen:
// wait() lets its budget pass (the follower polls), and starts listening once
// the standby is promoted.
#pragma once

#include <chrono>
#include <memory>

#include <pqxx/connection_base>

namespace oasync {

class CommitListener {
 public:
  // Listens on `connection`, which must outlive the listener. Throws
  // oasync::Error (database, retryable) when the connection fails.
  explicit CommitListener(pqxx::connection_base& connection);
  ~CommitListener();

  CommitListener(const CommitListener&) = delete;
  CommitListener& operator=(const CommitListener&) = delete;

  // Waits until a commit is announced or `budget` has passed, and returns
  // whether one was. Throws oasync::Error (database, retryable) when the
  // connection is lost.
  bool wait(std::chrono::microseconds budget);

  // False on a hot standby: no notification will come; poll.
  bool listening() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace oasync
