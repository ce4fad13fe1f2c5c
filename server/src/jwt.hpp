// JSON Web Tokens as the front door mints them (design note §6): verified
// with OpenSSL, claims read with nlohmann::json.
//
// The algorithm is the configured one, never the token's own `alg`: a token
// whose header names another algorithm is refused before any key is used.
// That closes the HS256-with-a-public-key attack (a token signed with HMAC,
// keyed with the server's public RSA or EC key) and "alg": "none".
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace oasync::serve {

enum class Algorithm { hs256, rs256, es256 };

// "HS256", "RS256", "ES256".
const char* to_string(Algorithm algorithm) noexcept;

struct Claims {
  std::string subject;     // sub
  std::string org_id;      // org_id (a string, or an integer as its exact decimal text; no NUL)
  std::string session_id;  // session_id
  // scopes: the topics the token may read.
  std::vector<std::string> topics;
  std::int64_t expires_at = 0;  // exp, seconds since the Unix epoch
  // exp + the leeway: from this second on the token is refused, and the
  // streams it opened end.
  std::int64_t valid_until = 0;
};

// Why a token was refused. `what()` says it for people; `reason` for
// metrics ("missing", "malformed", "algorithm", "signature", "expired",
// "not_yet_valid", "claims", "issuer", "audience").
class TokenError : public std::runtime_error {
 public:
  TokenError(std::string reason, const std::string& message)
      : std::runtime_error(message), reason_(std::move(reason)) {}
  const std::string& reason() const noexcept { return reason_; }

 private:
  std::string reason_;
};

struct VerifierOptions {
  Algorithm algorithm = Algorithm::hs256;
  // HS256: the shared secret's bytes; RS256, ES256: a PEM public key.
  std::string key = {};
  // When set, the token's iss must equal it, and its aud must name it.
  std::string issuer = {};
  std::string audience = {};
  // Clock skew allowed on exp and nbf.
  std::int64_t leeway_seconds = 30;
};

class Verifier {
 public:
  // Throws std::invalid_argument when the key does not fit the algorithm
  // (an unreadable PEM, an RSA key for ES256, an empty secret).
  explicit Verifier(VerifierOptions options);
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // The token's claims, if its signature and times hold at `now` (seconds
  // since the Unix epoch). Throws TokenError otherwise.
  Claims verify(std::string_view token, std::int64_t now) const;

 private:
  struct Key;
  VerifierOptions options_;
  std::unique_ptr<Key> key_;
};

}  // namespace oasync::serve
