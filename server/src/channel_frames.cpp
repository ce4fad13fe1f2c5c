#include "channel_frames.hpp"

#include <charconv>
#include <limits>

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/util/json_util.h>

#include "oasync/batch.hpp"
#include "oasync/serve/messages.hpp"
#include "phoenix.hpp"

namespace oasync::serve::channel {
namespace {

namespace pb = openagents::sync::v1;
using json = nlohmann::json;

void append_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out += static_cast<char>(static_cast<unsigned char>(value | 0x80));
    value >>= 7;
  }
  out += static_cast<char>(static_cast<unsigned char>(value));
}

std::size_t varint_size(std::uint64_t value) {
  return google::protobuf::io::CodedOutputStream::VarintSize64(value);
}

// A decimal string: JSON numbers lose precision above 2^53 in JavaScript.
std::string decimal(std::int64_t value) {
  return std::to_string(value);
}

void set_cursor(pb::Cursor* out, std::string_view topic, const Cursor& c) {
  out->set_topic(std::string(topic));
  out->set_epoch(c.epoch);
  out->set_watermark(static_cast<std::uint64_t>(c.watermark));
}

Push sized(Push push) {
  for (const Part& p : push.parts) push.bytes += static_cast<std::int64_t>(bytes_of(p).size());
  return push;
}

// `m` in its canonical JSON, as a JSON push.
Push json_push(const Address& to, std::string_view event, const pb::ServerMessage& m) {
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(m, &text);
  Push push;
  push.binary = false;
  push.parts.push_back(phoenix::frame(std::string(to.join_ref), std::nullopt, to.name, event,
                                      json::parse(text, nullptr, false)));
  return sized(std::move(push));
}

}  // namespace

std::string_view bytes_of(const Part& part) {
  if (const auto* own = std::get_if<std::string>(&part)) return *own;
  return *std::get<Message>(part);
}

Push text_push(std::string text) {
  Push push;
  push.binary = false;
  push.parts.push_back(std::move(text));
  return sized(std::move(push));
}

json position_json(const TopicPosition& p) {
  return {{"topic", p.topic},
          {"epoch", p.epoch},
          {"head", decimal(p.head)},
          {"purged_through", decimal(p.purged_through)}};
}

std::optional<std::optional<Cursor>> cursor_of(const json& params, std::string& error) {
  const auto epoch = params.find("epoch");
  const auto watermark = params.find("watermark");
  const bool has_epoch = epoch != params.end() && !epoch->is_null();
  const bool has_watermark = watermark != params.end() && !watermark->is_null();
  if (!has_epoch && !has_watermark) return std::optional<Cursor>();
  if (!has_epoch || !has_watermark) {
    error = "a position needs both \"epoch\" and \"watermark\"";
    return std::nullopt;
  }
  if (!epoch->is_string() || epoch->get_ref<const std::string&>().empty() ||
      epoch->get_ref<const std::string&>().size() > 64 ||
      !storable_text(epoch->get_ref<const std::string&>())) {
    error = fmt::format("\"epoch\" must be the topic's epoch (a UUID), not {}",
                        epoch->dump(-1, ' ', false, json::error_handler_t::replace).substr(0, 80));
    return std::nullopt;
  }
  Cursor c;
  c.epoch = epoch->get<std::string>();
  bool ok = false;
  if (watermark->is_number_unsigned()) {
    const auto w = watermark->get<std::uint64_t>();
    ok = w <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    c.watermark = static_cast<std::int64_t>(w);
  } else if (watermark->is_number_integer()) {  // (a signed one: from code, not text)
    c.watermark = watermark->get<std::int64_t>();
    ok = c.watermark >= 0;
  } else if (watermark->is_string()) {
    const auto& text = watermark->get_ref<const std::string&>();
    // Digits only, within int64 (from_chars refuses a sign, spaces, and
    // overflow).
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), c.watermark);
    ok = !text.empty() && text.front() != '-' && ec == std::errc() &&
         end == text.data() + text.size();
  }
  if (!ok) {
    error = fmt::format(
        "\"watermark\" must be a whole number from 0 to 2^63-1 (a decimal string), not {}",
        watermark->dump(-1, ' ', false, json::error_handler_t::replace).substr(0, 80));
    return std::nullopt;
  }
  return std::optional<Cursor>(c);
}

Push batch_push(const Address& to, const std::vector<Message>& messages,
                const std::optional<Cursor>& position, Encoding encoding) {
  if (encoding == Encoding::json) {
    pb::ServerMessage whole;
    pb::Batch* batch = whole.mutable_batch();
    for (const Message& m : messages) batch->add_messages()->ParseFromString(*m);
    if (position) set_cursor(batch->mutable_position(), to.topic, *position);
    return json_push(to, "batch", whole);
  }
  std::string cursor;
  if (position) {
    pb::Cursor c;
    set_cursor(&c, to.topic, *position);
    c.SerializeToString(&cursor);
  }
  std::uint64_t size = 0;
  for (const Message& m : messages) size += 1 + varint_size(m->size()) + m->size();
  if (position) size += 1 + varint_size(cursor.size()) + cursor.size();
  Push push;
  push.parts.reserve(2 + 2 * messages.size());
  std::string head = phoenix::binary_push_head(to.join_ref, to.name, "batch");
  head += '\x42';  // ServerMessage field 8 (batch), length-delimited
  append_varint(head, size);
  push.parts.push_back(std::move(head));
  for (const Message& m : messages) {
    std::string prefix(1, '\x0a');  // Batch field 1 (messages)
    append_varint(prefix, m->size());
    push.parts.push_back(std::move(prefix));
    push.parts.push_back(m);
  }
  if (position) {
    std::string tail(1, '\x12');  // Batch field 2 (position)
    append_varint(tail, cursor.size());
    tail += cursor;
    push.parts.push_back(std::move(tail));
  }
  return sized(std::move(push));
}

Push heartbeat_push(const Address& to, const std::optional<TopicPosition>& now,
                    const std::optional<Cursor>& delivered, Encoding encoding) {
  pb::ServerMessage m;
  pb::Heartbeat* heartbeat = m.mutable_heartbeat();
  if (now) messages::to_proto(*now, heartbeat->add_watermarks());
  if (delivered) set_cursor(heartbeat->add_delivered(), to.topic, *delivered);
  if (encoding == Encoding::json) return json_push(to, "heartbeat", m);
  Push push;
  push.parts.push_back(phoenix::binary_push_head(to.join_ref, to.name, "heartbeat"));
  push.parts.push_back(m.SerializeAsString());
  return sized(std::move(push));
}

}  // namespace oasync::serve::channel
