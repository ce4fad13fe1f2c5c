// Internal: turning libpqxx exceptions into oasync::Error, once, with context.
#pragma once

#include <string>
#include <string_view>

#include <libpq-fe.h>
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

// What every session oasync opens (the sink's, the readers', the CLI's,
// `oasync serve`'s pool and hub) runs right after connecting, so that nothing
// it does depends on settings an operator gave the database, the role or the
// environment (ALTER DATABASE ... SET, PGOPTIONS, PGCLIENTENCODING, a service
// file): names resolve in pg_catalog only; text travels as UTF-8 (under
// LATIN1, "k:\u00fc" would be stored as another key, in another tenant's
// scope); transactions are READ COMMITTED and writable unless a statement
// asks otherwise; no statement, lock or idle timeout of the operator's ends
// oasync's work half way (the sink sets its own idle timeout, sink.cpp);
// dates print in ISO form. synchronous_commit stays the operator's: it is a
// durability choice, and a commit that waits for a standby changes nothing
// oasync relies on.
inline constexpr const char* kSessionSetupSql =
    "SET search_path = pg_catalog, pg_temp; SET client_encoding = 'UTF8'; "
    "SET default_transaction_isolation = 'read committed'; "
    "SET default_transaction_read_only = off; SET default_transaction_deferrable = off; "
    "SET statement_timeout = 0; SET lock_timeout = 0; "
    "SET idle_in_transaction_session_timeout = 0; SET idle_session_timeout = 0; "
    "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'";

// Refuses a connection that oasync did not open (apply_within's, a borrowed
// one) unless its client_encoding is UTF8: oasync cannot pin it there
// without changing the caller's session. Throws oasync::Error
// (invalid_argument) naming the encoding it found.
void require_utf8(PGconn* conn, const char* who);

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
