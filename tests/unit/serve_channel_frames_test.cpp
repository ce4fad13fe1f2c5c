// What the sync:v1 channel reads and sends: join params, and the batch and
// heartbeat pushes, decoded back with protobuf itself.
#include <doctest/doctest.h>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "channel_frames.hpp"
#include "openagents/sync/v1/sync.pb.h"
#include "phoenix.hpp"

using namespace oasync;
using namespace oasync::serve;
using namespace oasync::serve::channel;
using json = nlohmann::json;
namespace pb = openagents::sync::v1;

namespace {

std::string joined(const Push& push) {
  std::string out;
  for (const Part& p : push.parts) out += bytes_of(p);
  return out;
}

// The ServerMessage after a binary push's head.
pb::ServerMessage payload_of(const Push& push, std::string_view event) {
  const std::string bytes = joined(push);
  const std::string head = phoenix::binary_push_head("7", "sync:v1:t.a", event);
  REQUIRE(bytes.substr(0, head.size()) == head);
  pb::ServerMessage m;
  REQUIRE(m.ParseFromString(bytes.substr(head.size())));
  return m;
}

std::string update(const char* key, std::uint64_t version) {
  pb::ServerMessage m;
  m.mutable_update()->set_doc_key(key);
  m.mutable_update()->set_doc_version(version);
  m.mutable_update()->set_payload(std::string(200, 'p'));  // a two-byte length
  return m.SerializeAsString();
}

const Address kTo{"7", "sync:v1:t.a", "t.a"};

}  // namespace

TEST_CASE("a batch push: the messages as they are, in order, and the position") {
  const std::vector<Message> messages{shared(update("k:1", 1)), shared(update("k:2", 4)),
                                      shared(update("k:1", 2))};
  const Push push = batch_push(kTo, messages, Cursor{"e-1", 300}, Encoding::protobuf);
  CHECK(push.binary);
  // The messages' bytes are shared, not copied: head, then (prefix, message) each.
  REQUIRE(push.parts.size() == 1 + 2 * 3 + 1);
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(std::holds_alternative<Message>(push.parts[2 + 2 * i]));
    CHECK(std::get<Message>(push.parts[2 + 2 * i]) == messages[i]);
  }
  CHECK(push.bytes == static_cast<std::int64_t>(joined(push).size()));
  const pb::ServerMessage m = payload_of(push, "batch");
  REQUIRE(m.has_batch());
  REQUIRE(m.batch().messages_size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(m.batch().messages(i).SerializeAsString() == *messages[static_cast<std::size_t>(i)]);
  }
  CHECK(m.batch().position().topic() == "t.a");
  CHECK(m.batch().position().epoch() == "e-1");
  CHECK(m.batch().position().watermark() == 300);
  // Inside a snapshot: no position; and an empty batch still decodes.
  const std::vector<Message> none;
  const pb::ServerMessage empty =
      payload_of(batch_push(kTo, none, std::nullopt, Encoding::protobuf), "batch");
  CHECK(empty.has_batch());
  CHECK(empty.batch().messages_size() == 0);
  CHECK_FALSE(empty.batch().has_position());
}

TEST_CASE("a batch push in the JSON encoding: the same messages, canonical JSON, a text frame") {
  const std::vector<Message> messages{shared(update("k:1", 1))};
  const Push push = batch_push(kTo, messages, Cursor{"e-1", 9}, Encoding::json);
  CHECK_FALSE(push.binary);
  const json frame = json::parse(joined(push));
  CHECK(frame[0] == "7");
  CHECK(frame[1].is_null());
  CHECK(frame[2] == "sync:v1:t.a");
  CHECK(frame[3] == "batch");
  pb::ServerMessage m;
  REQUIRE(google::protobuf::util::JsonStringToMessage(frame[4].dump(), &m).ok());
  CHECK(m.batch().messages(0).update().doc_key() == "k:1");
  CHECK(m.batch().position().watermark() == 9);
}

TEST_CASE("a heartbeat push: the topic's position and the delivered one") {
  TopicPosition now;
  now.topic = "t.a";
  now.epoch = "e-1";
  now.head = 40;
  now.purged_through = 3;
  const pb::ServerMessage m =
      payload_of(heartbeat_push(kTo, now, Cursor{"e-1", 38}, Encoding::protobuf), "heartbeat");
  REQUIRE(m.has_heartbeat());
  CHECK(m.heartbeat().watermarks(0).head() == 40);
  CHECK(m.heartbeat().watermarks(0).purged_through() == 3);
  CHECK(m.heartbeat().delivered(0).topic() == "t.a");
  CHECK(m.heartbeat().delivered(0).watermark() == 38);
  const pb::ServerMessage bare =
      payload_of(heartbeat_push(kTo, std::nullopt, std::nullopt, Encoding::protobuf), "heartbeat");
  CHECK(bare.has_heartbeat());
  CHECK(bare.heartbeat().delivered_size() == 0);
}

TEST_CASE("join params: a position, none, and what is refused") {
  std::string error;
  auto c = cursor_of(json::object(), error);
  REQUIRE(c.has_value());
  CHECK_FALSE(c->has_value());
  c = cursor_of(json{{"epoch", "e"}, {"watermark", "9223372036854775807"}}, error);
  REQUIRE(c.has_value());
  REQUIRE(c->has_value());
  CHECK((*c)->watermark == 9223372036854775807);
  c = cursor_of(json{{"epoch", "e"}, {"watermark", 12}}, error);
  REQUIRE(c.has_value());
  CHECK((*c)->watermark == 12);
  c = cursor_of(json::parse(R"({"epoch":"e","watermark":13})"), error);
  REQUIRE(c.has_value());
  CHECK((*c)->watermark == 13);
  const json refused[] = {
      json{{"watermark", "5"}},
      json{{"epoch", "e"}},
      json{{"epoch", 5}, {"watermark", "5"}},
      json{{"epoch", ""}, {"watermark", "5"}},
      json{{"epoch", "e"}, {"watermark", "9223372036854775808"}},
      json{{"epoch", "e"}, {"watermark", "-1"}},
      json{{"epoch", "e"}, {"watermark", "+1"}},
      json{{"epoch", "e"}, {"watermark", "1 "}},
      json{{"epoch", "e"}, {"watermark", ""}},
      json{{"epoch", "e"}, {"watermark", -1}},
      json{{"epoch", "e"}, {"watermark", 1.5}},
      json{{"epoch", "e"}, {"watermark", 18446744073709551615ULL}},
  };
  for (const json& params : refused) {
    CAPTURE(params.dump());
    error.clear();
    CHECK_FALSE(cursor_of(params, error).has_value());
    CHECK_FALSE(error.empty());
  }
  CHECK_FALSE(cursor_of(json{{"epoch", "e"}, {"watermark", "x7"}}, error).has_value());
  CHECK(error ==
        "\"watermark\" must be a whole number from 0 to 2^63-1 (a decimal string), not "
        "\"x7\"");
}
