// Fuzzes the NDJSON write parser of `oasync sink --input`: every line of the
// input is parsed as one DocWrite. Properties: only oasync::Error is thrown;
// a parsed payload is a JSON object's text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"
#include "oasync/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (!rest.empty()) {
    const std::size_t newline = rest.find('\n');
    const std::string_view line = rest.substr(0, newline);
    rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
    try {
      const oasync::DocWrite write = oasync::parse_write_line(line);
      if (!write.payload.empty()) {
        // The parser accepted it as an object: the canonicaliser must agree.
        OASYNC_FUZZ_CHECK(!oasync::canonicalize(write.payload).text.empty());
      }
    } catch (const oasync::Error&) {
    }
  }
  return 0;
}
