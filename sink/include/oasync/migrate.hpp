// Schema migrations: the ordered SQL files under migrations/ and the record
// of which ones a database has applied (oasync.schema_migrations).
//
// Rules:
//   - files are named NNNN_name.sql and applied in version order, each in a
//     transaction of its own, statement by statement;
//   - the whole run holds a Postgres advisory lock (kMigrateLockKey): of two
//     migrators started at once, one applies and the other then finds
//     nothing to do;
//   - an applied file is recorded with its SHA-256; if its text later
//     changes, migrate refuses it and applies nothing after it;
//   - a failing statement rolls its file back whole and names the file, the
//     line the statement starts on, and the database's message;
//   - a file whose first line is `-- oasync:no-transaction` runs outside a
//     transaction, statement by statement (for CREATE INDEX CONCURRENTLY, which
//     cannot run in one and does not block writers). Its statements must be
//     idempotent (IF NOT EXISTS): a failure leaves the ones before it applied,
//     and the next run starts the file over, after dropping those of its own
//     indexes (the names its CREATE INDEX CONCURRENTLY statements create)
//     that a failed concurrent build left invalid in schema oasync; any other
//     invalid index (an operator's, being built by hand) is left alone.
//     Checksum, lock and FILE:LINE rules are the same.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <pqxx/connection_base>

#include "oasync/options.hpp"

namespace oasync {

// pg_advisory_lock key held while migrating ("oasync" in ASCII).
inline constexpr std::int64_t kMigrateLockKey = 0x6f6173796e63;

struct Migration {
  int version = 0;
  // File name, e.g. "0001_init.sql".
  std::string name;
  std::string sql;
  // Lowercase hex SHA-256 of sql.
  std::string sha256;

  // Whether it runs in a transaction (see the rules above).
  bool transactional() const;
};

// The first line that marks a migration as run outside a transaction.
inline constexpr const char* kNoTransactionMarker = "-- oasync:no-transaction";

// The migrations compiled into this build (a copy of migrations/*.sql).
std::vector<Migration> bundled_migrations();

// Reads NNNN_name.sql files from `dir`. Throws oasync::Error for a file with
// a malformed name or a duplicated version.
std::vector<Migration> load_migrations(const std::filesystem::path& dir);

enum class MigrationState { applied, pending, checksum_mismatch, unknown_to_this_build };

struct MigrationStatus {
  int version = 0;
  std::string name;
  MigrationState state = MigrationState::pending;
  // For applied ones: when, as Postgres printed it.
  std::string applied_at;
};

// The state of every known and every recorded migration, in version order.
// Does not lock and changes nothing (a database never migrated shows all
// pending).
std::vector<MigrationStatus> migration_status(pqxx::connection_base& conn,
                                              const std::vector<Migration>& migrations);

struct MigrateReport {
  // Names of the files applied by this run (or, with DryRun::yes, that would
  // be), in order.
  std::vector<std::string> applied;
};

// Applies the pending migrations under the advisory lock.
// Throws oasync::Error, after rolling back the failing file, when a recorded
// checksum differs, the database has a migration this build does not know, or
// a statement fails.
MigrateReport migrate(pqxx::connection_base& conn, const std::vector<Migration>& migrations,
                      DryRun dry_run = DryRun::no);

// Splits SQL text into statements at top-level semicolons, honouring quotes,
// dollar quotes, comments and SQL-standard function bodies (BEGIN ATOMIC ...
// END, with CASE ... END inside). Each piece records the line it starts on.
struct SqlStatement {
  std::string text;
  int line = 1;
};
std::vector<SqlStatement> split_sql(const std::string& sql);

}  // namespace oasync
