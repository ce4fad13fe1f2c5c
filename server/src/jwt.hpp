// JSON Web Tokens as the front door mints them (design note §6): verified
// with OpenSSL, claims read with nlohmann::json.
//
// The algorithm is the configured one, never the token's own `alg`: a token
// whose header names another algorithm is refused before any key is used.
// That closes the HS256-with-a-public-key attack (a token signed with HMAC,
// keyed with the server's public RSA or EC key) and "alg": "none".
//
// Parsing is strict: a token has one spelling and one reading. Refused are
//   - any segment that is not canonical base64url (RFC 7515 §2): '=' padding,
//     a character outside A-Z a-z 0-9 - _, a length of 1 mod 4, or unused
//     low bits of the last character that are not zero ("malformed");
//   - a header or claims set that is not one JSON object, or that names a
//     member twice in any object at any depth, e.g. {"alg":"none","alg":"HS256"}
//     ("malformed": readers that keep the first and the last would disagree);
//   - a header with `crit` at all: no extension is understood (RFC 7515
//     §4.1.11) ("malformed");
//   - exp (required), nbf or iat that is not a JSON number in
//     0..kMaxNumericDate: a string, 1e300, 2^64-1, a negative number ("claims").
//     A fraction rounds toward refusal: exp down, nbf up;
//   - org_id or session_id missing, empty, neither a string nor an integer, or
//     holding a NUL; a session_id over oasync::kMaxSessionIdBytes bytes, which
//     `oasync sessions revoke` could not revoke ("claims"); scopes that are not
//     an array of strings without NUL ("claims").
// Still accepted: an ES256 signature with a high S (s > n/2), as common
// signers do not normalise S. So (r, s) and (r, n - s) are two spellings of
// one ES256 token's signature; nothing here keys on a token's text.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace oasync::serve {

enum class Algorithm { hs256, rs256, es256 };

// The latest NumericDate accepted: 9999-12-31T23:59:59Z, in seconds since the
// Unix epoch. It keeps exp + leeway and nbf - leeway far inside int64.
inline constexpr std::int64_t kMaxNumericDate = 253402300799;

// The largest VerifierOptions::leeway_seconds: one day.
inline constexpr std::int64_t kMaxLeewaySeconds = 86400;

// "HS256", "RS256", "ES256".
const char* to_string(Algorithm algorithm) noexcept;

struct Claims {
  std::string subject;     // sub
  std::string org_id;      // org_id (a string, or an integer as its exact decimal text; no NUL)
  std::string session_id;  // session_id
  // scopes: the topics the token may read.
  std::vector<std::string> topics;
  std::int64_t expires_at = 0;  // exp, seconds since the Unix epoch (a fraction rounded down)
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
  // Clock skew allowed on exp and nbf: 0..kMaxLeewaySeconds.
  std::int64_t leeway_seconds = 30;
};

class Verifier {
 public:
  // Throws std::invalid_argument when the key does not fit the algorithm
  // (an unreadable PEM, an RSA key for ES256, an empty secret), or the leeway
  // is outside 0..kMaxLeewaySeconds.
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
