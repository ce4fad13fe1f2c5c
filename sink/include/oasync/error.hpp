// oasync::Error: the one error type the library throws.
//
// It carries what a caller acts on: what kind of failure it is (Code),
// whether trying again may succeed, and, for database failures, the SQLSTATE
// and the statement that failed. The message is complete and human-readable;
// callers add context by catching, prefixing and rethrowing (with_context),
// and report it once at their boundary.
//
// Codes map to the sink's wire codes in one place (wire.cpp, wire_code) and
// to the CLI's exit codes in one place (cli/exit_code.hpp).
#pragma once

#include <stdexcept>
#include <string>

namespace oasync {

// What kind of failure an Error is.
enum class Code {
  // A value the caller passed (an option field, a topic spec, an id) is not
  // allowed. The message names the field and quotes the value.
  invalid_argument,
  // Input data (a line, a frame, a file) is malformed; the message says where.
  invalid_input,
  // A named topic, doc, role or file does not exist.
  not_found,
  // The operation would break a rule, and nothing was changed (a topic that
  // still has docs, an applied migration whose text changed).
  refused,
  // A producer's fencing epoch is below the stored one; the batch was refused.
  fenced,
  // The database failed or could not be reached.
  database,
  // The connection was lost while committing: the transaction may or may not
  // have committed. Sending the same writes again is safe only when they
  // carry source positions (a committed write then comes back a duplicate).
  outcome_unknown,
  // Anything else: an unexpected exception, a broken invariant.
  internal,
};

// "invalid_argument", "not_found", ...; "unknown" for a value out of range.
const char* to_string(Code code) noexcept;

// Whether repeating the failed operation unchanged may succeed.
enum class Retryable { no, yes };

class Error : public std::runtime_error {
 public:
  Error(Code code, std::string message, Retryable retryable = Retryable::no,
        std::string sqlstate = {}, std::string statement = {});

  Code code() const noexcept { return code_; }
  // Yes for connection loss, serialization failures, deadlocks and other
  // transient conditions.
  Retryable retryable() const noexcept { return retryable_; }
  // Five-character SQLSTATE when the error came from Postgres, else empty.
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  // A short name of the step that failed ("lock docs"), else empty.
  const std::string& statement() const noexcept { return statement_; }

  // A copy whose message is "<context>: <message>", all else kept.
  Error with_context(const std::string& context) const;

 private:
  Code code_;
  Retryable retryable_;
  std::string sqlstate_;
  std::string statement_;
};

}  // namespace oasync
