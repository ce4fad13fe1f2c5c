// Fuzzes the YAML loaders: oasync.yaml and the topic catalog. The first byte
// picks which. Properties: only oasync::Error is thrown, and every message
// starts with the origin, so a user always learns where the problem is.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "config.hpp"
#include "fuzz_check.hpp"
#include "oasync/error.hpp"
#include "topics_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string origin = "fuzz.yaml";
  try {
    if (data[0] % 2 == 0) {
      (void)oasync::cli::parse_config(text, origin);
    } else {
      (void)oasync::cli::parse_topics(text, origin);
    }
  } catch (const oasync::Error& e) {
    OASYNC_FUZZ_CHECK(std::string_view(e.what()).starts_with(origin + ":"));
  }
  return 0;
}
