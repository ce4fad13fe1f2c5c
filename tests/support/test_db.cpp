#include "test_db.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

#include "oasync/migrate.hpp"
#include "process.hpp"

namespace oasync::test {

std::string admin_url() {
  const char* url = std::getenv("OASYNC_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    throw std::runtime_error(
        "OASYNC_DATABASE_URL is not set: integration tests need a real PostgreSQL. Run them "
        "through scripts/test, which starts a throwaway one.");
  }
  return url;
}

std::string with_dbname(const std::string& url, const std::string& dbname) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    std::string message = error ? error : "unparsable";
    PQfreemem(error);
    throw std::runtime_error("cannot parse OASYNC_DATABASE_URL: " + message);
  }
  std::string out;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    std::string value;
    if (std::string(o->keyword) == "dbname") {
      value = dbname;
    } else if (o->val != nullptr && *o->val != '\0') {
      value = o->val;
    } else {
      continue;
    }
    std::string quoted;
    for (char c : value) {
      if (c == '\\' || c == '\'') quoted.push_back('\\');
      quoted.push_back(c);
    }
    out += fmt::format("{}='{}' ", o->keyword, quoted);
  }
  PQconninfoFree(options);
  return out;
}

TestDatabase::TestDatabase(Setup setup) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  name_ = fmt::format("oasync_test_{}_{}_{:x}", getpid(), counter++, rd());
  {
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + tx.quote_name(name_) + " TEMPLATE template0");
  }
  url_ = with_dbname(admin_url(), name_);
  if (setup == Setup::empty) return;
  auto conn = connect();
  migrate(*conn, bundled_migrations());
  if (setup == Setup::with_topics) {
    const auto r = run_oasync(
        {"--database-url", url_, "topics", "apply", source_dir() + "/schema/topics.yaml"});
    if (r.exit_code != 0) throw std::runtime_error("topics apply failed: " + r.err);
  }
  apply_operator_settings();
}

void TestDatabase::apply_operator_settings() const {
  const char* settings = std::getenv("OASYNC_TEST_DATABASE_SETTINGS");
  if (settings == nullptr || *settings == '\0') return;
  pqxx::connection admin(admin_url());
  pqxx::nontransaction tx(admin);
  std::string_view rest = settings;
  while (!rest.empty()) {
    const std::size_t bar = std::min(rest.find('|'), rest.size());
    const std::string_view item = rest.substr(0, bar);
    rest.remove_prefix(std::min(bar + 1, rest.size()));
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      throw std::runtime_error(fmt::format(
          "OASYNC_TEST_DATABASE_SETTINGS: \"{}\" is not name=value", std::string(item)));
    }
    tx.exec(fmt::format("ALTER DATABASE {} SET {} = {}", tx.quote_name(name_),
                        std::string(item.substr(0, eq)),
                        tx.quote(std::string(item.substr(eq + 1)))));
  }
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection admin(admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name_) + " WITH (FORCE)");
  } catch (...) {
    // A leftover database in a throwaway cluster is harmless.
  }
}

std::unique_ptr<pqxx::connection> connect_as_caller(const std::string& url) {
  // A caller that sets up its connection as oasync's documentation asks
  // (UTF-8, READ COMMITTED), whatever defaults the database was given; and a
  // test's own setup and checks never time out.
  auto conn = std::make_unique<pqxx::connection>(url);
  pqxx::nontransaction tx(*conn);
  tx.exec(
      "SET client_encoding = 'UTF8'; SET default_transaction_isolation = 'read committed'; "
      "SET statement_timeout = 0; SET lock_timeout = 0; "
      "SET idle_in_transaction_session_timeout = 0");
  tx.commit();
  return conn;
}

std::unique_ptr<pqxx::connection> TestDatabase::connect() const {
  return connect_as_caller(url_);
}

std::string TestDatabase::scalar(const std::string& sql) const {
  auto conn = connect();
  pqxx::nontransaction tx(*conn);
  const auto r = tx.exec(sql);
  if (r.empty() || r[0][0].is_null()) return "";
  return r[0][0].as<std::string>();
}

}  // namespace oasync::test
