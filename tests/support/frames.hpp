// Talking to `oasync sink --stdio` from tests.
#pragma once

#include <string>

#include "oasync/wire.hpp"
#include "process.hpp"

namespace oasync::test {

// Sends one encoded batch as a frame.
inline bool send_batch(Child& sink, const Batch& batch) {
  return sink.write(encode_frame(encode_batch(batch)));
}

// Reads one answer frame and decodes it; false when the stream ended.
inline bool read_answer(Child& sink, DecodedResult& out, int timeout_ms = 60000) {
  std::string header;
  if (!sink.read_exact(header, 4, timeout_ms)) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(header.data());
  const std::size_t length = (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) |
                             (std::size_t{p[2]} << 8) | std::size_t{p[3]};
  std::string body;
  if (!sink.read_exact(body, length, timeout_ms)) return false;
  out = decode_results(body);
  return true;
}

}  // namespace oasync::test
