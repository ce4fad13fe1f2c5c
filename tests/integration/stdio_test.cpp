// `oasync sink --stdio`: the framed port protocol, end to end.
#include <doctest/doctest.h>

#include "frames.hpp"
#include "test_db.hpp"
#include "writes.hpp"

using namespace oasync;
using namespace oasync::test;

namespace {

std::vector<std::string> sink_argv(const TestDatabase& db) {
  return {oasync_binary(), "--database-url", db.url(), "sink", "--stdio"};
}

}  // namespace

TEST_CASE(
    "frames are answered in order, one per frame, a malformed frame is answered and the stream "
    "goes on") {
  TestDatabase db;
  Child sink(sink_argv(db));
  std::string stream =
      encode_frame(encode_batch(batch_of({upsert("a", R"({"n":1})"), upsert("b", "[]")})));
  stream += encode_frame("\xff\xff not protobuf");
  stream += encode_frame(encode_batch(batch_of({upsert("a", R"({"n":2})")})));
  REQUIRE(sink.write(stream));
  DecodedResult first, second, third;
  REQUIRE(read_answer(sink, first));
  REQUIRE(read_answer(sink, second));
  REQUIRE(read_answer(sink, third));
  REQUIRE(first.results.size() == 2);
  CHECK(first.results[0].outcome == Outcome::applied);
  CHECK(first.results[0].watermark == 1);
  CHECK(first.results[1].reason == RejectReason::payload_not_object);
  CHECK(second.results.empty());
  CHECK(second.error_code == std::optional<std::string>("malformed_frame"));
  CHECK(second.error_message.find("frame 2: not a valid WriteBatch") == 0);
  CHECK_FALSE(second.retryable);
  REQUIRE(third.results.size() == 1);
  CHECK(third.results[0].doc_version == 2);
  CHECK(third.results[0].watermark == 2);
  sink.close_stdin();
  CHECK(sink.wait() == 0);
  CHECK(sink.stderr_text() ==
        "oasync sink: 3 frames: 2 applied, 0 unchanged, 0 duplicate, 0 conflict, 1 rejected\n");
}

TEST_CASE("frames sent without waiting share transactions (group commit), answers stay per frame") {
  TestDatabase db;
  Child sink(sink_argv(db));
  std::string stream;
  for (int i = 0; i < 200; ++i) {
    stream += encode_frame(encode_batch(batch_of({upsert(std::to_string(i), "{}")})));
  }
  REQUIRE(sink.write(stream));
  for (int i = 0; i < 200; ++i) {
    DecodedResult answer;
    REQUIRE(read_answer(sink, answer));
    REQUIRE(answer.results.size() == 1);
    CHECK(answer.results[0].watermark == i + 1);
  }
  sink.close_stdin();
  CHECK(sink.wait() == 0);
  // now() is the transaction's start: fewer distinct values than frames means
  // frames were grouped.
  const int transactions =
      std::stoi(db.scalar("SELECT count(DISTINCT committed_at) FROM oasync.events"));
  CHECK(transactions < 100);
}

TEST_CASE("a hostile frame length loses the framing: exit 1, nothing of it applied") {
  TestDatabase db;
  Child sink(sink_argv(db));
  std::string stream = encode_frame(encode_batch(batch_of({upsert("a", "{}")})));
  stream += std::string("\xff\xff\xff\xff", 4);  // 4 GiB
  REQUIRE(sink.write(stream));
  DecodedResult first;
  REQUIRE(read_answer(sink, first));
  CHECK(first.results[0].outcome == Outcome::applied);
  CHECK(sink.wait() == 1);
  CHECK(sink.stderr_text().find("oasync: error: frame 2: length 4294967295 exceeds the maximum of "
                                "16777216 bytes; framing lost") != std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "1");
}

TEST_CASE("input ending inside a frame: exit 1 and the partial frame is not applied") {
  TestDatabase db;
  Child sink(sink_argv(db));
  const std::string frame = encode_frame(encode_batch(batch_of({upsert("a", "{}")})));
  REQUIRE(sink.write(frame + frame.substr(0, frame.size() - 3)));
  sink.close_stdin();
  DecodedResult first;
  REQUIRE(read_answer(sink, first));
  CHECK(sink.wait() == 1);
  CHECK(sink.stderr_text().find("frame 2: input ended inside the frame; framing lost") !=
        std::string::npos);
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "1");
}

TEST_CASE("NDJSON input: results per line, malformed lines named, summary on stderr") {
  TestDatabase db;
  const std::string input =
      R"({"topic":"runtime.run_summaries","doc_key":"run_summary:a","payload":{"n":1},"source_stream":"run:a","source_seq":1})"
      "\n\n"
      R"({"topic":"runtime.run_summaries","doc_key":"run_summary:a","paylod":{}})"
      "\n"
      R"({"topic":"runtime.run_summaries","doc_key":"run_summary:a","payload":{"n":1},"source_stream":"run:a","source_seq":1})"
      "\n"
      R"({"topic":"runtime.run_summaries","doc_key":"run_summary:a","op":"delete"})";
  const auto r =
      run_oasync({"--database-url", db.url(), "sink", "--input", "-", "--results"}, input);
  CHECK(r.exit_code == 0);
  CHECK(
      r.out ==
      R"({"line":1,"outcome":"applied","doc_version":1,"watermark":1})"
      "\n"
      R"({"line":3,"outcome":"rejected","reason":"malformed","detail":"line 3: unknown field \"paylod\"","doc_version":0,"watermark":0})"
      "\n"
      R"({"line":4,"outcome":"duplicate","detail":"source_seq 1 is at or below the stored 1 of stream \"run:a\"","doc_version":1,"watermark":0})"
      "\n"
      R"({"line":5,"outcome":"applied","doc_version":2,"watermark":2})"
      "\n");
  CHECK(r.err ==
        "oasync sink: 4 lines: 2 applied, 0 unchanged, 1 duplicate, 0 conflict, 1 rejected\n");
}

TEST_CASE("NDJSON: an overlong line is answered without being buffered") {
  TestDatabase db;
  const std::string input =
      R"({"topic":"runtime.run_summaries","doc_key":"run_summary:a","payload":{"x":")" +
      std::string(5000, 'x') + "\"}}\n" +
      R"({"topic":"runtime.run_summaries","doc_key":"run_summary:b","payload":{}})" + "\n";
  const auto r = run_oasync({"--database-url", db.url(), "sink", "--input", "-", "--results",
                             "--max-frame-bytes", "1024"},
                            input);
  CHECK(r.exit_code == 0);
  CHECK(
      r.out.find(
          R"({"line":1,"outcome":"rejected","reason":"malformed","detail":"line 1: longer than the maximum of 1024 bytes")") ==
      0);
  CHECK(r.out.find(R"({"line":2,"outcome":"applied")") != std::string::npos);
}

TEST_CASE("NDJSON: a database failure exits 1 and says which lines were not applied") {
  TestDatabase db;
  // Make the write statement fail: the events table is gone.
  db.scalar("ALTER TABLE oasync.events RENAME TO events_gone");
  const auto r =
      run_oasync({"--database-url", db.url(), "sink", "--input", "-"},
                 R"({"topic":"runtime.run_summaries","doc_key":"run_summary:a","payload":{}})"
                 "\n");
  CHECK(r.exit_code == 1);
  // The summary first, then the error, reported once.
  const std::string summary =
      "oasync sink: 0 lines: 0 applied, 0 unchanged, 0 duplicate, 0 conflict, 0 rejected, 1 in "
      "failed batches\n";
  CHECK(r.err.find(summary + "oasync: error: lines 1 to 1 were not applied: ") == 0);
  CHECK(r.err.find("relation \"oasync.events\" does not exist") != std::string::npos);
}
