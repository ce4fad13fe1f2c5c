// The exit codes of `oasync`, in one place: what each means, and which one an
// error ends a command with. Listed in `oasync --help` and the README.
#pragma once

#include "oasync/error.hpp"

namespace oasync::cli {

enum class ExitCode : int {
  // Success. For `sink`, every input was answered, whatever the outcomes.
  ok = 0,
  // A failure: database unreachable or failing, bad file; `verify` found a problem.
  error = 1,
  // The command line is wrong (unknown flag, missing argument).
  usage = 2,
  // A cursor can no longer resume; the client must resync (snapshot).
  resync_required = 3,
  // `verify` could not run to the end (database failure): nothing is concluded.
  incomplete = 4,
};

inline constexpr const char* kExitCodeHelp =
    "Exit codes:\n"
    "  0  success\n"
    "  1  error (database, input or a problem found)\n"
    "  2  usage error\n"
    "  3  resync required (stale cursor)\n"
    "  4  verify could not run to the end; nothing is concluded\n";

inline int to_int(ExitCode code) {
  return static_cast<int>(code);
}

// An error that ends its command with a given exit code, whatever its Code
// (verify's "could not run to the end" is 4). Printed once, like any Error.
class ExitError : public Error {
 public:
  ExitError(ExitCode exit_code, const Error& error) : Error(error), exit_code_(exit_code) {}
  ExitCode exit_code() const noexcept { return exit_code_; }

 private:
  ExitCode exit_code_;
};

// The exit code an error ends a command with.
inline ExitCode exit_code_for(const Error& error) {
  if (const auto* exit = dynamic_cast<const ExitError*>(&error)) return exit->exit_code();
  switch (error.code()) {
    case Code::invalid_argument:
      return ExitCode::usage;
    case Code::invalid_input:
    case Code::not_found:
    case Code::refused:
    case Code::fenced:
    case Code::database:
    case Code::outcome_unknown:
    case Code::internal:
      return ExitCode::error;
  }
  return ExitCode::error;
}

}  // namespace oasync::cli
