// Writing to file descriptors without losing bytes.
#pragma once

#include <string_view>

namespace oasync::cli {

// Writes all of `bytes` to `fd`, retrying short writes and EINTR. Throws
// oasync::Error naming `what` when the descriptor is gone (e.g. EPIPE).
void write_all(int fd, std::string_view bytes, const char* what);

}  // namespace oasync::cli
