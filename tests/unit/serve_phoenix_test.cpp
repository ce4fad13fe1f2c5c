// The Phoenix Channels V2 wire of the sync:v1 channel: client frames parsed
// or refused with what is wrong, replies and pushes as phoenix.js reads them,
// and the authToken it offers in Sec-WebSocket-Protocol.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "phoenix.hpp"

using namespace oasync::serve;
using json = nlohmann::json;

TEST_CASE("phoenix frames: a join, a heartbeat, and null refs") {
  std::string error;
  auto f =
      phoenix::parse(R"(["3","3","sync:v1:t.a","phx_join",{"epoch":"e","watermark":"7"}])", error);
  REQUIRE(f.has_value());
  CHECK(f->join_ref == "3");
  CHECK(f->ref == "3");
  CHECK(f->topic == "sync:v1:t.a");
  CHECK(f->event == "phx_join");
  CHECK(f->payload == json::parse(R"({"epoch":"e","watermark":"7"})"));
  f = phoenix::parse(R"([null,"12","phoenix","heartbeat",{}])", error);
  REQUIRE(f.has_value());
  CHECK_FALSE(f->join_ref.has_value());
  // The reply carries the same refs and topic, refs as strings.
  CHECK(phoenix::reply(*f, "ok", json::object()) ==
        R"([null,"12","phoenix","phx_reply",{"response":{},"status":"ok"}])");
  CHECK(phoenix::frame("4", std::nullopt, "sync:v1:t.a", "phx_close", json::object()) ==
        R"(["4",null,"sync:v1:t.a","phx_close",{}])");
}

TEST_CASE("phoenix frames: what is refused, and the error names it") {
  const struct {
    const char* text;
    const char* error;
  } cases[] = {
      {"not json", "the frame is not JSON"},
      {R"({"a":1})", R"(the frame is not [join_ref, ref, topic, event, payload]: {"a":1})"},
      {R"([null,"1","phoenix","heartbeat"])", "the frame is not [join_ref, ref, topic, event"},
      {R"([1,"1","t","e",{}])", "join_ref must be a string or null, not 1"},
      {R"([null,2,"t","e",{}])", "ref must be a string or null, not 2"},
      {R"([null,"1",null,"e",{}])", "topic must be a string of at most 255 bytes, not null"},
      {R"([null,"1","t",["e"],{}])", R"(event must be a string of at most 255 bytes, not ["e"])"},
      {R"([null,"1","t","e",[]])", "the payload must be an object, not []"},
      {R"([null,"1","t","e","x"])", R"(the payload must be an object, not "x")"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    std::string error;
    CHECK_FALSE(phoenix::parse(c.text, error).has_value());
    CHECK(error.substr(0, std::string(c.error).size()) == c.error);
  }
  std::string error;
  const std::string long_ref(256, 'r');
  CHECK_FALSE(phoenix::parse(R"([")" + long_ref + R"(","1","t","e",{}])", error).has_value());
  CHECK(error == "join_ref is longer than 255 bytes");
  // A long value is quoted cut short.
  CHECK_FALSE(phoenix::parse("[" + std::string(100, '1') + R"(,"1","t","e",{}])", error));
  CHECK(error.size() < 120);
}

TEST_CASE("phoenix binary push: kind 0, the lengths, the strings") {
  const std::string head = phoenix::binary_push_head("12", "sync:v1:t.a", "batch");
  CHECK(head == std::string("\x00\x02\x0b\x05", 4) + "12" + "sync:v1:t.a" + "batch");
}

TEST_CASE("phoenix authToken: the offer, decoded from base64 without padding") {
  std::string error;
  // btoa("tok-1") = "dG9rLTE=", sent without '='.
  auto offer = phoenix::parse_offer("phoenix, base64url.bearer.phx.dG9rLTE", error);
  REQUIRE(offer.has_value());
  CHECK(offer->phoenix);
  CHECK(offer->token == "tok-1");
  // Lengths 1 and 2 mod 3, and '+' and '/'.
  offer = phoenix::parse_offer("base64url.bearer.phx.YQ", error);
  CHECK(offer->token == "a");
  CHECK_FALSE(offer->phoenix);
  offer = phoenix::parse_offer("base64url.bearer.phx.YWI,phoenix", error);
  CHECK(offer->token == "ab");
  CHECK(offer->phoenix);
  offer = phoenix::parse_offer("base64url.bearer.phx.+/8", error);
  CHECK(offer->token == std::string("\xfb\xff", 2));
  offer = phoenix::parse_offer("", error);
  CHECK_FALSE(offer->phoenix);
  CHECK_FALSE(offer->token.has_value());
  // Not base64: refused, never half-read.
  for (const char* bad : {"base64url.bearer.phx.dG9r-LTE", "base64url.bearer.phx.dG9rLTE=",
                          "base64url.bearer.phx.", "base64url.bearer.phx.a"}) {
    CAPTURE(bad);
    CHECK_FALSE(phoenix::parse_offer(bad, error).has_value());
    CHECK(error == "the authToken in Sec-WebSocket-Protocol is not base64");
  }
}
