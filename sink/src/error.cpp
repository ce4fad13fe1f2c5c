#include "oasync/error.hpp"

#include <utility>

namespace oasync {

Error::Error(std::string message, Retryable retryable, std::string sqlstate, std::string statement)
    : std::runtime_error(std::move(message)),
      retryable_(retryable),
      sqlstate_(std::move(sqlstate)),
      statement_(std::move(statement)) {}

Error Error::with_context(const std::string& context) const {
  return Error(context + ": " + what(), retryable_, sqlstate_, statement_);
}

}  // namespace oasync
