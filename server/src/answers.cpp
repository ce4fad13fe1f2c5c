#include "answers.hpp"

#include <algorithm>
#include <chrono>
#include <memory>

#include <openssl/evp.h>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "oasync/error.hpp"

namespace oasync::serve {

std::string entity_tag(std::string_view topic, std::string_view view, std::string_view from,
                       std::string_view next, std::string_view body) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                    &EVP_MD_CTX_free);
  bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  for (const std::string_view part : {topic, view, from, next}) {
    // Each part's length first: no two different tuples hash alike.
    const std::string length = std::to_string(part.size()) + ":";
    ok = ok && EVP_DigestUpdate(ctx.get(), length.data(), length.size()) == 1 &&
         EVP_DigestUpdate(ctx.get(), part.data(), part.size()) == 1;
  }
  ok = ok && EVP_DigestUpdate(ctx.get(), body.data(), body.size()) == 1 &&
       EVP_DigestFinal_ex(ctx.get(), digest, &size) == 1 && size >= 16;
  if (!ok) throw Error(Code::internal, "SHA-256 of a response failed");
  std::string tag = "\"";
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < 16; ++i) {
    tag += kHex[digest[i] >> 4];
    tag += kHex[digest[i] & 15];
  }
  return tag + "\"";
}

bool matches(std::string_view if_none_match, std::string_view tag) {
  // (Entity tags are quoted strings without commas: split at commas.)
  std::string_view rest = if_none_match;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string_view one = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    while (!one.empty() && (one.front() == ' ' || one.front() == '\t')) one.remove_prefix(1);
    while (!one.empty() && (one.back() == ' ' || one.back() == '\t')) one.remove_suffix(1);
    // A weak comparison (RFC 9110 §13.1.2): W/ is ignored.
    if (one.substr(0, 2) == "W/") one.remove_prefix(2);
    if (one == "*" || one == tag) return true;
  }
  return false;
}

Answers::Answers(const ServeConfig& config)
    : cors_origins_(config.cors_origins),
      send_timeout_seconds_(config.limits.send_timeout_seconds) {}

void Answers::decorate(const Request& req, http::fields& headers) const {
  // PROTOCOL.md §12.7 (Browser Security Headers), as the reference server
  // sends them: no MIME sniffing of a body, and a body that fetch() from
  // another origin may read (CORS, below, still decides which origins).
  headers.set("X-Content-Type-Options", "nosniff");
  headers.set("Cross-Origin-Resource-Policy", "cross-origin");
  if (cors_origins_.empty()) return;
  const auto origin = req[http::field::origin];
  if (origin.empty()) return;
  const bool any =
      std::find(cors_origins_.begin(), cors_origins_.end(), "*") != cors_origins_.end();
  const bool listed = std::find(cors_origins_.begin(), cors_origins_.end(), std::string(origin)) !=
                      cors_origins_.end();
  if (!any && !listed) return;
  headers.set(http::field::access_control_allow_origin, any ? "*" : std::string(origin));
  if (!any) headers.set(http::field::vary, "Origin");
  headers.set(http::field::access_control_expose_headers,
              "Stream-Next-Offset, Stream-Up-To-Date, Stream-Cursor, Oasync-Stale-Reason, "
              "Oasync-Floor, Oasync-Head, Oasync-Epoch");
}

Response Answers::error(const Request& req, http::status status, const std::string& code,
                        const std::string& message) const {
  Response res{status, req.version()};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  // (Messages quote the request, which need not be UTF-8.)
  res.body() = nlohmann::json{{"error", code}, {"message", message}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  decorate(req, res);
  res.prepare_payload();
  return res;
}

Response Answers::refusal(const Request& req, const Refusal& r) const {
  Response res = error(req, r.status,
                       r.status == http::status::unauthorized          ? "unauthorized"
                       : r.status == http::status::forbidden           ? "forbidden"
                       : r.status == http::status::not_found           ? "not_found"
                       : r.status == http::status::service_unavailable ? "unavailable"
                                                                       : "bad_request",
                       r.message);
  for (const auto& [name, value] : r.headers) res.set(name, value);
  return res;
}

Response Answers::ended(const Request& req) const {
  return refusal(req, {http::status::unauthorized, "the token expired or its session was revoked"});
}

Response Answers::stale(const Request& req, const ResumeCheck& stale) const {
  const std::string reason = to_string(stale.reason);
  Response res{http::status::gone, req.version()};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.set("Oasync-Stale-Reason", reason);
  res.set("Oasync-Floor", std::to_string(stale.position.purged_through));
  res.set("Oasync-Head", std::to_string(stale.position.head));
  res.set("Oasync-Epoch", stale.position.epoch);
  res.body() = nlohmann::ordered_json{{"error", "stale_offset"},
                                      {"reason", reason},
                                      {"floor", stale.position.purged_through},
                                      {"head", stale.position.head},
                                      {"epoch", stale.position.epoch},
                                      {"message",
                                       "the offset cannot resume: start again at "
                                       "offset=-1 (or ask on_stale=reset)"}}
                   .dump();
  decorate(req, res);
  res.prepare_payload();
  return res;
}

boost::asio::awaitable<void> Answers::send(boost::beast::tcp_stream& stream, Response& res,
                                           Keep keep) const {
  res.keep_alive(keep == Keep::alive);
  stream.expires_after(std::chrono::seconds(send_timeout_seconds_));
  co_await http::async_write(stream, res, boost::asio::use_awaitable);
}

}  // namespace oasync::serve
