#include "jwt.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>

#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <nlohmann/json.hpp>

namespace oasync::serve {
namespace {

using json = nlohmann::json;

// base64url without padding (RFC 7515 §2) to bytes; nullopt if malformed.
std::optional<std::string> base64url(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string text(in);
  for (char& c : text) {
    if (c == '-') {
      c = '+';
    } else if (c == '_') {
      c = '/';
    } else if (!std::isalnum(static_cast<unsigned char>(c))) {
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
  return out;
}

json parse_part(std::string_view part, const char* what) {
  const auto bytes = base64url(part);
  if (!bytes) throw TokenError("malformed", fmt::format("the token's {} is not base64url", what));
  json value = json::parse(*bytes, nullptr, false);
  if (!value.is_object()) {
    throw TokenError("malformed", fmt::format("the token's {} is not a JSON object", what));
  }
  return value;
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
  if (!claims.contains("exp") || !claims["exp"].is_number()) {
    throw TokenError("claims", "the token has no exp");
  }
  out.expires_at = claims["exp"].get<std::int64_t>();
  out.valid_until = out.expires_at + options_.leeway_seconds;
  if (now >= out.valid_until) throw TokenError("expired", "the token expired");
  if (claims.contains("nbf")) {
    if (!claims["nbf"].is_number()) throw TokenError("claims", "nbf is not a number");
    if (now + options_.leeway_seconds < claims["nbf"].get<std::int64_t>()) {
      throw TokenError("not_yet_valid", "the token is not valid yet");
    }
  }
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
