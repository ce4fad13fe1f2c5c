// A clean world per integration test: a fresh database, dropped afterwards.
#pragma once

#include <memory>
#include <string>

#include <pqxx/pqxx>

namespace oasync::test {

// The server's admin connection, from OASYNC_DATABASE_URL. Throws (failing
// the test loudly) when it is not set: integration tests need a real Postgres.
std::string admin_url();

// `url` with its database name replaced (libpq parses the URL).
std::string with_dbname(const std::string& url, const std::string& dbname);

// A connection to `url` in UTF-8 and READ COMMITTED, as oasync asks of a
// caller's connection (apply_within, a borrowed Sink), and without timeouts,
// whatever the database's defaults.
std::unique_ptr<pqxx::connection> connect_as_caller(const std::string& url);

class TestDatabase {
 public:
  // Creates a database with a unique name: empty, migrated (the bundled
  // migrations), or migrated with schema/topics.yaml registered through the
  // real CLI.
  enum class Setup { empty, migrated, with_topics };
  // Afterwards, the settings in OASYNC_TEST_DATABASE_SETTINGS
  // ("name=value|name=value") become the database's defaults (ALTER
  // DATABASE ... SET), as an operator's would: the matrix of hostile
  // defaults in tests/CMakeLists.txt runs the core cases under them.
  explicit TestDatabase(Setup setup = Setup::with_topics);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }
  // connect_as_caller(url()).
  std::unique_ptr<pqxx::connection> connect() const;
  // Runs one SQL statement and returns the first column of the first row as
  // text ("" for no row or NULL).
  std::string scalar(const std::string& sql) const;

 private:
  void apply_operator_settings() const;

  std::string name_;
  std::string url_;
};

}  // namespace oasync::test
