#include "jwt.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <nlohmann/json.hpp>

#include "oasync/sessions.hpp"

namespace oasync::serve {
namespace {

using json = nlohmann::json;

// base64url without padding (RFC 7515 §2) to bytes; nullopt unless `in` is
// the one canonical spelling of its bytes: the URL-safe alphabet only, no
// '=', no length of 1 mod 4, and the unused low bits of the last character
// zero. Otherwise one signed token would have several spellings, and anyone
// could respell its signature.
std::optional<std::string> base64url(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string text(in);
  for (char& c : text) {
    if (c == '-') {
      c = '+';
    } else if (c == '_') {
      c = '/';
    } else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
      return std::nullopt;
    }
  }
  const std::size_t pad = (4 - text.size() % 4) % 4;
  text.append(pad, '=');
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - pad);
  // Canonical: encoding the bytes again gives the same text (this is what
  // refuses set unused bits, which the decoder drops).
  std::string again(text.size() + 1, '\0');
  const int m = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(again.data()),
                                reinterpret_cast<const unsigned char*>(out.data()),
                                static_cast<int>(out.size()));
  again.resize(static_cast<std::size_t>(m));
  if (again != text) return std::nullopt;
  return out;
}

// Parses a JSON object, refusing any member name that occurs twice in one
// object, at any depth: nlohmann::json keeps the last, and a front door or
// proxy that keeps the first would read another tenant or algorithm.
json parse_object(const std::string& bytes, bool& duplicate) {
  std::vector<std::set<std::string>> names;  // one per open object
  const json::parser_callback_t track = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        names.emplace_back();
        break;
      case json::parse_event_t::key:
        if (!names.empty() && !names.back().insert(parsed.get<std::string>()).second) {
          duplicate = true;
        }
        break;
      case json::parse_event_t::object_end:
        if (!names.empty()) names.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  return json::parse(bytes, track, false);
}

json parse_part(std::string_view part, const char* what) {
  const auto bytes = base64url(part);
  if (!bytes) {
    throw TokenError("malformed", fmt::format("the token's {} is not canonical base64url", what));
  }
  bool duplicate = false;
  json value = parse_object(*bytes, duplicate);
  if (!value.is_object()) {
    throw TokenError("malformed", fmt::format("the token's {} is not a JSON object", what));
  }
  if (duplicate) {
    throw TokenError("malformed", fmt::format("the token's {} names a member twice", what));
  }
  return value;
}

// Which way a fractional NumericDate rounds: toward refusal, so down for exp
// (it ends sooner) and up for nbf (it starts later).
enum class Round { down, up };

// A NumericDate (RFC 7519 §2) as whole seconds, or nullopt when it is not a
// finite number in [0, kMaxNumericDate].
std::optional<std::int64_t> numeric_date(const json& value, Round round) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(kMaxNumericDate)) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }
  if (value.is_number_integer()) {
    const auto v = value.get<std::int64_t>();
    if (v < 0 || v > kMaxNumericDate) return std::nullopt;
    return v;
  }
  if (value.is_number_float()) {
    const double v = value.get<double>();
    // Also false for NaN and the infinities (which nlohmann::json does not
    // parse: 1e400 is refused as malformed).
    if (!(v >= 0 && v <= static_cast<double>(kMaxNumericDate))) return std::nullopt;
    return static_cast<std::int64_t>(round == Round::down ? std::floor(v) : std::ceil(v));
  }
  return std::nullopt;
}

std::string openssl_error() {
  return "OpenSSL could not verify";
}

}  // namespace

const char* to_string(Algorithm algorithm) noexcept {
  switch (algorithm) {
    case Algorithm::hs256:
      return "HS256";
    case Algorithm::rs256:
      return "RS256";
    case Algorithm::es256:
      return "ES256";
  }
  return "HS256";
}

struct Verifier::Key {
  EVP_PKEY* pkey = nullptr;
  ~Key() { EVP_PKEY_free(pkey); }
};

Verifier::Verifier(VerifierOptions options)
    : options_(std::move(options)), key_(std::make_unique<Key>()) {
  if (options_.leeway_seconds < 0 || options_.leeway_seconds > kMaxLeewaySeconds) {
    throw std::invalid_argument(fmt::format("the leeway must be 0..{} seconds (got {})",
                                            kMaxLeewaySeconds, options_.leeway_seconds));
  }
  if (options_.algorithm == Algorithm::hs256) {
    if (options_.key.size() < 32) {
      throw std::invalid_argument(
          "an HS256 secret must be at least 32 bytes (RFC 7518 §3.2: as long as the hash)");
    }
    return;
  }
  BIO* bio = BIO_new_mem_buf(options_.key.data(), static_cast<int>(options_.key.size()));
  key_->pkey = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key_->pkey == nullptr) {
    throw std::invalid_argument(
        fmt::format("the {} key is not a PEM public key (-----BEGIN PUBLIC KEY-----)",
                    to_string(options_.algorithm)));
  }
  const int type = EVP_PKEY_base_id(key_->pkey);
  if (options_.algorithm == Algorithm::rs256 && type != EVP_PKEY_RSA) {
    throw std::invalid_argument("RS256 needs an RSA public key");
  }
  if (options_.algorithm == Algorithm::es256) {
    if (type != EVP_PKEY_EC) throw std::invalid_argument("ES256 needs an EC public key");
    char curve[64] = {};
    size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key_->pkey, "group", curve, sizeof curve, &length) != 1 ||
        std::string_view(curve, length) != "prime256v1") {
      throw std::invalid_argument("ES256 needs a P-256 (prime256v1) key");
    }
  }
}

Verifier::~Verifier() = default;

Claims Verifier::verify(std::string_view token, std::int64_t now) const {
  if (token.empty()) throw TokenError("missing", "no token");
  const std::size_t first = token.find('.');
  const std::size_t second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) {
    throw TokenError("malformed", "a token has three parts separated by dots");
  }
  const json header = parse_part(token.substr(0, first), "header");
  // RFC 7515 §4.1.11: a recipient refuses a token whose crit names an
  // extension it does not understand; oasync understands none.
  if (header.contains("crit")) {
    throw TokenError("malformed", "the token's header has crit (no extension is understood)");
  }
  const std::string expected = to_string(options_.algorithm);
  if (!header.contains("alg") || !header["alg"].is_string() || header["alg"] != expected) {
    throw TokenError("algorithm",
                     fmt::format("the token's algorithm is not {}, the configured one", expected));
  }
  const std::string_view signed_part = token.substr(0, second);
  const auto signature = base64url(token.substr(second + 1));
  if (!signature) throw TokenError("malformed", "the token's signature is not base64url");
  const auto* data = reinterpret_cast<const unsigned char*>(signed_part.data());

  bool valid = false;
  if (options_.algorithm == Algorithm::hs256) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
    unsigned int mac_length = 0;
    HMAC(EVP_sha256(), options_.key.data(), static_cast<int>(options_.key.size()), data,
         signed_part.size(), mac.data(), &mac_length);
    valid = signature->size() == mac_length &&
            CRYPTO_memcmp(signature->data(), mac.data(), mac_length) == 0;
  } else {
    std::string der = *signature;
    if (options_.algorithm == Algorithm::es256) {
      // JWS carries r || s (32 bytes each); OpenSSL verifies DER.
      if (signature->size() != 64) throw TokenError("signature", "bad signature");
      ECDSA_SIG* sig = ECDSA_SIG_new();
      const auto* raw = reinterpret_cast<const unsigned char*>(signature->data());
      ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, nullptr), BN_bin2bn(raw + 32, 32, nullptr));
      unsigned char* out = nullptr;
      const int length = i2d_ECDSA_SIG(sig, &out);
      ECDSA_SIG_free(sig);
      if (length <= 0) throw TokenError("signature", openssl_error());
      der.assign(reinterpret_cast<char*>(out), static_cast<std::size_t>(length));
      OPENSSL_free(out);
    }
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    valid = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key_->pkey) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(der.data()), der.size(),
                             data, signed_part.size()) == 1;
    EVP_MD_CTX_free(ctx);
  }
  if (!valid) throw TokenError("signature", "bad signature");

  const json claims = parse_part(token.substr(first + 1, second - first - 1), "claims");
  Claims out;
  // Both are at most kMaxNumericDate and the leeway at most
  // kMaxLeewaySeconds, so no sum or difference below overflows.
  const auto date = [&](const char* name, Round round) {
    const auto seconds = numeric_date(claims[name], round);
    if (!seconds) {
      throw TokenError("claims", fmt::format("{} is not a number in 0..{} (a NumericDate)", name,
                                             kMaxNumericDate));
    }
    return *seconds;
  };
  if (!claims.contains("exp")) throw TokenError("claims", "the token has no exp");
  out.expires_at = date("exp", Round::down);
  out.valid_until = out.expires_at + options_.leeway_seconds;
  if (now >= out.valid_until) throw TokenError("expired", "the token expired");
  if (claims.contains("nbf") && now < date("nbf", Round::up) - options_.leeway_seconds) {
    throw TokenError("not_yet_valid", "the token is not valid yet");
  }
  // iat is not used, but a malformed one means a malformed token.
  if (claims.contains("iat")) date("iat", Round::down);
  if (!options_.issuer.empty() && (!claims.contains("iss") || claims["iss"] != options_.issuer)) {
    throw TokenError("issuer", "the token's issuer is not the configured one");
  }
  if (!options_.audience.empty()) {
    const json aud = claims.value("aud", json());
    const bool named =
        aud == options_.audience ||
        (aud.is_array() && std::find(aud.begin(), aud.end(), json(options_.audience)) != aud.end());
    if (!named) throw TokenError("audience", "the token is not for this audience");
  }
  const auto text = [&](const char* name, bool required) {
    if (!claims.contains(name)) {
      if (required) throw TokenError("claims", fmt::format("the token has no {}", name));
      return std::string();
    }
    const json& v = claims[name];
    if (v.is_string()) {
      std::string value = v.get<std::string>();
      // It names a tenant's scope and reaches the database: a NUL would cut
      // it short there ("\u0000" is valid JSON; invalid UTF-8 is not).
      if (value.find('\0') != std::string::npos) {
        throw TokenError("claims", fmt::format("{} holds a NUL character", name));
      }
      return value;
    }
    // An integer reads as its exact decimal text; 2^63 and above are
    // unsigned (reading them as signed would wrap to another tenant).
    if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
    if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
    throw TokenError("claims", fmt::format("{} is not a string or an integer", name));
  };
  out.subject = text("sub", false);
  out.org_id = text("org_id", true);
  out.session_id = text("session_id", true);
  if (out.org_id.empty() || out.session_id.empty()) {
    throw TokenError("claims", "org_id and session_id must not be empty");
  }
  // A longer id could never be revoked (`oasync sessions revoke` refuses it).
  if (out.session_id.size() > kMaxSessionIdBytes) {
    throw TokenError("claims", fmt::format("session_id is {} bytes, more than {}",
                                           out.session_id.size(), kMaxSessionIdBytes));
  }
  if (!claims.contains("scopes") || !claims["scopes"].is_array()) {
    throw TokenError("claims", "the token has no scopes (the topics it may read)");
  }
  for (const json& t : claims["scopes"]) {
    if (!t.is_string()) throw TokenError("claims", "scopes must be strings");
    std::string topic = t.get<std::string>();
    if (topic.find('\0') != std::string::npos) {
      throw TokenError("claims", "a scope holds a NUL character");
    }
    out.topics.push_back(std::move(topic));
  }
  return out;
}

}  // namespace oasync::serve
