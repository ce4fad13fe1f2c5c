#include "offset.hpp"

#include <charconv>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace oasync::serve {
namespace {

constexpr std::size_t kEpochDigits = 16;
constexpr std::size_t kWatermarkDigits = 20;
constexpr std::size_t kPageDigits = 8;
constexpr std::int64_t kMaxEpoch = 9999999999999999;
constexpr std::int64_t kMaxPage = 99999999;

// A run of exactly `digits` decimal digits at the front of `text`.
std::optional<std::int64_t> number(std::string_view& text, std::size_t digits) {
  if (text.size() < digits) return std::nullopt;
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
  if (ec != std::errc() || end != text.data() + digits ||
      value > static_cast<std::uint64_t>(INT64_MAX)) {
    return std::nullopt;
  }
  text.remove_prefix(digits);
  return static_cast<std::int64_t>(value);
}

bool take(std::string_view& text, char c) {
  if (text.empty() || text.front() != c) return false;
  text.remove_prefix(1);
  return true;
}

// Whether `key` can be a doc key at all: UTF-8 text without NUL (what the
// database holds). Checked with the JSON library's strict encoder.
bool plausible_key(const std::string& key) {
  if (key.find('\0') != std::string::npos) return false;
  try {
    (void)nlohmann::json(key).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

std::string encode(const Offset& o) {
  std::string out =
      fmt::format("{:0{}}_{:0{}}_", o.epoch_counter, kEpochDigits, o.watermark, kWatermarkDigits);
  if (o.kind == Offset::Kind::journal) return out + "j";
  out += fmt::format("i{:0{}}{}_", o.page, kPageDigits, o.part);
  static constexpr char kHex[] = "0123456789abcdef";
  for (const unsigned char c : o.after_key) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::optional<Offset> decode(std::string_view text) {
  Offset o;
  const auto epoch = number(text, kEpochDigits);
  if (!epoch || *epoch > kMaxEpoch || !take(text, '_')) return std::nullopt;
  const auto watermark = number(text, kWatermarkDigits);
  if (!watermark || !take(text, '_')) return std::nullopt;
  o.epoch_counter = *epoch;
  o.watermark = *watermark;
  if (text == "j") return o;
  if (!take(text, 'i')) return std::nullopt;
  const auto page = number(text, kPageDigits);
  if (!page || *page > kMaxPage || text.empty() || (text.front() != '0' && text.front() != '1')) {
    return std::nullopt;
  }
  o.kind = Offset::Kind::snapshot;
  o.page = *page;
  o.part = text.front() - '0';
  text.remove_prefix(1);
  if (!take(text, '_') || text.size() % 2 != 0) return std::nullopt;
  o.after_key.reserve(text.size() / 2);
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int hi = hex_value(text[i]);
    const int lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    o.after_key += static_cast<char>(hi << 4 | lo);
  }
  if (!plausible_key(o.after_key)) return std::nullopt;
  return o;
}

}  // namespace oasync::serve
