// What the sync:v1 channel reads and sends, as bytes: join params, the join
// reply, and the "batch" and "heartbeat" pushes, over the Phoenix wire
// (phoenix.hpp) and sync.proto. Pure functions: the socket
// (channel_socket.cpp) queues and writes what they build.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "oasync/reader.hpp"
#include "view.hpp"

namespace oasync::serve::channel {

// How a socket's pushes are encoded: protobuf in binary frames, or the
// messages' canonical JSON in text frames (encoding=json, for debugging).
enum class Encoding { protobuf, json };

// A frame ready to write: its parts, written as one message without being
// copied together (its own bytes, and messages' bytes it shares with the
// other readers that send them), and their size.
using Part = std::variant<std::string, Message>;
std::string_view bytes_of(const Part& part);
struct Push {
  std::vector<Part> parts;
  bool binary = true;
  std::int64_t bytes = 0;
};

// A text frame (a reply, a phx_close, a disconnect notice).
Push text_push(std::string text);

// A position in a topic: what a join resumes after, and what a client
// persists.
struct Cursor {
  std::string epoch;
  std::int64_t watermark = 0;
};

// A join's params: {} (no position), or {"epoch": UUID, "watermark": "N"}
// (N a decimal string or a JSON number, 0 to 2^63-1). nullopt with `error`
// naming what is wrong, the value quoted, for anything else.
std::optional<std::optional<Cursor>> cursor_of(const nlohmann::json& params, std::string& error);

// The join reply's response: the topic's position, numbers as decimal
// strings (JavaScript numbers lose precision above 2^53).
nlohmann::json position_json(const TopicPosition& position);

// Which channel a push is for.
struct Address {
  std::string_view join_ref;
  std::string_view name;   // "sync:v1:" + topic
  std::string_view topic;  // the oasync topic
};

// The "batch" push: ServerMessage{batch: Batch{messages, position}}.
// `messages` are serialized ServerMessages; with Encoding::protobuf the push
// shares their bytes and writes them as they are, the Batch built around them.
Push batch_push(const Address& to, const std::vector<Message>& messages,
                const std::optional<Cursor>& position, Encoding encoding);

// The "heartbeat" push: where the topic stands (`now`, when known), and
// where the view was delivered through.
Push heartbeat_push(const Address& to, const std::optional<TopicPosition>& now,
                    const std::optional<Cursor>& delivered, Encoding encoding);

}  // namespace oasync::serve::channel
