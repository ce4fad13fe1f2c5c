// Canonical JSON: the one byte form of a payload that oasync stores and hashes.
//
// The rules (README, "Canonical JSON"; vectors in tests/fixtures/canonical/):
//   - object keys sorted by their UTF-8 bytes; duplicate keys are an error;
//   - no insignificant whitespace;
//   - strings: only '"', '\\' and control characters (< 0x20) are escaped,
//     as \" \\ \b \f \n \r \t or \u00XX (lowercase hex); everything else,
//     including non-ASCII, is written as raw UTF-8; invalid UTF-8 is an error;
//   - numbers: integers that fit in 64 bits are written as integers; any
//     other number as the shortest decimal that round-trips the IEEE double.
//   - nesting deeper than max_depth is an error (before building the value).
// This is what Python's json.dumps(v, sort_keys=True, separators=(",", ":"),
// ensure_ascii=False) and other sorted compact encoders produce for ordinary
// payloads (strings, integers, booleans, nulls, nested objects and arrays).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace oasync {

// What a JSON document is required to be.
enum class JsonShape { any, object };

struct CanonicalJson {
  // The canonical bytes.
  std::string text;
  // SHA-256 of text.
  std::array<std::uint8_t, 32> sha256{};
};

// Default nesting limit: deep enough for any read model, shallow enough that a
// hostile payload cannot exhaust the stack.
inline constexpr int kMaxJsonDepth = 64;

// Parses `json` and returns its canonical form and hash.
// Throws oasync::Error naming the problem and its byte offset when the input
// is not valid JSON, is not of `shape`, has a duplicate key, or nests deeper
// than `max_depth`.
CanonicalJson canonicalize(std::string_view json, JsonShape shape = JsonShape::object,
                           int max_depth = kMaxJsonDepth);

// SHA-256 of arbitrary bytes.
std::array<std::uint8_t, 32> sha256(std::string_view bytes);

// Lowercase hex of the given bytes.
std::string to_hex(std::string_view bytes);
std::string to_hex(const std::array<std::uint8_t, 32>& digest);

}  // namespace oasync
