#include "db.hpp"

#include "oasync/connection.hpp"

#include <exception>
#include <regex>

#include <fmt/format.h>
#include <pqxx/pqxx>

namespace oasync::internal {

Retryable classify_sqlstate(std::string_view sqlstate) noexcept {
  if (sqlstate.size() != 5) return Retryable::no;
  const std::string_view cls = sqlstate.substr(0, 2);
  if (cls == "08" || cls == "40" || cls == "53" || cls == "57") return Retryable::yes;
  return Retryable::no;
}

void pin_search_path(pqxx::transaction_base& tx) {
  tx.exec("SET LOCAL search_path = pg_catalog, pg_temp");
}

void require_utf8(PGconn* conn, const char* who) {
  const char* encoding = PQparameterStatus(conn, "client_encoding");
  const std::string_view found = encoding == nullptr ? "" : encoding;
  if (found != "UTF8") {
    throw Error(Code::invalid_argument,
                fmt::format("{}: the connection's client_encoding is \"{}\"; oasync needs UTF8, "
                            "or keys and scopes would be stored as other text (run SET "
                            "client_encoding = 'UTF8' on it first)",
                            who, found));
  }
}

Error connect_error(const std::string& conninfo, const std::string& message) {
  return Error(Code::database,
               fmt::format("cannot connect to {}: {}", redact_conninfo(conninfo), message),
               Retryable::yes, "08001", "connect");
}

Error database_error(const std::string& step, const std::string& sqlstate,
                     const std::string& message, const std::string& statement) {
  return Error(Code::database, fmt::format("{}: {} (SQLSTATE {})", step, message, sqlstate),
               classify_sqlstate(sqlstate), sqlstate, statement);
}

void rethrow_as_error(const std::string& step) {
  try {
    throw;
  } catch (const Error& e) {
    throw e.with_context(step);
  } catch (const pqxx::in_doubt_error& e) {
    throw Error(Code::outcome_unknown,
                fmt::format("{}: connection lost during commit; the outcome is unknown ({})", step,
                            e.what()),
                Retryable::yes, "", step);
  } catch (const pqxx::broken_connection& e) {
    throw Error(Code::database, fmt::format("{}: connection lost: {}", step, e.what()),
                Retryable::yes, "08006", step);
  } catch (const pqxx::sql_error& e) {
    std::string message = e.what();
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
      message.pop_back();
    }
    throw database_error(step, e.sqlstate(), message, step);
  } catch (const pqxx::failure& e) {
    // libpqxx reports a dead connection discovered mid-statement this way.
    throw Error(Code::database, fmt::format("{}: {}", step, e.what()), Retryable::yes, "", step);
  } catch (const std::exception& e) {
    throw Error(Code::internal, fmt::format("{}: {}", step, e.what()), Retryable::no, "", step);
  }
}

}  // namespace oasync::internal

namespace oasync {

std::string redact_conninfo(std::string_view conninfo) {
  std::string text(conninfo);
  // URI form: scheme://user:password@host
  static const std::regex uri_password(R"(([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)[^@]*@)");
  text = std::regex_replace(text, uri_password, "$1***@");
  // URI query or key=value form: password=...
  static const std::regex kv_password(R"((password\s*=\s*)('[^']*'|[^\s&]*))", std::regex::icase);
  return std::regex_replace(text, kv_password, "$1***");
}

std::unique_ptr<pqxx::connection> connect(const std::string& conninfo) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(conninfo);
  } catch (const std::exception& e) {
    // libpq's message names host and port, never the password.
    std::string message = e.what();
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
      message.pop_back();
    }
    throw internal::connect_error(conninfo, message);
  }
  // oasync's own sessions resolve no name through a search_path the
  // environment gave them (PGOPTIONS, a role's default).
  internal::db_step("connect", [&] {
    pqxx::nontransaction tx(*conn);
    tx.exec(internal::kSessionSetupSql);
  });
  return conn;
}

}  // namespace oasync
