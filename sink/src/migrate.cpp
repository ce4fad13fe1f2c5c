#include "oasync/migrate.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

const char* const kBootstrapSql = R"SQL(
CREATE SCHEMA IF NOT EXISTS oasync;
CREATE TABLE IF NOT EXISTS oasync.schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    sha256      text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE oasync.schema_migrations IS
    'One row per applied migrations/NNNN_name.sql file, with the SHA-256 of its text.';
)SQL";

const char* const kMigrationsTableExistsSql =
    "SELECT to_regclass('oasync.schema_migrations') IS NOT NULL AS present";

const char* const kRecordedSql = R"SQL(
SELECT version, name, sha256, applied_at::text AS applied_at FROM oasync.schema_migrations
)SQL";

const char* const kRecordSql = R"SQL(
INSERT INTO oasync.schema_migrations (version, name, sha256) VALUES ($1, $2, $3)
)SQL";

const char* const kTryLockSql = "SELECT pg_catalog.pg_try_advisory_lock($1::bigint) AS taken";
const char* const kUnlockSql = "SELECT pg_catalog.pg_advisory_unlock($1::bigint)";

struct Recorded {
  std::string name;
  std::string sha256;
  std::string applied_at;
};

std::map<int, Recorded> recorded_migrations(pqxx::transaction_base& tx) {
  std::map<int, Recorded> out;
  if (!tx.exec1(kMigrationsTableExistsSql)["present"].as<bool>()) return out;
  for (const auto& row : tx.exec(kRecordedSql)) {
    out.emplace(row["version"].as<int>(),
                Recorded{row["name"].as<std::string>(), row["sha256"].as<std::string>(),
                         row["applied_at"].as<std::string>()});
  }
  return out;
}

void check_unique_versions(const std::vector<Migration>& migrations) {
  for (std::size_t i = 1; i < migrations.size(); ++i) {
    if (migrations[i].version == migrations[i - 1].version) {
      throw Error(Code::invalid_input,
                  fmt::format("migrations {} and {} share version {}", migrations[i - 1].name,
                              migrations[i].name, migrations[i].version));
    }
  }
}

// Takes the session advisory lock, and releases it even when migrating
// throws. A waiting migrator polls rather than blocks in pg_advisory_lock: a
// blocked statement holds a snapshot, and CREATE INDEX CONCURRENTLY in the
// holder's no-transaction migration waits for every older snapshot, so the
// two would deadlock.
class AdvisoryLock {
 public:
  explicit AdvisoryLock(pqxx::connection_base& conn) : conn_(conn) {
    auto pause = std::chrono::milliseconds(10);
    while (!internal::db_step("take the migration lock", [&] {
      pqxx::nontransaction tx(conn_);
      return tx.exec_params1(kTryLockSql, kMigrateLockKey)["taken"].as<bool>();
    })) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(500));
    }
  }
  ~AdvisoryLock() {
    try {
      pqxx::nontransaction tx(conn_);
      tx.exec_params(kUnlockSql, kMigrateLockKey);
    } catch (...) {
      // The lock dies with the session anyway.
    }
  }
  AdvisoryLock(const AdvisoryLock&) = delete;
  AdvisoryLock& operator=(const AdvisoryLock&) = delete;

 private:
  pqxx::connection_base& conn_;
};

// Invalid indexes of schema oasync: what a failed CREATE INDEX CONCURRENTLY
// leaves behind (the migration's, or an operator's being built by hand).
const char* const kInvalidIndexesSql = R"SQL(
SELECT c.relname AS index_name, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'oasync' AND NOT i.indisvalid
)SQL";

// The names of the indexes a migration's CREATE INDEX CONCURRENTLY
// statements create (unqualified: an index lives in its table's schema), as
// Postgres stores them: a plain name folded to lower case, a quoted one as
// written.
std::set<std::string> concurrent_index_names(const Migration& m) {
  static const std::regex create_re(
      R"(^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?)"
      R"(("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*))",
      std::regex::icase);
  static const std::regex comment_re(R"(--[^\n]*)");
  std::set<std::string> names;
  for (const SqlStatement& statement : split_sql(m.sql)) {
    const std::string code = std::regex_replace(statement.text, comment_re, "");
    std::smatch match;
    if (!std::regex_search(code, match, create_re)) continue;
    std::string name = match[1].str();
    if (name.front() == '"') {
      name = std::regex_replace(name.substr(1, name.size() - 2), std::regex("\"\""), "\"");
    } else {
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    }
    names.insert(std::move(name));
  }
  return names;
}

// Runs a no-transaction migration (see migrate.hpp) and records it.
void apply_outside_transaction(pqxx::connection_base& conn, const Migration& m) {
  // A failed earlier run may have left the migration's own indexes invalid:
  // IF NOT EXISTS would keep them so, so they go first. Only those: another
  // invalid index may be an operator's, built by hand at this moment.
  const std::set<std::string> own = concurrent_index_names(m);
  internal::db_step(fmt::format("{}: drop its invalid indexes", m.name), [&] {
    pqxx::nontransaction tx(conn);
    tx.exec("SET search_path = pg_catalog, pg_temp");
    for (const auto& row : tx.exec(kInvalidIndexesSql)) {
      if (!own.count(row["index_name"].as<std::string>())) continue;
      tx.exec("DROP INDEX CONCURRENTLY IF EXISTS " + row["name"].as<std::string>());
    }
  });
  for (const SqlStatement& statement : split_sql(m.sql)) {
    try {
      pqxx::nontransaction tx(conn);
      tx.exec(statement.text);
    } catch (...) {
      try {
        internal::rethrow_as_error(fmt::format("{}:{}", m.name, statement.line));
      } catch (const Error& e) {
        throw Error(e.code(),
                    fmt::format("{} ({} runs outside a transaction: the statements before this "
                                "one stay applied, and migrate starts the file over next time)",
                                e.what(), m.name),
                    e.retryable(), e.sqlstate(), e.statement());
      }
    }
  }
  internal::db_step(fmt::format("{}: record", m.name), [&] {
    pqxx::work tx(conn, "oasync_migrate_record");
    internal::pin_search_path(tx);
    tx.exec_params(kRecordSql, m.version, m.name, m.sha256);
    tx.commit();
  });
}

}  // namespace

bool Migration::transactional() const {
  return sql.rfind(kNoTransactionMarker, 0) != 0;
}

std::vector<SqlStatement> split_sql(const std::string& sql) {
  std::vector<SqlStatement> out;
  std::string current;
  int line = 1;
  int start_line = 1;
  bool started = false;
  // Inside BEGIN ATOMIC ... END: 1 + the CASE expressions open there.
  int atomic_depth = 0;
  std::string previous_word;
  std::size_t i = 0;
  const std::size_t n = sql.size();
  auto take = [&](std::size_t count) {
    for (std::size_t k = 0; k < count && i < n; ++k, ++i) {
      if (sql[i] == '\n') ++line;
      current.push_back(sql[i]);
    }
  };
  auto flush = [&] {
    if (started) out.push_back({current, start_line});
    current.clear();
    started = false;
  };
  while (i < n) {
    const char c = sql[i];
    const bool comment_start = (c == '-' && i + 1 < n && sql[i + 1] == '-') ||
                               (c == '/' && i + 1 < n && sql[i + 1] == '*');
    if (!started && !comment_start && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      // A statement starts at its first character of code, after any comments.
      started = true;
      start_line = line;
    }
    if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      const std::size_t end = sql.find('\n', i);
      take((end == std::string::npos ? n : end) - i);
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      const std::size_t end = sql.find("*/", i + 2);
      take((end == std::string::npos ? n : end + 2) - i);
    } else if (c == '\'' || c == '"') {
      take(1);
      while (i < n) {
        if (sql[i] == c) {
          take(1);
          if (i < n && sql[i] == c) {
            take(1);  // doubled quote inside the literal
            continue;
          }
          break;
        }
        take(1);
      }
    } else if (c == '$') {
      static const std::regex tag_re(R"(^\$([A-Za-z_][A-Za-z0-9_]*)?\$)");
      std::smatch m;
      const std::string rest = sql.substr(i, 64);
      if (std::regex_search(rest, m, tag_re)) {
        const std::string tag = m[0].str();
        const std::size_t end = sql.find(tag, i + tag.size());
        take((end == std::string::npos ? n : end + tag.size()) - i);
      } else {
        take(1);
      }
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      // A word: BEGIN ATOMIC opens a SQL-standard function body, which ends at
      // its own END; CASE ... END pairs inside it are counted on the way.
      std::size_t end = i;
      while (end < n && (std::isalnum(static_cast<unsigned char>(sql[end])) || sql[end] == '_' ||
                         sql[end] == '$')) {
        ++end;
      }
      std::string word = sql.substr(i, end - i);
      for (char& ch : word) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      if (word == "ATOMIC" && previous_word == "BEGIN") {
        atomic_depth = 1;
      } else if (atomic_depth > 0 && word == "CASE") {
        ++atomic_depth;
      } else if (atomic_depth > 0 && word == "END") {
        --atomic_depth;
      }
      previous_word = std::move(word);
      take(end - i);
    } else if (c == ';' && atomic_depth == 0) {
      take(1);
      flush();
    } else {
      take(1);
    }
  }
  flush();
  return out;
}

std::vector<Migration> load_migrations(const std::filesystem::path& dir) {
  static const std::regex name_re(R"(^(\d{4})_[a-z0-9_]+\.sql$)");
  std::vector<Migration> out;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec)
    throw Error(Code::not_found,
                fmt::format("cannot read migrations folder {}: {}", dir.string(), ec.message()));
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".sql") continue;
    std::smatch m;
    if (!std::regex_match(name, m, name_re)) {
      throw Error(Code::invalid_input,
                  fmt::format("{}: migration files are named NNNN_name.sql (lowercase)",
                              entry.path().string()));
    }
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof())
      throw Error(Code::not_found, fmt::format("cannot read {}", entry.path().string()));
    Migration mig;
    mig.version = std::stoi(m[1].str());
    mig.name = name;
    mig.sql = text.str();
    mig.sha256 = to_hex(sha256(mig.sql));
    out.push_back(std::move(mig));
  }
  std::sort(out.begin(), out.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  check_unique_versions(out);
  return out;
}

std::vector<MigrationStatus> migration_status(pqxx::connection_base& conn,
                                              const std::vector<Migration>& migrations) {
  std::map<int, Recorded> recorded = internal::db_step("read oasync.schema_migrations", [&] {
    pqxx::read_transaction tx(conn);
    internal::pin_search_path(tx);
    return recorded_migrations(tx);
  });
  std::vector<MigrationStatus> out;
  for (const Migration& m : migrations) {
    MigrationStatus s;
    s.version = m.version;
    s.name = m.name;
    const auto it = recorded.find(m.version);
    if (it == recorded.end()) {
      s.state = MigrationState::pending;
    } else {
      s.state = it->second.sha256 == m.sha256 ? MigrationState::applied
                                              : MigrationState::checksum_mismatch;
      s.applied_at = it->second.applied_at;
      recorded.erase(it);
    }
    out.push_back(std::move(s));
  }
  for (const auto& [version, r] : recorded) {
    out.push_back({version, r.name, MigrationState::unknown_to_this_build, r.applied_at});
  }
  std::sort(out.begin(), out.end(), [](const MigrationStatus& a, const MigrationStatus& b) {
    return a.version < b.version;
  });
  return out;
}

// oasync stores keys, scopes and payloads as UTF-8 text; a database in
// another encoding would turn some of them into other text, or refuse them.
void require_utf8_database(pqxx::connection_base& conn) {
  const std::string encoding = internal::db_step("read the server encoding", [&] {
    pqxx::nontransaction tx(conn);
    return tx.exec1("SELECT pg_catalog.current_setting('server_encoding')")[0].as<std::string>();
  });
  if (encoding != "UTF8") {
    throw Error(Code::refused,
                fmt::format("the database's server encoding is {}; oasync needs a UTF8 database "
                            "(CREATE DATABASE ... ENCODING 'UTF8')",
                            encoding));
  }
}

MigrateReport migrate(pqxx::connection_base& conn, const std::vector<Migration>& migrations,
                      DryRun dry_run) {
  check_unique_versions(migrations);
  require_utf8_database(conn);
  AdvisoryLock lock(conn);
  MigrateReport report;
  if (dry_run == DryRun::no) {
    internal::db_step("create oasync.schema_migrations", [&] {
      pqxx::work tx(conn, "oasync_migrate_bootstrap");
      internal::pin_search_path(tx);
      tx.exec(kBootstrapSql);
      tx.commit();
    });
  }
  // The lock is held: nobody else changes the recorded set from here on.
  std::set<int> pending;
  for (const MigrationStatus& s : migration_status(conn, migrations)) {
    if (s.state == MigrationState::checksum_mismatch) {
      throw Error(Code::refused,
                  fmt::format("{}: applied earlier, but its text has changed since (the recorded "
                              "SHA-256 differs); restore the file, never edit an applied "
                              "migration, and add a new one instead",
                              s.name));
    }
    if (s.state == MigrationState::unknown_to_this_build) {
      throw Error(Code::refused,
                  fmt::format("the database has migration {} ({}), which this build of oasync "
                              "does not know; use a newer oasync",
                              s.version, s.name));
    }
    if (s.state == MigrationState::pending) pending.insert(s.version);
  }
  for (const Migration& m : migrations) {
    if (!pending.count(m.version)) continue;
    report.applied.push_back(m.name);
    if (dry_run == DryRun::yes) continue;
    if (!m.transactional()) {
      apply_outside_transaction(conn, m);
      continue;
    }
    pqxx::work tx(conn, "oasync_migrate");
    internal::pin_search_path(tx);
    for (const SqlStatement& statement : split_sql(m.sql)) {
      try {
        tx.exec(statement.text);
      } catch (...) {
        try {
          internal::rethrow_as_error(fmt::format("{}:{}", m.name, statement.line));
        } catch (const Error& e) {
          throw Error(e.code(),
                      fmt::format("{} (rolled back: nothing of {} was applied)", e.what(), m.name),
                      e.retryable(), e.sqlstate(), e.statement());
        }
      }
    }
    internal::db_step(fmt::format("{}: record", m.name), [&] {
      tx.exec_params(kRecordSql, m.version, m.name, m.sha256);
      tx.commit();
    });
  }
  return report;
}

}  // namespace oasync
