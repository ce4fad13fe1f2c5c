// Writing to file descriptors without losing bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

namespace oasync::cli {

// Writes all of `bytes` to `fd`, retrying short writes and EINTR. Throws
// oasync::Error naming `what` when the descriptor is gone (e.g. EPIPE).
void write_all(int fd, std::string_view bytes, const char* what);

// Reads up to `size` bytes from `fd`, retrying EINTR; 0 at end of input.
// Throws oasync::Error on read errors.
std::size_t read_some(int fd, char* buffer, std::size_t size);

// Reads `fd` to its end and calls on_line(number, line, too_long) for every
// line, numbered from 1 (blank ones included), without its '\n'. A line longer
// than max_line is never buffered: it is passed as empty with too_long set.
// A last line without '\n' counts too.
void for_each_line(int fd, std::size_t max_line,
                   const std::function<void(std::uint64_t, std::string_view, bool)>& on_line);

}  // namespace oasync::cli
