#include "io.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "oasync/error.hpp"

namespace oasync::cli {

void write_all(int fd, std::string_view bytes, const char* what) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(Code::internal, fmt::format("cannot write {}: {}", what, std::strerror(errno)));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::size_t read_some(int fd, char* buffer, std::size_t size) {
  for (;;) {
    const ssize_t n = ::read(fd, buffer, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR)
      throw Error(Code::invalid_input, fmt::format("cannot read input: {}", std::strerror(errno)));
  }
}

void for_each_line(int fd, std::size_t max_line,
                   const std::function<void(std::uint64_t, std::string_view, bool)>& on_line) {
  std::vector<char> buffer(1 << 16);
  std::string line;
  bool too_long = false;
  bool pending = false;  // bytes of an unfinished line were read
  std::uint64_t number = 0;
  for (;;) {
    const std::size_t n = read_some(fd, buffer.data(), buffer.size());
    if (n == 0) break;
    std::string_view chunk(buffer.data(), n);
    while (!chunk.empty()) {
      const std::size_t newline = chunk.find('\n');
      const std::string_view part = chunk.substr(0, newline);
      pending = true;
      if (!too_long && line.size() + part.size() > max_line) {
        too_long = true;
        line.clear();
      }
      if (!too_long) line.append(part);
      if (newline == std::string_view::npos) break;
      on_line(++number, line, too_long);
      line.clear();
      too_long = false;
      pending = false;
      chunk.remove_prefix(newline + 1);
    }
  }
  if (pending) on_line(++number, line, too_long);
}

}  // namespace oasync::cli
