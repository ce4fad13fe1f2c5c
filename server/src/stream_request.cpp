#include "stream_request.hpp"

#include <limits>
#include <random>
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
    } else if (key == "versions") {
      if (value != "true" && value != "false") {
        error = fmt::format("versions must be true or false, not \"{}\"", value.substr(0, 40));
        return std::nullopt;
      }
      s.headers = value == "true" ? Headers::with_version : Headers::operation_only;
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

std::string next_cursor(const std::string& client, std::int64_t now, std::mt19937_64& random) {
  const std::int64_t interval = now / kCursorIntervalSeconds;
  std::int64_t theirs = -1;
  try {
    theirs = client.empty() ? -1 : std::stoll(client);
  } catch (...) {
    theirs = -1;
  }
  if (theirs < interval) return std::to_string(interval);
  // At or ahead of the clock: 1 to 3600 seconds later, in whole intervals.
  std::uniform_int_distribution<std::int64_t> seconds(1, kCursorMaxJitterSeconds);
  const std::int64_t jitter =
      (seconds(random) + kCursorIntervalSeconds - 1) / kCursorIntervalSeconds;
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  return std::to_string(theirs > max - jitter ? max : theirs + jitter);
}

std::string next_cursor(const std::string& client) {
  // (One I/O thread; a generator per thread needs no lock.)
  thread_local std::mt19937_64 random{std::random_device{}()};
  return next_cursor(client, unix_now(), random);
}

}  // namespace oasync::serve
