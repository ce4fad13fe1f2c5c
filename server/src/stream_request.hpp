// A stream request's query (GET /v1/topics/{topic}?...), and the Long-poll
// cursor (PROTOCOL.md §10.1).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include <boost/url/url_view.hpp>

#include "subscription.hpp"
#include "view.hpp"

namespace oasync::serve {

// How a stream request is answered.
enum class Live { catch_up, long_poll, sse };

struct StreamRequest {
  std::string topic;
  std::string offset = "-1";
  Live live = Live::catch_up;
  std::string cursor;
  OnStale on_stale = OnStale::report;
  std::optional<std::int64_t> wait_for;
  // versions=true: change messages carry the doc's version too.
  Headers headers = Headers::operation_only;
};

// The request's parameters; nullopt with `error` set for a bad one (the
// value quoted). Unknown parameters are ignored.
std::optional<StreamRequest> parse_stream(const boost::urls::url_view& url,
                                          const std::string& topic, std::string& error);

// Long-poll and SSE cursors (PROTOCOL.md §10.1, "Server-Generated Cursors"):
// the number of kCursorIntervalSeconds intervals since the Unix epoch. A
// client whose cursor is at or ahead of that gets its cursor plus a random
// jitter of 1 to kCursorMaxJitterSeconds seconds, in whole intervals (1 to
// 180, as the reference server rounds it), so that the cursor always moves
// ahead, and clients woken together do not stay in step.
inline constexpr std::int64_t kCursorIntervalSeconds = 20;
inline constexpr std::int64_t kCursorMaxJitterSeconds = 3600;

// The cursor to send after the client's `client` cursor ("" or not a number:
// none), now.
std::string next_cursor(const std::string& client);
// The same at `now` (seconds since the Unix epoch), the jitter drawn from
// `random`.
std::string next_cursor(const std::string& client, std::int64_t now, std::mt19937_64& random);

}  // namespace oasync::serve
