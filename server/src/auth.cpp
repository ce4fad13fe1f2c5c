#include "auth.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "oasync/error.hpp"

namespace oasync::serve {
namespace {

// Reads a key file; an HS256 secret loses one trailing newline.
std::string read_key(const AuthConfig& auth) {
  std::ifstream in(auth.key_file, std::ios::binary);
  if (!in) {
    throw Error(Code::not_found,
                fmt::format("serve.auth.key_file: cannot read \"{}\"", auth.key_file));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string key = text.str();
  if (auth.algorithm == "HS256" && !key.empty() && key.back() == '\n') key.pop_back();
  return key;
}

Algorithm parse_algorithm(const std::string& name) {
  if (name == "HS256") return Algorithm::hs256;
  if (name == "RS256") return Algorithm::rs256;
  if (name == "ES256") return Algorithm::es256;
  throw Error(Code::invalid_argument,
              fmt::format("serve.auth.algorithm: \"{}\" is not HS256, RS256 or ES256", name));
}

Verifier make_verifier(const AuthConfig& auth) {
  try {
    return Verifier(VerifierOptions{parse_algorithm(auth.algorithm), read_key(auth), auth.issuer,
                                    auth.audience, auth.leeway_seconds});
  } catch (const std::invalid_argument& e) {
    throw Error(Code::invalid_argument, fmt::format("serve.auth: {}", e.what()));
  }
}

}  // namespace

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Auth::Auth(const AuthConfig& auth, const TenancyConfig& tenancy, const Hub& hub, Metrics& metrics)
    : tenancy_(tenancy), hub_(hub), metrics_(metrics), verifier_(make_verifier(auth)) {}

std::variant<Caller, AuthRefusal> Auth::authenticate(std::string_view token) const {
  const auto refuse = [&](std::string reason, std::string message) {
    metrics_.count_auth_refused(reason);
    return AuthRefusal{std::move(reason), std::move(message)};
  };
  if (token.empty()) return refuse("missing", "a token is required");
  if (!hub_.revocations_read()) {
    metrics_.count_auth_refused("not_ready");
    return AuthRefusal{"not_ready",
                       "the server has not yet read which sessions are revoked; try again",
                       Judged::not_yet};
  }
  Caller caller;
  try {
    caller.claims = verifier_.verify(token, unix_now());
  } catch (const TokenError& e) {
    return refuse(e.reason(), e.what());
  }
  if (hub_.revoked(caller.claims.session_id)) {
    return refuse("revoked", "the token's session was revoked");
  }
  caller.view.scope = tenancy_.scope_format;
  for (std::size_t at = 0; (at = caller.view.scope.find("{org_id}", at)) != std::string::npos;
       at += caller.claims.org_id.size()) {
    caller.view.scope.replace(at, 8, caller.claims.org_id);
  }
  caller.view.unscoped = tenancy_.unscoped;
  return caller;
}

bool Auth::allowed(const Caller& caller, std::string_view topic) {
  return std::find(caller.claims.topics.begin(), caller.claims.topics.end(), topic) !=
         caller.claims.topics.end();
}

Standing Auth::standing(const Caller& caller) const {
  if (hub_.revoked(caller.claims.session_id)) return Standing::revoked;
  if (unix_now() >= caller.claims.valid_until) return Standing::expired;
  return Standing::valid;
}

}  // namespace oasync::serve
