// oasync serve's long-poll cursors (PROTOCOL.md §10.1): the clock's interval
// for a client behind it; for a client at or ahead of it, its cursor plus a
// random jitter of 1 to 3600 seconds in whole 20-second intervals, so that
// clients woken together spread out.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>

#include "stream_request.hpp"

using namespace oasync::serve;

namespace {

constexpr std::int64_t kNow = 1'800'000'013;  // some second, not on an interval's edge
constexpr std::int64_t kInterval = kNow / 20;
constexpr std::int64_t kMaxJitterIntervals = 3600 / 20;

std::int64_t cursor_after(const std::string& client, std::mt19937_64& random) {
  return std::stoll(next_cursor(client, kNow, random));
}

}  // namespace

TEST_CASE("cursor: a client behind the clock, or without a cursor, gets the clock's interval") {
  std::mt19937_64 random(1);
  const std::string clients[] = {
      "", "0", "-5", "not a number", std::to_string(kInterval - 1), "-9223372036854775808"};
  for (const std::string& client : clients) {
    CAPTURE(client);
    CHECK(cursor_after(client, random) == kInterval);
  }
  CHECK(kCursorIntervalSeconds == 20);
  CHECK(kCursorMaxJitterSeconds == 3600);
}

TEST_CASE("cursor: at or ahead of the clock, 1 to 180 intervals ahead of the client, at random") {
  std::mt19937_64 random(20);
  for (const std::int64_t theirs : {kInterval, kInterval + 1, kInterval + 5000}) {
    CAPTURE(theirs);
    std::set<std::int64_t> seen;
    for (int i = 0; i < 20000; ++i) {
      const std::int64_t next = cursor_after(std::to_string(theirs), random);
      REQUIRE(next >= theirs + 1);
      REQUIRE(next <= theirs + kMaxJitterIntervals);
      seen.insert(next);
    }
    // Every step of the range comes up (each has a chance of 1 in 180 a draw).
    CHECK(seen.size() == static_cast<std::size_t>(kMaxJitterIntervals));
    CHECK(*seen.begin() == theirs + 1);
    CHECK(*seen.rbegin() == theirs + kMaxJitterIntervals);
  }
}

TEST_CASE("cursor: the server's own generator varies between calls") {
  // Far ahead of any clock: always the jitter's case.
  const std::int64_t theirs = std::numeric_limits<std::int64_t>::max() / 2;
  std::set<std::string> seen;
  for (int i = 0; i < 64; ++i) {
    const std::string next = next_cursor(std::to_string(theirs));
    const std::int64_t n = std::stoll(next);
    REQUIRE(n >= theirs + 1);
    REQUIRE(n <= theirs + kMaxJitterIntervals);
    seen.insert(next);
  }
  // 64 draws of 180 values: all the same has a chance of 180^-63.
  CHECK(seen.size() > 1);
}

TEST_CASE("cursor: near the largest number it saturates instead of wrapping") {
  std::mt19937_64 random(3);
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  CHECK(cursor_after(std::to_string(max), random) == max);
  CHECK(cursor_after(std::to_string(max - 1), random) == max);
  for (int i = 0; i < 1000; ++i) {
    const std::int64_t next = cursor_after(std::to_string(max - 100), random);
    REQUIRE(next > max - 100);
    REQUIRE(next <= max);
  }
}
