#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace oasync::test {
namespace {

std::vector<std::string> merged_env(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> all;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq != std::string::npos) all[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : extra) all[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : all) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            int stdin_fd, int stdout_fd, int stderr_fd, const std::vector<int>& close_fds) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
  for (int fd : close_fds) posix_spawn_file_actions_addclose(&actions, fd);
  std::vector<std::string> args = argv;
  std::vector<std::string> envs = merged_env(env);
  auto c_args = c_strings(args);
  auto c_env = c_strings(envs);
  pid_t pid = -1;
  const int rc =
      posix_spawnp(&pid, argv.at(0).c_str(), &actions, nullptr, c_args.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

}  // namespace

std::string oasync_binary() {
  return OASYNC_TEST_BINARY;
}
std::string source_dir() {
  return OASYNC_TEST_SOURCE_DIR;
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input,
                          const std::map<std::string, std::string>& env) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  signal(SIGPIPE, SIG_IGN);
  const pid_t pid = spawn(argv, env, in[0], out[1], err[1], {});
  close(in[0]);
  close(out[1]);
  close(err[1]);
  ProcessResult result;
  std::size_t written = 0;
  if (input.empty()) {
    close(in[1]);
    in[1] = -1;
  }
  bool out_open = true, err_open = true;
  char buffer[65536];
  while (out_open || err_open) {
    std::vector<pollfd> fds;
    if (in[1] >= 0) fds.push_back({in[1], POLLOUT, 0});
    if (out_open) fds.push_back({out[0], POLLIN, 0});
    if (err_open) fds.push_back({err[0], POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("poll failed");
    }
    for (const pollfd& p : fds) {
      if (p.revents == 0) continue;
      if (p.fd == in[1]) {
        const ssize_t n = write(in[1], input.data() + written, input.size() - written);
        if (n > 0) written += static_cast<std::size_t>(n);
        if (n < 0 || written == input.size()) {
          close(in[1]);
          in[1] = -1;
        }
      } else {
        const ssize_t n = read(p.fd, buffer, sizeof buffer);
        if (n <= 0) {
          (p.fd == out[0] ? out_open : err_open) = false;
        } else {
          (p.fd == out[0] ? result.out : result.err).append(buffer, static_cast<std::size_t>(n));
        }
      }
    }
  }
  if (in[1] >= 0) close(in[1]);
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = decode_status(status);
  return result;
}

ProcessResult run_oasync(const std::vector<std::string>& args, const std::string& input,
                         const std::map<std::string, std::string>& env) {
  std::vector<std::string> argv{oasync_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, input, env);
}

Child::Child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  signal(SIGPIPE, SIG_IGN);
  char name[] = "/tmp/oasync-test-stderr.XXXXXX";
  const int err = mkstemp(name);
  if (err < 0) throw std::runtime_error("mkstemp");
  err_path_ = name;
  pid_ = spawn(argv, env, in[0], out[1], err, {});
  close(in[0]);
  close(out[1]);
  close(err);
  in_ = in[1];
  out_ = out[0];
}

Child::~Child() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    wait();
  }
  if (in_ >= 0) close(in_);
  if (out_ >= 0) close(out_);
  unlink(err_path_.c_str());
}

bool Child::write(const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(in_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

void Child::close_stdin() {
  if (in_ >= 0) close(in_);
  in_ = -1;
}

bool Child::fill(std::size_t want, const std::string& until, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (pending_.size() < want && (until.empty() || pending_.find(until) == std::string::npos)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return false;
    pollfd p{out_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buffer[65536];
    const ssize_t got = read(out_, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      eof_ = true;
      return false;
    }
    pending_.append(buffer, static_cast<std::size_t>(got));
  }
  return true;
}

bool Child::read_exact(std::string& out, std::size_t n, int timeout_ms) {
  if (!fill(n, "", timeout_ms)) return false;
  out = pending_.substr(0, n);
  pending_.erase(0, n);
  return true;
}

bool Child::read_line(std::string& line, int timeout_ms) {
  if (!fill(std::string::npos, "\n", timeout_ms)) return false;
  const auto nl = pending_.find('\n');
  line = pending_.substr(0, nl);
  pending_.erase(0, nl + 1);
  return true;
}

void Child::kill(int signal) {
  ::kill(pid_, signal);
}

int Child::wait() {
  if (!reaped_) {
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = decode_status(status);
    reaped_ = true;
  }
  return status_;
}

std::string Child::stderr_text() const {
  std::ifstream in(err_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace oasync::test
