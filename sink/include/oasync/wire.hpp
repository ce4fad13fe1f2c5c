// Wire forms of the sink's input and output, as bytes in and bytes out:
//   - protobuf (proto/openagents/sync/v1/sink.proto): WriteBatch in,
//     BatchResult out; used by the C ABI and `oasync sink --stdio`;
//   - stdio framing: each message preceded by its length as 4 bytes, big
//     endian (Erlang's {packet, 4});
//   - NDJSON: one DocWrite per line as a JSON object whose fields are named
//     as in the proto, the payload inline; used by `oasync sink --input`.
// Decoders never trust a length: sizes are checked before anything is
// allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oasync/batch.hpp"
#include "oasync/error.hpp"

namespace oasync {

// Default largest frame or NDJSON line accepted: 16 MiB.
inline constexpr std::size_t kDefaultMaxFrameBytes = 16u << 20;

// Decodes an encoded WriteBatch. Throws oasync::Error (invalid_input) when the
// bytes are not a valid WriteBatch or a value is out of range (a uint64 above
// 2^63-1).
Batch decode_batch(std::string_view bytes);

// Decodes one encoded DocWrite (as `oasync reproject --format proto` reads).
DocWrite decode_write(std::string_view bytes);

// Encodes a WriteBatch (for tests, benchmarks and foreign callers' examples).
std::string encode_batch(const Batch& batch);

// Encodes a BatchResult carrying the per-write results.
std::string encode_results(const std::vector<WriteResult>& results);

// The BatchError code of an error (sink.proto, BatchError.code): "database",
// "fenced", "malformed_frame" (invalid_input: the frame did not decode),
// "invalid_batch" (invalid_argument: it decoded, but a field is not allowed),
// "internal" for anything else. The one place these strings are chosen.
const char* wire_code(Code code) noexcept;

// Encodes a BatchResult carrying only `error`: its wire_code, message,
// retryability and SQLSTATE.
std::string encode_error(const Error& error);

// Decodes a BatchResult into results and (if present) its error message.
struct DecodedResult {
  std::vector<WriteResult> results;
  std::optional<std::string> error_code;
  std::string error_message;
  bool retryable = false;
};
DecodedResult decode_results(std::string_view bytes);

// Splits a byte stream into 4-byte-length-prefixed frames.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame_bytes = kDefaultMaxFrameBytes);

  // Appends bytes read from the stream. Throws oasync::Error ("framing
  // lost") as soon as a length prefix exceeds the maximum; nothing of that
  // frame is buffered.
  void feed(std::string_view bytes);
  // The next complete frame's payload, if one is buffered.
  std::optional<std::string> next();
  // True when part of a frame (or of its length) is buffered.
  bool mid_frame() const noexcept;
  // Frames returned so far.
  std::uint64_t frames() const noexcept { return frames_; }

 private:
  // The length of the frame at the read position, checked against the
  // maximum (throws as feed() says); nullopt while its 4 bytes are incomplete.
  std::optional<std::uint32_t> pending_length() const;

  std::size_t max_frame_bytes_;
  std::string buffer_;
  std::size_t offset_ = 0;
  std::uint64_t frames_ = 0;
};

// `payload` preceded by its 4-byte big-endian length.
std::string encode_frame(std::string_view payload);

// Parses one NDJSON line into a DocWrite. Throws oasync::Error naming the
// offending field and quoting its value. Unknown fields are errors.
DocWrite parse_write_line(std::string_view line);

// One NDJSON result line (no trailing newline):
// {"line":N,"outcome":"applied","doc_version":V,"watermark":W} plus "reason"
// and "detail" when there are any.
std::string result_line(std::uint64_t line, const WriteResult& result);

}  // namespace oasync
