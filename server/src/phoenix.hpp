// The Phoenix Channels wire, version 2 (vsn=2.0.0), as the phoenix npm
// package (1.8.x) speaks it (../shared/design/phoenix-channels-notes.md):
// text frames are JSON arrays [join_ref, ref, topic, event, payload]; a
// server's binary push is [kind 0][len join_ref][len topic][len event], those
// strings, then the payload bytes, which phoenix.js hands to channel.on() as
// an ArrayBuffer. Pure functions: the socket (channel_socket.cpp) uses them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace oasync::serve::phoenix {

// A client's frame. Refs are strings from the client's counter (or null).
struct Frame {
  std::optional<std::string> join_ref;
  std::optional<std::string> ref;
  std::string topic;
  std::string event;
  nlohmann::json payload;
};

// The longest ref or topic accepted: each must fit a binary frame's length
// byte.
inline constexpr std::size_t kMaxField = 255;

// `text` as a frame; nullopt with `error` naming what is wrong (the value
// quoted, cut short) when it is not JSON, not an array of five, or a field
// has the wrong type or length.
std::optional<Frame> parse(std::string_view text, std::string& error);

// A JSON frame: [join_ref, ref, topic, event, payload], null for absent refs.
std::string frame(const std::optional<std::string>& join_ref, const std::optional<std::string>& ref,
                  std::string_view topic, std::string_view event, const nlohmann::json& payload);

// The reply to `request`: phx_reply with {"status": status, "response": response}.
std::string reply(const Frame& request, std::string_view status, const nlohmann::json& response);

// The head of a binary push (kind 0); the payload follows it in the same
// frame. Each string at most kMaxField bytes.
std::string binary_push_head(std::string_view join_ref, std::string_view topic,
                             std::string_view event);

// What a client offered in Sec-WebSocket-Protocol: "phoenix", and
// phoenix.js's authToken ("base64url.bearer.phx." and the token in standard
// base64 without padding, despite the name).
struct Offer {
  bool phoenix = false;
  std::optional<std::string> token;
};
// nullopt with `error` set when the token entry is not base64.
std::optional<Offer> parse_offer(std::string_view header, std::string& error);

}  // namespace oasync::serve::phoenix
