// What every HTTP answer shares: the request and response types, JSON error
// bodies, the CORS headers, the 410 of a stale offset, and the timed write.
// Transports build their answers here, so that a header every answer must
// carry is added in one place.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "oasync/reader.hpp"
#include "oasync/serve/serve.hpp"

namespace oasync::serve {

namespace http = boost::beast::http;
using Request = http::request<http::empty_body>;
using Response = http::response<http::string_body>;

// An answer that ends a request early: status, message, extra headers.
struct Refusal {
  http::status status;
  std::string message;
  std::vector<std::pair<std::string, std::string>> headers = {};
};

// Whether the connection stays open after an answer.
enum class Keep { alive, close };

// The strong ETag of a stream response (PROTOCOL.md §8.1): a digest of what
// makes its bytes: the topic, the reader's view, the range (from the
// request's offset to Stream-Next-Offset) and the body itself, since the
// same range can read other bytes (pointer-mode payloads are read at request
// time, and the view decides which messages there are).
std::string entity_tag(std::string_view topic, std::string_view view, std::string_view from,
                       std::string_view next, std::string_view body);

// Whether `if_none_match` (an If-None-Match value) names `tag`, or is "*".
bool matches(std::string_view if_none_match, std::string_view tag);

class Answers {
 public:
  explicit Answers(const ServeConfig& config);

  // The headers every answer to `req` carries: the browser security headers
  // (X-Content-Type-Options: nosniff, Cross-Origin-Resource-Policy:
  // cross-origin), and CORS for a listed origin. An answer written without a
  // request passes a default-constructed one.
  void decorate(const Request& req, http::fields& headers) const;

  // A JSON error body {"error": code, "message": message}, decorated.
  Response error(const Request& req, http::status status, const std::string& code,
                 const std::string& message) const;
  // A refusal, its code named by its status.
  Response refusal(const Request& req, const Refusal& r) const;
  // The 401 for a caller revoked or expired while its request was served.
  Response ended(const Request& req) const;
  // The 410 for a stale offset (PROTOCOL.md: Gone), naming why, where the
  // floor and head are, and the epoch.
  Response stale(const Request& req, const ResumeCheck& stale) const;

  // Writes `res` within limits.send_timeout_seconds. Throws on failure.
  // (`res` is a named object of the caller's: GCC 12 destroys temporaries of
  // a co_await expression twice, so none is built inside one.)
  boost::asio::awaitable<void> send(boost::beast::tcp_stream& stream, Response& res,
                                    Keep keep) const;

 private:
  std::vector<std::string> cors_origins_;
  std::int64_t send_timeout_seconds_;
};

}  // namespace oasync::serve
