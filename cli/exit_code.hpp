// The exit codes of `oasync`, in one place. Listed in `oasync --help` and the
// README.
#pragma once

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

}  // namespace oasync::cli
