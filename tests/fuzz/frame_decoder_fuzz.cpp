// Fuzzes the stdio framing and the WriteBatch decoder behind it.
// Input: one byte that picks the chunk size, then the byte stream.
// Properties: the frames and the error do not depend on how the stream was
// split into reads; a decoded batch re-encodes to bytes that decode to the
// same encoding again; only oasync::Error is ever thrown.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "oasync/error.hpp"
#include "oasync/wire.hpp"

namespace {

// Small enough that the fuzzer reaches the over-length path with short inputs.
constexpr std::size_t kMaxFrame = 4096;

struct Outcome {
  std::vector<std::string> frames;
  bool failed = false;
};

Outcome split(std::string_view stream, std::size_t chunk) {
  Outcome out;
  oasync::FrameDecoder decoder(kMaxFrame);
  try {
    while (!stream.empty()) {
      const std::size_t n = chunk < stream.size() ? chunk : stream.size();
      decoder.feed(stream.substr(0, n));
      stream.remove_prefix(n);
      while (auto frame = decoder.next()) out.frames.push_back(std::move(*frame));
    }
  } catch (const oasync::Error&) {
    out.failed = true;
  }
  OASYNC_FUZZ_CHECK(decoder.frames() == out.frames.size());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 64;
  const std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);

  const Outcome whole = split(stream, stream.size() + 1);
  const Outcome pieces = split(stream, chunk);
  OASYNC_FUZZ_CHECK(whole.frames == pieces.frames);
  OASYNC_FUZZ_CHECK(whole.failed == pieces.failed);

  for (const std::string& frame : whole.frames) {
    OASYNC_FUZZ_CHECK(frame.size() <= kMaxFrame);
    try {
      const std::string encoded = oasync::encode_batch(oasync::decode_batch(frame));
      OASYNC_FUZZ_CHECK(oasync::encode_batch(oasync::decode_batch(encoded)) == encoded);
    } catch (const oasync::Error&) {
    }
  }
  return 0;
}
