// Opening a Postgres connection the way every oasync tool does.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <pqxx/connection>

namespace oasync {

// Connects to `conninfo` (a libpq key=value string or a URI; empty means
// libpq's defaults and PG* variables) and sets the session's search_path to
// pg_catalog, pg_temp. Throws a retryable oasync::Error whose message names
// the target with any password replaced by "***".
std::unique_ptr<pqxx::connection> connect(const std::string& conninfo);

// `conninfo` with any password replaced by "***", for messages and logs.
std::string redact_conninfo(std::string_view conninfo);

}  // namespace oasync
