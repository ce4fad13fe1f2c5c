#include "db_pool.hpp"

#include <pqxx/pqxx>

#include "oasync/connection.hpp"

namespace oasync::serve {
namespace {

struct Session {
  const DbPool* owner = nullptr;
  std::unique_ptr<pqxx::connection> conn;
  std::unique_ptr<Reader> reader;
};
thread_local Session tl_session;

}  // namespace

DbPool::DbPool(std::string database_url, int threads, std::int64_t queue)
    : database_url_(std::move(database_url)), queue_(queue), pool_(threads) {}

DbPool::~DbPool() {
  pool_.join();
}

Reader& DbPool::reader() {
  Session& s = tl_session;
  if (s.owner != this || !s.conn || !s.conn->is_open()) {
    s.reader.reset();
    s.conn = connect(database_url_);
    s.reader = std::make_unique<Reader>(*s.conn);
    s.owner = this;
  }
  return *s.reader;
}

void DbPool::forget() {
  tl_session.reader.reset();
  tl_session.conn.reset();
  tl_session.owner = nullptr;
}

}  // namespace oasync::serve
