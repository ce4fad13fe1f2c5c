// oasync.yaml and topics.yaml: every mistake names file, line and value.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config.hpp"
#include "oasync/error.hpp"
#include "process.hpp"
#include "temp_dir.hpp"
#include "topics_file.hpp"

namespace {

using oasync::test::TempFile;

}  // namespace

TEST_CASE("oasync.yaml is read with its defaults") {
  TempFile f("database_url: \"host=/tmp dbname=x\"\nsink:\n  max_batch_writes: 100\n");
  const auto config = oasync::cli::load_config(f.path);
  CHECK(config.database_url == "host=/tmp dbname=x");
  CHECK(config.sink.max_batch_writes == 100);
  CHECK(config.sink.max_delay_ms == 0);
  CHECK(config.sink.max_frame_bytes == 16u << 20);
}

TEST_CASE("oasync.yaml errors name file, line and the offending value") {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"database_url: x\nsink:\n  batchsize: 5\n", ":3: unknown key \"sink.batchsize\""},
      {"sink:\n  max_batch_writes: lots\n",
       ":2: \"sink.max_batch_writes\" must be a whole number, found \"lots\""},
      {"sink:\n  max_batch_writes: 0\n",
       ":2: \"sink.max_batch_writes\" must be between 1 and 1000000, found \"0\""},
      {"\n\nbatchsize: 5\n", ":3: unknown key \"batchsize\""},
      {"sink: [1, 2\n", ":2: "},
      {"- a\n- b\n", ":1: the top level must be a mapping, found a list"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    TempFile f(c.text);
    CHECK_THROWS_WITH_AS(oasync::cli::load_config(f.path),
                         doctest::Contains((f.path + c.message).c_str()), oasync::Error);
  }
  CHECK_THROWS_WITH_AS(oasync::cli::load_config("/nonexistent/oasync.yaml"),
                       doctest::Contains("cannot read /nonexistent/oasync.yaml"), oasync::Error);
}

TEST_CASE("the serve: section: every key, and errors with file and line") {
  TempFile f(
      "serve:\n  listen: 0.0.0.0\n  port: 8080\n  cors_origins: [\"https://app.example\"]\n"
      "  auth: {algorithm: ES256, key_file: /k.pem, issuer: door, audience: oasync,\n"
      "         query_parameter: t, leeway_seconds: 5}\n"
      "  tenancy: {scope_format: \"tenant/{org_id}\", unscoped: true}\n"
      "  limits: {max_connections: 50, sse_seconds: 30, db_pool: 2, wake_coalesce_ms: 20}\n");
  const auto c = oasync::cli::load_config(f.path).serve;
  CHECK(c.listen == "0.0.0.0");
  CHECK(c.port == 8080);
  CHECK(c.cors_origins == std::vector<std::string>{"https://app.example"});
  CHECK(c.auth.algorithm == "ES256");
  CHECK(c.auth.key_file == "/k.pem");
  CHECK(c.auth.issuer == "door");
  CHECK(c.auth.audience == "oasync");
  CHECK(c.auth.query_parameter == "t");
  CHECK(c.auth.leeway_seconds == 5);
  CHECK(c.tenancy.scope_format == "tenant/{org_id}");
  CHECK(c.tenancy.unscoped);
  CHECK(c.limits.max_connections == 50);
  CHECK(c.limits.sse_seconds == 30);
  CHECK(c.limits.db_pool == 2);
  CHECK(c.limits.wake_coalesce_ms == 20);
  CHECK(c.limits.long_poll_seconds == 20);  // untouched: the default
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"serve:\n  auth:\n    algorithm: HS512\n",
       ":3: \"serve.auth.algorithm\" must be HS256, RS256 or ES256, found \"HS512\""},
      {"serve:\n  limits:\n    sse_second: 5\n", ":3: unknown key \"serve.limits.sse_second\""},
      {"serve:\n  port: 70000\n", ":2: \"serve.port\" must be between 0 and 65535"},
      {"serve:\n  tenancy: {scope_format: org}\n",
       ":2: \"serve.tenancy.scope_format\" must contain {org_id}"},
      {"serve:\n  tenancy: {unscoped: maybe}\n",
       ":2: \"serve.tenancy.unscoped\" must be true or false"},
      {"serve:\n  cors_origins: x\n", ":2: \"serve.cors_origins\" must be a list of strings"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    TempFile bad(c.text);
    CHECK_THROWS_WITH_AS(oasync::cli::load_config(bad.path),
                         doctest::Contains((bad.path + c.message).c_str()), oasync::Error);
  }
}

TEST_CASE("durations read like 90s, 15m, 72h, 7d") {
  CHECK(oasync::cli::parse_duration("90s") == 90);
  CHECK(oasync::cli::parse_duration("15m") == 900);
  CHECK(oasync::cli::parse_duration("72h") == 72 * 3600);
  CHECK(oasync::cli::parse_duration("7d") == 7 * 86400);
  CHECK(oasync::cli::parse_duration("2w") == 14 * 86400);
  for (const char* bad : {"", "7", "d", "7x", "-7d", "0s", "1.5h", "7 d", "9999999999999d"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(oasync::cli::parse_duration(bad),
                         doctest::Contains((std::string("\"") + bad + "\"").c_str()),
                         oasync::Error);
  }
}

TEST_CASE("the shipped topic catalog parses") {
  const auto specs =
      oasync::cli::load_topics_file(oasync::test::source_dir() + "/schema/topics.yaml");
  REQUIRE(specs.size() == 4);
  CHECK(specs[0].name == "runtime.run_summaries");
  CHECK(specs[0].doc_key_prefix == "run_summary:");
  CHECK(specs[0].retention_max_age_seconds == std::optional<std::int64_t>(7 * 86400));
  CHECK(specs[2].payload_mode == oasync::PayloadMode::pointer);
}

TEST_CASE("topic catalog errors name the line and the value") {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"topics:\n  - name: a.b\n    doc_key_prefix: \"a:\"\n    payload_mode: fat\n",
       ":4: \"payload_mode\" must be inline or pointer, found \"fat\""},
      {"topics:\n  - name: a.b\n    doc_key_prefix: \"a:\"\n    retention:\n      max_age: soon\n",
       ":5: \"retention.max_age\": invalid duration \"soon\""},
      {"topics:\n  - name: a.b\n    prefix: \"a:\"\n", ":3: unknown key \"prefix\""},
      {"topics:\n  - name: a.b\n", ":2: topic \"a.b\" needs \"doc_key_prefix\""},
      {"topics:\n  - doc_key_prefix: x\n", ":2: a topic needs \"name\""},
      {"topics:\n  - name: a.b\n    doc_key_prefix: \"a:\"\n    max_payload_bytes: 0\n",
       ":4: \"max_payload_bytes\" must be between 1 and 1073741824, found \"0\""},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    TempFile f(c.text);
    CHECK_THROWS_WITH_AS(oasync::cli::load_topics_file(f.path),
                         doctest::Contains((f.path + c.message).c_str()), oasync::Error);
  }
}
