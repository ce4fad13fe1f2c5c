#include "phoenix.hpp"

#include <openssl/evp.h>

#include <vector>

#include <fmt/format.h>

namespace oasync::serve::phoenix {
namespace {

using json = nlohmann::json;

// A value for an error message: its JSON text, at most 60 bytes of it.
std::string quoted(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

bool string_or_null(const json& value, const char* name, std::optional<std::string>& out,
                    std::string& error) {
  if (value.is_null()) return true;
  if (!value.is_string()) {
    error = fmt::format("{} must be a string or null, not {}", name, quoted(value));
    return false;
  }
  out = value.get<std::string>();
  if (out->size() > kMaxField) {
    error = fmt::format("{} is longer than {} bytes", name, kMaxField);
    return false;
  }
  return true;
}

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

json ref_json(const std::optional<std::string>& ref) {
  return ref ? json(*ref) : json(nullptr);
}

// Standard base64 without padding, as phoenix.js writes it (btoa, '='
// removed); nullopt for anything else.
std::optional<std::string> base64_decode(std::string_view text) {
  if (text.empty() || text.size() > 16384) return std::nullopt;
  for (const char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/';
    if (!ok) return std::nullopt;
  }
  std::string padded(text);
  const std::size_t pad = (4 - padded.size() % 4) % 4;
  if (pad == 3) return std::nullopt;
  padded.append(pad, '=');
  std::vector<unsigned char> out(padded.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(padded.data()),
                                static_cast<int>(padded.size()));
  if (n < 0) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(out.data()), static_cast<std::size_t>(n) - pad);
}

constexpr std::string_view kTokenPrefix = "base64url.bearer.phx.";

}  // namespace

std::optional<Frame> parse(std::string_view text, std::string& error) {
  const json value = json::parse(text, nullptr, false);
  if (value.is_discarded()) {
    error = "the frame is not JSON";
    return std::nullopt;
  }
  if (!value.is_array() || value.size() != 5) {
    error =
        fmt::format("the frame is not [join_ref, ref, topic, event, payload]: {}", quoted(value));
    return std::nullopt;
  }
  Frame f;
  if (!string_or_null(value[0], "join_ref", f.join_ref, error) ||
      !string_or_null(value[1], "ref", f.ref, error)) {
    return std::nullopt;
  }
  for (const auto& [index, name, out] :
       {std::tuple{2, "topic", &f.topic}, std::tuple{3, "event", &f.event}}) {
    const json& v = value[static_cast<std::size_t>(index)];
    if (!v.is_string() || v.get_ref<const std::string&>().size() > kMaxField) {
      error = fmt::format("{} must be a string of at most {} bytes, not {}", name, kMaxField,
                          quoted(v));
      return std::nullopt;
    }
    *out = v.get<std::string>();
  }
  if (!value[4].is_object()) {
    error = fmt::format("the payload must be an object, not {}", quoted(value[4]));
    return std::nullopt;
  }
  f.payload = value[4];
  return f;
}

std::string frame(const std::optional<std::string>& join_ref, const std::optional<std::string>& ref,
                  std::string_view topic, std::string_view event, const json& payload) {
  return dump(json::array(
      {ref_json(join_ref), ref_json(ref), std::string(topic), std::string(event), payload}));
}

std::string reply(const Frame& request, std::string_view status, const json& response) {
  return frame(request.join_ref, request.ref, request.topic, "phx_reply",
               json{{"status", std::string(status)}, {"response", response}});
}

std::string binary_push_head(std::string_view join_ref, std::string_view topic,
                             std::string_view event) {
  std::string head;
  head.reserve(4 + join_ref.size() + topic.size() + event.size());
  head += '\0';
  head += static_cast<char>(static_cast<unsigned char>(join_ref.size()));
  head += static_cast<char>(static_cast<unsigned char>(topic.size()));
  head += static_cast<char>(static_cast<unsigned char>(event.size()));
  head += join_ref;
  head += topic;
  head += event;
  return head;
}

std::optional<Offer> parse_offer(std::string_view header, std::string& error) {
  Offer offer;
  // Split on commas by hand: a token's base64 may hold '/', which is no
  // token character of RFC 9110.
  while (!header.empty()) {
    const std::size_t comma = header.find(',');
    std::string_view e = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    while (!e.empty() && (e.front() == ' ' || e.front() == '\t')) e.remove_prefix(1);
    while (!e.empty() && (e.back() == ' ' || e.back() == '\t')) e.remove_suffix(1);
    if (e == "phoenix") {
      offer.phoenix = true;
    } else if (e.substr(0, kTokenPrefix.size()) == kTokenPrefix) {
      auto token = base64_decode(e.substr(kTokenPrefix.size()));
      if (!token) {
        error = "the authToken in Sec-WebSocket-Protocol is not base64";
        return std::nullopt;
      }
      offer.token = std::move(token);
    }
  }
  return offer;
}

}  // namespace oasync::serve::phoenix
