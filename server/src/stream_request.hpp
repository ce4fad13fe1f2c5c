// A stream request's query (GET /v1/topics/{topic}?...), and the Long-poll
// cursor (PROTOCOL.md §10.1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <boost/url/url_view.hpp>

#include "subscription.hpp"

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
};

// The request's parameters; nullopt with `error` set for a bad one (the
// value quoted). Unknown parameters are ignored.
std::optional<StreamRequest> parse_stream(const boost::urls::url_view& url,
                                          const std::string& topic, std::string& error);

// The cursor to send after the client's `client` cursor: 20-second
// intervals, always ahead of the client's.
std::string next_cursor(const std::string& client);

}  // namespace oasync::serve
