// Who a request is: its JWT verified (jwt.hpp), its session checked against
// the revoked ones (the hub's), its tenant's view derived from its org_id.
// Transports hand the token over and learn a Caller or why not; they know no
// rule of their own. The same answers serve every transport.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "hub.hpp"
#include "jwt.hpp"
#include "metrics.hpp"
#include "oasync/serve/serve.hpp"
#include "view.hpp"

namespace oasync::serve {

// A verified token and the view it reads.
struct Caller {
  Claims claims;
  View view;
};

// Why a token was refused: `reason` for metrics (TokenError's, or "missing",
// "revoked", "not_ready"), `message` for the client. A refusal is
// Judged::not_yet when the token was not judged at all: the server has not read
// the revoked sessions yet (just started, or the database was down since).
enum class Judged { refused, not_yet };
struct AuthRefusal {
  std::string reason;
  std::string message;
  Judged judged = Judged::refused;
};

// Whether a caller may go on.
enum class Standing { valid, revoked, expired };

class Auth {
 public:
  // Throws oasync::Error (invalid_argument, not_found) for a key file or
  // algorithm that cannot verify.
  Auth(const AuthConfig& auth, const TenancyConfig& tenancy, const Hub& hub, Metrics& metrics);

  // The caller of `token` at the current time; counts a refusal by reason.
  // Before the hub has read the revoked sessions once, every token is
  // refused with Judged::not_yet: a revoked session is never served, not
  // even right after start.
  std::variant<Caller, AuthRefusal> authenticate(std::string_view token) const;

  // Whether the token names `topic` among its scopes.
  static bool allowed(const Caller& caller, std::string_view topic);

  // Whether the caller is still valid now: not revoked, not expired.
  Standing standing(const Caller& caller) const;

 private:
  TenancyConfig tenancy_;
  const Hub& hub_;
  Metrics& metrics_;
  Verifier verifier_;
};

// Seconds since the Unix epoch.
std::int64_t unix_now();

}  // namespace oasync::serve
