// Fuzzes the canonical-JSON hasher. Properties: only oasync::Error is thrown;
// canonical text is a fixed point (canonicalising it again gives the same
// bytes and hash); the hash is the SHA-256 of the text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  oasync::CanonicalJson first;
  try {
    first = oasync::canonicalize(input, oasync::JsonShape::any);
  } catch (const oasync::Error&) {
    return 0;
  }
  OASYNC_FUZZ_CHECK(first.sha256 == oasync::sha256(first.text));
  const oasync::CanonicalJson again = oasync::canonicalize(first.text, oasync::JsonShape::any);
  OASYNC_FUZZ_CHECK(again.text == first.text);
  OASYNC_FUZZ_CHECK(again.sha256 == first.sha256);
  return 0;
}
