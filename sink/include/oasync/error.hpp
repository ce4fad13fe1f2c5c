// oasync::Error: the one error type the library throws.
//
// It carries what a caller acts on: whether trying again may succeed, and,
// for database failures, the SQLSTATE and the statement that failed. The
// message is complete and human-readable; callers add context by catching,
// prefixing and rethrowing (see with_context), and report it once at their
// boundary.
#pragma once

#include <stdexcept>
#include <string>

namespace oasync {

// Whether repeating the failed operation unchanged may succeed.
enum class Retryable { no, yes };

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, Retryable retryable = Retryable::no,
                 std::string sqlstate = {}, std::string statement = {});

  // True for connection loss, serialization failures, deadlocks and other
  // transient conditions.
  Retryable retryable() const noexcept { return retryable_; }
  // Five-character SQLSTATE when the error came from Postgres, else empty.
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  // A short name of the statement that failed ("lock docs"), else empty.
  const std::string& statement() const noexcept { return statement_; }

  // A copy whose message is "<context>: <message>", all else kept.
  Error with_context(const std::string& context) const;

 private:
  Retryable retryable_;
  std::string sqlstate_;
  std::string statement_;
};

}  // namespace oasync
