// Running the real `oasync` binary (and other programs) from tests.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace oasync::test {

struct ProcessResult {
  int exit_code = -1;  // -signal when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] (searched in PATH) with `input` on stdin and waits for it.
// `env` adds to (or overrides) the test's environment.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input = {},
                          const std::map<std::string, std::string>& env = {});

// Runs the oasync binary under test with the given arguments.
ProcessResult run_oasync(const std::vector<std::string>& args, const std::string& input = {},
                         const std::map<std::string, std::string>& env = {});

// A child process with pipes to its stdin and from its stdout; stderr goes to
// a file. Killed (SIGKILL) and reaped on destruction if still running.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {});
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // Writes all bytes to the child's stdin; false if the pipe broke.
  bool write(const std::string& bytes);
  void close_stdin();
  // Reads exactly n bytes from stdout (waiting up to timeout_ms); false on
  // EOF or timeout.
  bool read_exact(std::string& out, std::size_t n, int timeout_ms = 30000);
  // Reads one line (without '\n'); false on EOF or timeout.
  bool read_line(std::string& line, int timeout_ms = 30000);
  // True once stdout reached its end (the child closed it or exited).
  bool at_eof() const { return eof_; }
  void kill(int signal);
  // Waits for exit; returns the exit code or -signal.
  int wait();
  std::string stderr_text() const;

 private:
  // Reads stdout into pending_ until it holds `want` bytes or contains
  // `until`; false on EOF or timeout.
  bool fill(std::size_t want, const std::string& until, int timeout_ms);

  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  std::string err_path_;
  std::string pending_;
  bool eof_ = false;
  bool reaped_ = false;
  int status_ = 0;
};

// Path of the oasync binary under test.
std::string oasync_binary();
// Path of the source tree (fixtures, schema).
std::string source_dir();

}  // namespace oasync::test
