#include "oasync/canonical_json.hpp"

#include <openssl/evp.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <vector>

#include "json_limits.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

using json = nlohmann::json;

// Builds the value through nlohmann's SAX interface so that depth and
// duplicate keys are checked as they are read, before anything deep is built.
class CanonicalBuilder : public nlohmann::json_sax<json> {
 public:
  explicit CanonicalBuilder(int max_depth) : max_depth_(max_depth) {}

  json& root() { return root_; }
  const std::string& failure() const { return failure_; }

  bool null() override { return put(json(nullptr)); }
  bool boolean(bool v) override { return put(json(v)); }
  bool number_integer(number_integer_t v) override { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(json(v)); }
  bool number_float(number_float_t v, const string_t& text) override {
    if (!std::isfinite(v)) return fail(fmt::format("number {} is out of range", text));
    return put(json(v));
  }
  bool string(string_t& v) override { return put(json(std::move(v))); }
  bool binary(binary_t&) override { return fail("binary values are not JSON"); }

  bool start_object(std::size_t) override { return open(json::object()); }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    json& object = *stack_.back();
    if (object.contains(k)) return fail(fmt::format("duplicate key \"{}\"", k));
    pending_key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // Drop nlohmann's "[json.exception.parse_error.101] parse error at line 1,
    // column 5: " prefix down to what went wrong; keep the byte position.
    std::string message = ex.what();
    const auto start = message.find("syntax error");
    const auto bracket = message.find("] ");
    failure_ = start != std::string::npos     ? message.substr(start)
               : bracket != std::string::npos ? message.substr(bracket + 2)
                                              : message;
    failure_ += fmt::format(" (at byte {})", position);
    position_ = position;
    return false;
  }

  std::size_t position() const { return position_; }

 private:
  bool put(json value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return true;
    }
    json& parent = *stack_.back();
    if (parent.is_object()) {
      parent[pending_key_] = std::move(value);
    } else {
      parent.push_back(std::move(value));
    }
    return true;
  }

  bool open(json container) {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      return fail(fmt::format("nesting deeper than {} levels", max_depth_));
    }
    json* slot = nullptr;
    if (stack_.empty()) {
      root_ = std::move(container);
      slot = &root_;
    } else {
      json& parent = *stack_.back();
      if (parent.is_object()) {
        slot = &(parent[pending_key_] = std::move(container));
      } else {
        parent.push_back(std::move(container));
        slot = &parent.back();
      }
    }
    stack_.push_back(slot);
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  bool fail(std::string message) {
    failure_ = std::move(message);
    return false;
  }

  int max_depth_;
  json root_;
  std::vector<json*> stack_;
  std::string pending_key_;
  std::string failure_;
  std::size_t position_ = 0;
};

}  // namespace

namespace internal {

json parse_json(std::string_view text, int max_depth) {
  CanonicalBuilder builder(max_depth);
  const bool ok = json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json,
                                  /*strict=*/true);
  if (!ok) {
    throw Error(Code::invalid_input,
                builder.failure().empty() ? std::string("invalid JSON") : builder.failure());
  }
  return std::move(builder.root());
}

}  // namespace internal

CanonicalJson canonicalize(std::string_view text, JsonShape shape, int max_depth) {
  const json value = internal::parse_json(text, max_depth);
  if (shape == JsonShape::object && !value.is_object()) {
    throw Error(Code::invalid_input,
                fmt::format("expected a JSON object, found {}", value.type_name()));
  }
  CanonicalJson out;
  try {
    // std::map keeps object keys sorted by bytes; dump() writes no whitespace,
    // escapes only what JSON requires and keeps UTF-8 raw (ensure_ascii=false).
    out.text = value.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::strict);
  } catch (const json::exception& ex) {
    throw Error(Code::invalid_input, fmt::format("invalid UTF-8 in a string: {}", ex.what()));
  }
  out.sha256 = sha256(out.text);
  return out;
}

std::array<std::uint8_t, 32> sha256(std::string_view bytes) {
  std::array<std::uint8_t, 32> digest{};
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != digest.size()) {
    throw Error(Code::internal, "SHA-256 failed in OpenSSL");
  }
  return digest;
}

std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '\0');
  char* p = out.data();
  for (const unsigned char c : bytes) {
    *p++ = kDigits[c >> 4];
    *p++ = kDigits[c & 0xf];
  }
  return out;
}

std::string to_hex(const std::array<std::uint8_t, 32>& digest) {
  return to_hex(std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

}  // namespace oasync
