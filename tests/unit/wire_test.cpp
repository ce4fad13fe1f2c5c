// Wire formats: frames, protobuf batches and results (pinned by golden
// fixtures), NDJSON lines.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "oasync/error.hpp"
#include "oasync/wire.hpp"
#include "openagents/sync/v1/sink.pb.h"
#include "openagents/sync/v1/sync.pb.h"
#include "process.hpp"

namespace {

std::string read_fixture(const std::string& name) {
  std::ifstream in(oasync::test::source_dir() + "/tests/fixtures/wire/" + name, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

oasync::Batch sample_batch() {
  oasync::Batch batch;
  oasync::DocWrite a;
  a.topic = "runtime.run_summaries";
  a.doc_key = "run_summary:run_1";
  a.scope = "org:42";
  a.payload = R"({"status":"running","steps":3})";
  a.source_stream = "run:run_1";
  a.source_seq = 17;
  batch.writes.push_back(a);
  oasync::DocWrite b;
  b.topic = "runtime.run_summaries";
  b.doc_key = "run_summary:run_0";
  b.op = oasync::Op::delete_;
  b.expected_version = 4;
  batch.writes.push_back(b);
  batch.checkpoint = oasync::ProducerCheckpoint{"runtime-projector", 3, 1234};
  return batch;
}

}  // namespace

TEST_CASE("frames split a stream at 4-byte big-endian lengths, however it arrives") {
  const std::string stream = oasync::encode_frame("hello") + oasync::encode_frame("") +
                             oasync::encode_frame(std::string(70000, 'x'));
  CHECK(stream.substr(0, 4) == std::string("\0\0\0\5", 4));
  for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{4096}, stream.size()}) {
    CAPTURE(chunk);
    oasync::FrameDecoder decoder;
    std::vector<std::string> frames;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      decoder.feed(std::string_view(stream).substr(i, chunk));
      while (auto f = decoder.next()) frames.push_back(*f);
    }
    REQUIRE(frames.size() == 3);
    CHECK(frames[0] == "hello");
    CHECK(frames[1].empty());
    CHECK(frames[2] == std::string(70000, 'x'));
    CHECK_FALSE(decoder.mid_frame());
    CHECK(decoder.frames() == 3);
  }
}

TEST_CASE("a hostile frame length is refused before anything is buffered") {
  oasync::FrameDecoder decoder(1 << 20);
  decoder.feed(oasync::encode_frame("ok"));
  CHECK(decoder.next() == std::optional<std::string>("ok"));
  CHECK_THROWS_WITH_AS(
      decoder.feed(std::string("\xff\xff\xff\xff", 4)),
      "frame 2: length 4294967295 exceeds the maximum of 1048576 bytes; framing lost",
      oasync::Error);
  oasync::FrameDecoder partial;
  partial.feed(std::string("\0\0\0\x10partial", 11));
  CHECK_FALSE(partial.next().has_value());
  CHECK(partial.mid_frame());
}

TEST_CASE("WriteBatch encoding is pinned by a golden fixture") {
  const std::string golden = read_fixture("write_batch.bin");
  CHECK(oasync::encode_batch(sample_batch()) == golden);
  const oasync::Batch decoded = oasync::decode_batch(golden);
  REQUIRE(decoded.writes.size() == 2);
  CHECK(decoded.writes[0].doc_key == "run_summary:run_1");
  CHECK(decoded.writes[0].scope == "org:42");
  CHECK(decoded.writes[0].source_seq == std::optional<std::int64_t>(17));
  CHECK_FALSE(decoded.writes[0].expected_version.has_value());
  CHECK(decoded.writes[1].op == oasync::Op::delete_);
  CHECK(decoded.writes[1].expected_version == std::optional<std::int64_t>(4));
  REQUIRE(decoded.checkpoint.has_value());
  CHECK(decoded.checkpoint->producer_id == "runtime-projector");
  CHECK(decoded.checkpoint->epoch == 3);
  CHECK(decoded.checkpoint->position == 1234);
}

TEST_CASE("BatchResult encoding is pinned by a golden fixture") {
  std::vector<oasync::WriteResult> results(2);
  results[0].outcome = oasync::Outcome::applied;
  results[0].doc_version = 5;
  results[0].watermark = 99;
  results[1].outcome = oasync::Outcome::rejected;
  results[1].reason = oasync::RejectReason::payload_too_large;
  results[1].detail = "too big";
  const std::string golden = read_fixture("batch_result.bin");
  CHECK(oasync::encode_results(results) == golden);
  const auto decoded = oasync::decode_results(golden);
  REQUIRE(decoded.results.size() == 2);
  CHECK(decoded.results[0].watermark == 99);
  CHECK(decoded.results[1].reason == oasync::RejectReason::payload_too_large);
  CHECK_FALSE(decoded.error_code.has_value());
}

TEST_CASE("the client Update envelope is pinned by a golden fixture") {
  openagents::sync::v1::ServerMessage message;
  auto* u = message.mutable_update();
  u->set_topic("runtime.run_summaries");
  u->set_doc_key("run_summary:run_1");
  u->set_doc_version(2);
  u->set_payload(R"({"status":"done"})");
  u->set_watermark(41);
  u->set_epoch("2810e86e-9c76-4b22-afd4-2122b620b950");
  u->set_scope("org:42");
  u->set_op(openagents::sync::v1::OP_UPSERT);
  u->set_payload_hash(std::string(32, '\x11'));
  CHECK(message.SerializeAsString() == read_fixture("server_message_update.bin"));
}

TEST_CASE("uint64 values above 2^63-1 are refused, naming the write") {
  openagents::sync::v1::ServerMessage unused;
  std::string bytes = read_fixture("write_batch_huge_seq.bin");
  CHECK_THROWS_WITH_AS(oasync::decode_batch(bytes),
                       "write 0: source_seq 18446744073709551615 is above 2^63-1", oasync::Error);
  CHECK_THROWS_WITH_AS(oasync::decode_batch("\xff\xff garbage"),
                       doctest::Contains("not a valid WriteBatch"), oasync::Error);
}

TEST_CASE("NDJSON lines parse into writes: mistakes name the field and quote the value") {
  const auto w = oasync::parse_write_line(
      R"({"topic":"t","doc_key":"k:1","scope":"org:1","op":"delete","source_stream":"s","source_seq":3,"expected_version":2})");
  CHECK(w.topic == "t");
  CHECK(w.op == oasync::Op::delete_);
  CHECK(w.source_seq == std::optional<std::int64_t>(3));
  CHECK(w.expected_version == std::optional<std::int64_t>(2));
  const auto p =
      oasync::parse_write_line(R"({"topic":"t","doc_key":"k:1","payload":{"b":1,"a":[]}})");
  CHECK(p.payload == R"({"a":[],"b":1})");
  CHECK(p.op == oasync::Op::upsert);

  struct Bad {
    const char* line;
    const char* message;
  };
  const Bad cases[] = {
      {R"({"topic":"t","paylod":{}})", "unknown field \"paylod\""},
      {R"({"topic":7})", "field \"topic\" must be a string, found 7"},
      {R"({"op":"upsrt"})", "field \"op\" must be \"upsert\" or \"delete\", found \"upsrt\""},
      {R"({"payload":[1]})", "field \"payload\" must be a JSON object, found [1]"},
      {R"({"source_seq":-1})", "field \"source_seq\" must be a non-negative integer, found -1"},
      {R"({"source_seq":18446744073709551615})", "field \"source_seq\" is above 2^63-1"},
      {R"([1])", "expected a JSON object per line, found array"},
      {R"({"a":1,"a":1})", "duplicate key \"a\""},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.line);
    CHECK_THROWS_WITH_AS(oasync::parse_write_line(bad.line), doctest::Contains(bad.message),
                         oasync::Error);
  }
}

TEST_CASE("NDJSON result lines have a stable shape") {
  oasync::WriteResult r;
  r.outcome = oasync::Outcome::applied;
  r.doc_version = 3;
  r.watermark = 10;
  CHECK(oasync::result_line(7, r) ==
        R"({"line":7,"outcome":"applied","doc_version":3,"watermark":10})");
  oasync::WriteResult bad;
  bad.outcome = oasync::Outcome::rejected;
  bad.reason = oasync::RejectReason::invalid_key;
  bad.detail = "x";
  CHECK(
      oasync::result_line(8, bad) ==
      R"({"line":8,"outcome":"rejected","reason":"invalid_key","detail":"x","doc_version":0,"watermark":0})");
}

namespace {

// How many values a C++ enum has: its to_string answers "unknown" past the last.
template <typename Enum>
int enum_size() {
  int n = 0;
  while (std::string(oasync::to_string(static_cast<Enum>(n))) != "unknown") ++n;
  return n;
}

}  // namespace

TEST_CASE("every outcome and reason survives the proto round trip, and proto has no other") {
  namespace pb = openagents::sync::v1;
  // Each C++ value encodes to a proto value and decodes back to itself.
  const int outcomes = enum_size<oasync::Outcome>();
  const int reasons = enum_size<oasync::RejectReason>();
  for (int o = 0; o < outcomes; ++o) {
    for (int r = 0; r < reasons; ++r) {
      oasync::WriteResult w;
      w.outcome = static_cast<oasync::Outcome>(o);
      w.reason = static_cast<oasync::RejectReason>(r);
      const auto decoded = oasync::decode_results(oasync::encode_results({w}));
      REQUIRE(decoded.results.size() == 1);
      CHECK(decoded.results[0].outcome == w.outcome);
      CHECK(decoded.results[0].reason == w.reason);
    }
  }
  // Each proto value (but OUTCOME_UNSPECIFIED) has a C++ value: decoding and
  // encoding again gives it back. A value added to sink.proto alone fails here.
  using Field = pb::WriteResult;
  const auto proto_round_trip = [](const google::protobuf::EnumDescriptor* values, int first,
                                   void (*set)(Field*, int), int (*get)(const Field*)) {
    for (int i = first; i < values->value_count(); ++i) {
      CAPTURE(values->value(i)->name());
      pb::BatchResult message;
      set(message.add_results(), values->value(i)->number());
      const auto decoded = oasync::decode_results(message.SerializeAsString());
      pb::BatchResult again;
      REQUIRE(again.ParseFromString(oasync::encode_results(decoded.results)));
      CHECK(get(&again.results(0)) == values->value(i)->number());
    }
  };
  CHECK(pb::RejectReason_descriptor()->value_count() == reasons);
  proto_round_trip(
      pb::RejectReason_descriptor(), 0,
      [](Field* f, int v) { f->set_reason(static_cast<pb::RejectReason>(v)); },
      [](const Field* f) { return static_cast<int>(f->reason()); });
  CHECK(pb::Outcome_descriptor()->value_count() == outcomes + 1);
  proto_round_trip(
      pb::Outcome_descriptor(), 1,
      [](Field* f, int v) { f->set_outcome(static_cast<pb::Outcome>(v)); },
      [](const Field* f) { return static_cast<int>(f->outcome()); });
}

TEST_CASE("each error code has one wire code") {
  using oasync::Code;
  const std::vector<std::pair<Code, std::string>> expected = {
      {Code::invalid_argument, "invalid_batch"},
      {Code::invalid_input, "malformed_frame"},
      {Code::not_found, "internal"},
      {Code::refused, "internal"},
      {Code::fenced, "fenced"},
      {Code::database, "database"},
      {Code::outcome_unknown, "outcome_unknown"},
      {Code::internal, "internal"}};
  CHECK(expected.size() == static_cast<std::size_t>(enum_size<Code>()));
  for (const auto& [code, wire] : expected) {
    CAPTURE(oasync::to_string(code));
    CHECK(oasync::wire_code(code) == wire);
    const oasync::Error error(code, "boom", oasync::Retryable::yes, "40001");
    const auto decoded = oasync::decode_results(oasync::encode_error(error));
    CHECK(decoded.error_code == wire);
    CHECK(decoded.error_message == "boom");
    CHECK(decoded.retryable);
  }
}
