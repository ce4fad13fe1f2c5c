#include "stream_request.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "auth.hpp"

namespace oasync::serve {

std::optional<StreamRequest> parse_stream(const boost::urls::url_view& url,
                                          const std::string& topic, std::string& error) {
  StreamRequest s;
  s.topic = topic;
  for (auto param : url.params()) {
    const std::string key = param.key;
    const std::string value = param.value;
    if (key == "offset") {
      s.offset = value;
    } else if (key == "live") {
      if (value != "long-poll" && value != "sse") {
        error = fmt::format("live must be long-poll or sse, not \"{}\"", value.substr(0, 40));
        return std::nullopt;
      }
      s.live = value == "sse" ? Live::sse : Live::long_poll;
    } else if (key == "cursor") {
      s.cursor = value;
    } else if (key == "on_stale") {
      if (value != "reset" && value != "410") {
        error = fmt::format("on_stale must be reset or 410, not \"{}\"", value.substr(0, 40));
        return std::nullopt;
      }
      s.on_stale = value == "reset" ? OnStale::reset : OnStale::report;
    } else if (key == "wait_for") {
      try {
        std::size_t used = 0;
        s.wait_for = std::stoll(value, &used);
        if (used != value.size() || *s.wait_for < 0) throw std::invalid_argument(value);
      } catch (...) {
        error = fmt::format("wait_for must be a watermark, not \"{}\"", value.substr(0, 40));
        return std::nullopt;
      }
    }
  }
  if (s.offset.empty()) {
    error = "offset must not be empty (use -1 or now)";
    return std::nullopt;
  }
  return s;
}

std::string next_cursor(const std::string& client) {
  const std::int64_t interval = unix_now() / 20;
  std::int64_t theirs = -1;
  try {
    theirs = client.empty() ? -1 : std::stoll(client);
  } catch (...) {
    theirs = -1;
  }
  if (theirs == std::numeric_limits<std::int64_t>::max()) return std::to_string(theirs);
  return std::to_string(std::max(interval, theirs + 1));
}

}  // namespace oasync::serve
