// Internal: turning libpqxx exceptions into oasync::Error, once, with context.
#pragma once

#include <string>
#include <string_view>

#include <pqxx/pqxx>

#include "oasync/error.hpp"

namespace oasync::internal {

// Whether a SQLSTATE names a condition that may clear by itself: connection
// failures (08), serialization failures and deadlocks (40), insufficient
// resources (53), operator intervention such as a terminated backend (57).
Retryable classify_sqlstate(std::string_view sqlstate) noexcept;

// The Error for a statement the database refused: Code::database, with the
// SQLSTATE, named after `step`, retryable by the SQLSTATE's class.
Error database_error(const std::string& step, const std::string& sqlstate,
                     const std::string& message, const std::string& statement);

// Converts the exception in flight (call only from a catch block) into an
// oasync::Error whose message starts with `step`, and throws it. oasync::Error
// passes through with the context added.
[[noreturn]] void rethrow_as_error(const std::string& step);

// Makes the rest of `tx` resolve unqualified names in pg_catalog only (then
// pg_temp, for relations only), whatever search_path the caller's connection
// has: oasync never resolves a name through it. Statements on the hot paths
// (the sink's, Reader::read and Reader::check) qualify every name instead
// and need no extra round trip.
void pin_search_path(pqxx::transaction_base& tx);

// What oasync's own sessions run right after connecting.
inline constexpr const char* kPinnedSearchPathSql = "SET search_path = pg_catalog, pg_temp";

// The Error for a failed connection attempt: retryable, the target named with
// its password redacted.
Error connect_error(const std::string& conninfo, const std::string& message);

// Runs `fn`, converting any exception into oasync::Error named after `step`.
template <typename Fn>
decltype(auto) db_step(const std::string& step, Fn&& fn) {
  try {
    return fn();
  } catch (...) {
    rethrow_as_error(step);
  }
}

}  // namespace oasync::internal
