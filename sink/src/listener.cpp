#include "oasync/listener.hpp"

#include <thread>

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

const char* const kInRecoverySql = "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery";

bool in_recovery(pqxx::connection_base& conn) {
  pqxx::nontransaction tx(conn);
  return tx.exec1(kInRecoverySql)["in_recovery"].as<bool>();
}

}  // namespace

struct CommitListener::Impl {
  pqxx::connection_base& conn;
  // Set while LISTEN works; a hot standby cannot LISTEN (no notification
  // reaches it either), so there the listener only lets the budget pass.
  std::unique_ptr<Receiver> receiver;

  explicit Impl(pqxx::connection_base& c) : conn(c) { listen_unless_standby(); }

  void listen_unless_standby() {
    if (!in_recovery(conn)) receiver = std::make_unique<Receiver>(conn);
  }
};

CommitListener::CommitListener(pqxx::connection_base& connection)
    : impl_(internal::db_step("listen for commits",
                              [&] { return std::make_unique<Impl>(connection); })) {}

CommitListener::~CommitListener() = default;

bool CommitListener::listening() const noexcept {
  return impl_->receiver != nullptr;
}

bool CommitListener::wait(std::chrono::microseconds budget) {
  return internal::db_step("wait for commits", [&] {
    const auto us = budget.count() < 0 ? 0 : budget.count();
    if (!impl_->receiver) {
      std::this_thread::sleep_for(std::chrono::microseconds(us));
      // A promoted standby takes notifications from now on.
      impl_->listen_unless_standby();
      return false;
    }
    if (impl_->conn.get_notifs() > 0) return true;
    return impl_->conn.await_notification(static_cast<long>(us / 1000000),
                                          static_cast<long>(us % 1000000)) > 0;
  });
}

}  // namespace oasync
