#include "oasync/error.hpp"

#include <utility>

namespace oasync {

const char* to_string(Code code) noexcept {
  switch (code) {
    case Code::invalid_argument:
      return "invalid_argument";
    case Code::invalid_input:
      return "invalid_input";
    case Code::not_found:
      return "not_found";
    case Code::refused:
      return "refused";
    case Code::fenced:
      return "fenced";
    case Code::database:
      return "database";
    case Code::outcome_unknown:
      return "outcome_unknown";
    case Code::internal:
      return "internal";
  }
  return "unknown";
}

Error::Error(Code code, std::string message, Retryable retryable, std::string sqlstate,
             std::string statement)
    : std::runtime_error(std::move(message)),
      code_(code),
      retryable_(retryable),
      sqlstate_(std::move(sqlstate)),
      statement_(std::move(statement)) {}

Error Error::with_context(const std::string& context) const {
  return Error(code_, context + ": " + what(), retryable_, sqlstate_, statement_);
}

}  // namespace oasync
