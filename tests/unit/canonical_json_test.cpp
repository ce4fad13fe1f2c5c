// Canonical JSON: the vectors in tests/fixtures/canonical/vectors.json were
// produced by Python's sorted compact encoder; oasync must agree byte for byte.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"
#include "process.hpp"

namespace {

nlohmann::json load_vectors() {
  std::ifstream in(oasync::test::source_dir() + "/tests/fixtures/canonical/vectors.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("canonical JSON matches the shipped vectors") {
  const auto vectors = load_vectors();
  REQUIRE(vectors["vectors"].size() >= 10);
  for (const auto& v : vectors["vectors"]) {
    const std::string input = v["input"];
    CAPTURE(input);
    const oasync::CanonicalJson c = oasync::canonicalize(input);
    CHECK(c.text == v["canonical"].get<std::string>());
    CHECK(oasync::to_hex(c.sha256) == v["sha256"].get<std::string>());
  }
}

TEST_CASE("canonical JSON refuses what it must refuse") {
  const auto vectors = load_vectors();
  for (const auto& e : vectors["errors"]) {
    const std::string input = e["input"];
    CAPTURE(input);
    try {
      oasync::canonicalize(input);
      FAIL("accepted invalid input");
    } catch (const oasync::Error& error) {
      CHECK(std::string(error.what()).find(e["message"].get<std::string>()) != std::string::npos);
    }
  }
}

TEST_CASE("nesting deeper than the limit is refused before it is built") {
  const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_THROWS_WITH_AS(oasync::canonicalize(deep), doctest::Contains("nesting deeper than 64"),
                       oasync::Error);
  std::string ok = "{\"a\":" + std::string(62, '[') + std::string(62, ']') + "}";
  CHECK(oasync::canonicalize(ok).text == ok);
}

TEST_CASE("canonicalising is idempotent and shape-aware") {
  const auto once = oasync::canonicalize(R"({ "b" : [ 1 , 2 ] , "a" : "x" })");
  CHECK(once.text == R"({"a":"x","b":[1,2]})");
  CHECK(oasync::canonicalize(once.text).text == once.text);
  CHECK(oasync::canonicalize("[1, 2]", oasync::JsonShape::any).text == "[1,2]");
  CHECK(oasync::to_hex(oasync::sha256("")) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
