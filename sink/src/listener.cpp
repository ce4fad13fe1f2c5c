#include "oasync/listener.hpp"

#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/options.hpp"

namespace oasync {
namespace {

// Only whether a notification came matters, not its payload.
class Receiver : public pqxx::notification_receiver {
 public:
  explicit Receiver(pqxx::connection_base& conn) : notification_receiver(conn, kNotifyChannel) {}
  void operator()(const std::string&, int) override {}
};

}  // namespace

struct CommitListener::Impl {
  pqxx::connection_base& conn;
  Receiver receiver;
  explicit Impl(pqxx::connection_base& c) : conn(c), receiver(c) {}
};

CommitListener::CommitListener(pqxx::connection_base& connection)
    : impl_(internal::db_step("listen for commits",
                              [&] { return std::make_unique<Impl>(connection); })) {}

CommitListener::~CommitListener() = default;

bool CommitListener::wait(std::chrono::microseconds budget) {
  return internal::db_step("wait for commits", [&] {
    if (impl_->conn.get_notifs() > 0) return true;
    const auto us = budget.count() < 0 ? 0 : budget.count();
    return impl_->conn.await_notification(static_cast<long>(us / 1000000),
                                          static_cast<long>(us % 1000000)) > 0;
  });
}

}  // namespace oasync
