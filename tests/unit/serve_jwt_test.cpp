// oasync serve's token checks: the configured algorithm only (the HS256 with
// a public key attack, "none"), signatures, times and claims. Keys are made
// and tokens signed here with OpenSSL.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <nlohmann/json.hpp>

#include "jwt.hpp"
#include "tokens.hpp"

using namespace oasync::serve;
using oasync::test::b64url;
using oasync::test::hs256;
using json = nlohmann::json;

namespace {

constexpr std::int64_t kNow = 1800000000;

struct Key {
  EVP_PKEY* pkey = nullptr;
  explicit Key(EVP_PKEY* k) : pkey(k) {}
  ~Key() { EVP_PKEY_free(pkey); }
  std::string public_pem() const {
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pkey);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<std::size_t>(n));
    BIO_free(bio);
    return out;
  }
};

const std::string kSecret = "0123456789abcdef0123456789abcdef";

json claims(json extra = json::object()) {
  json c = {{"sub", "u"},
            {"org_id", "42"},
            {"session_id", "s1"},
            {"scopes", {"t.a"}},
            {"exp", kNow + 600}};
  c.update(extra);
  return c;
}

// A token with header alg `alg`, signed by `how`: "HS256" (with `secret`),
// "RS256" or "ES256" (with `key`), or "none".
std::string sign(const std::string& alg, const json& body, const std::string& how,
                 const std::string& secret = kSecret, EVP_PKEY* key = nullptr) {
  const std::string input =
      b64url(json{{"alg", alg}, {"typ", "JWT"}}.dump()) + "." + b64url(body.dump());
  std::string sig;
  if (how == "HS256") {
    sig = hs256(input, secret);
  } else if (how == "RS256" || how == "ES256") {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    size_t n = 0;
    EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
    EVP_DigestSign(ctx, nullptr, &n, reinterpret_cast<const unsigned char*>(input.data()),
                   input.size());
    std::string der(n, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(der.data()), &n,
                   reinterpret_cast<const unsigned char*>(input.data()), input.size());
    der.resize(n);
    EVP_MD_CTX_free(ctx);
    sig = der;
    if (how == "ES256") {  // DER to JWS's r || s
      const auto* p = reinterpret_cast<const unsigned char*>(der.data());
      ECDSA_SIG* s = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
      unsigned char raw[64];
      BN_bn2binpad(ECDSA_SIG_get0_r(s), raw, 32);
      BN_bn2binpad(ECDSA_SIG_get0_s(s), raw + 32, 32);
      ECDSA_SIG_free(s);
      sig.assign(reinterpret_cast<char*>(raw), 64);
    }
  }
  return input + "." + b64url(sig);
}

std::string reason_of(const Verifier& v, const std::string& token) {
  try {
    v.verify(token, kNow);
  } catch (const TokenError& e) {
    return e.reason();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("each algorithm accepts its tokens and reads the claims") {
  const Key rsa(EVP_RSA_gen(2048));
  const Key ec(EVP_EC_gen("P-256"));
  const Verifier hs({Algorithm::hs256, kSecret});
  const Verifier rs({Algorithm::rs256, rsa.public_pem()});
  const Verifier es({Algorithm::es256, ec.public_pem()});
  const Claims c = hs.verify(sign("HS256", claims(), "HS256"), kNow);
  CHECK(c.org_id == "42");
  CHECK(c.session_id == "s1");
  CHECK(c.subject == "u");
  CHECK(c.topics == std::vector<std::string>{"t.a"});
  CHECK(c.expires_at == kNow + 600);
  CHECK(rs.verify(sign("RS256", claims(), "RS256", "", rsa.pkey), kNow).org_id == "42");
  CHECK(es.verify(sign("ES256", claims(), "ES256", "", ec.pkey), kNow).org_id == "42");
  // A numeric org_id reads as its decimal text.
  CHECK(hs.verify(sign("HS256", claims({{"org_id", 7}}), "HS256"), kNow).org_id == "7");
}

TEST_CASE(
    "org_id: an integer reads as its exact decimal text, never wrapped, and NUL and fractions "
    "are refused") {
  const Verifier hs({Algorithm::hs256, kSecret});
  const auto org = [&](const json& value) {
    return hs.verify(sign("HS256", claims({{"org_id", value}}), "HS256"), kNow).org_id;
  };
  CHECK(org(json(std::uint64_t{18446744073709551615ULL})) == "18446744073709551615");
  CHECK(org(json(std::uint64_t{9223372036854775808ULL})) == "9223372036854775808");
  CHECK(org(json(std::int64_t{9223372036854775807LL})) == "9223372036854775807");
  CHECK(org(json(-3)) == "-3");
  CHECK(reason_of(hs, sign("HS256", claims({{"org_id", 1.5}}), "HS256")) == "claims");
  CHECK(reason_of(hs, sign("HS256", claims({{"org_id", 1e300}}), "HS256")) == "claims");
  CHECK(reason_of(hs, sign("HS256", claims({{"org_id", std::string("a\0b", 3)}}), "HS256")) ==
        "claims");
  CHECK(reason_of(hs, sign("HS256", claims({{"session_id", std::string("s\0", 2)}}), "HS256")) ==
        "claims");
  CHECK(reason_of(hs, sign("HS256", claims({{"scopes", {std::string("t.a\0x", 5)}}}), "HS256")) ==
        "claims");
}

TEST_CASE("the algorithm is the configured one, never the token's") {
  const Key rsa(EVP_RSA_gen(2048));
  const Verifier rs({Algorithm::rs256, rsa.public_pem()});
  // The attack: HS256, keyed with the server's public key (which is public).
  CHECK(reason_of(rs, sign("HS256", claims(), "HS256", rsa.public_pem())) == "algorithm");
  CHECK(reason_of(rs, sign("none", claims(), "none")) == "algorithm");
  CHECK(reason_of(rs, sign("RS512", claims(), "RS256", "", rsa.pkey)) == "algorithm");
  const Verifier hs({Algorithm::hs256, kSecret});
  CHECK(reason_of(hs, sign("RS256", claims(), "RS256", "", rsa.pkey)) == "algorithm");
  CHECK(reason_of(hs, sign("none", claims(), "none")) == "algorithm");
}

TEST_CASE("bad signatures, times and claims are refused, each with its reason") {
  const Verifier hs({Algorithm::hs256, kSecret});
  CHECK(reason_of(hs, "") == "missing");
  CHECK(reason_of(hs, "a.b") == "malformed");
  CHECK(reason_of(hs, "a.b.c.d") == "malformed");
  CHECK(reason_of(hs, "!!.e30.x") == "malformed");
  CHECK(reason_of(hs, sign("HS256", claims(), "HS256", "another secret of thirty-two bytes")) ==
        "signature");
  std::string tampered = sign("HS256", claims(), "HS256");
  tampered[tampered.find('.') + 3] ^= 1;
  CHECK(reason_of(hs, tampered) != "accepted");
  CHECK(reason_of(hs, sign("HS256", claims({{"exp", kNow - 31}}), "HS256")) == "expired");
  // Refused from exp + leeway on (the moment its streams end too).
  CHECK(reason_of(hs, sign("HS256", claims({{"exp", kNow - 30}}), "HS256")) == "expired");
  CHECK(reason_of(hs, sign("HS256", claims({{"exp", kNow - 29}}), "HS256")) == "accepted");
  CHECK(reason_of(hs, sign("HS256", claims({{"nbf", kNow + 31}}), "HS256")) == "not_yet_valid");
  for (const char* missing : {"exp", "org_id", "session_id", "scopes"}) {
    CAPTURE(missing);
    json c = claims();
    c.erase(missing);
    CHECK(reason_of(hs, sign("HS256", c, "HS256")) == "claims");
  }
  CHECK(reason_of(hs, sign("HS256", claims({{"scopes", "t.a"}}), "HS256")) == "claims");
  CHECK(reason_of(hs, sign("HS256", claims({{"org_id", ""}}), "HS256")) == "claims");
  const Verifier strict({Algorithm::hs256, kSecret, "https://door", "oasync"});
  CHECK(reason_of(strict, sign("HS256", claims(), "HS256")) == "issuer");
  CHECK(reason_of(strict, sign("HS256", claims({{"iss", "https://door"}}), "HS256")) == "audience");
  CHECK(reason_of(strict, sign("HS256", claims({{"iss", "https://door"}, {"aud", {"x", "oasync"}}}),
                               "HS256")) == "accepted");
}

TEST_CASE("a key that does not fit the algorithm is refused at start") {
  const Key rsa(EVP_RSA_gen(2048));
  const Key ec(EVP_EC_gen("P-384"));
  CHECK_THROWS_AS(Verifier({Algorithm::hs256, "short"}), std::invalid_argument);
  CHECK_THROWS_AS(Verifier({Algorithm::rs256, "not a pem"}), std::invalid_argument);
  CHECK_THROWS_AS(Verifier({Algorithm::es256, rsa.public_pem()}), std::invalid_argument);
  CHECK_THROWS_AS(Verifier({Algorithm::es256, ec.public_pem()}), std::invalid_argument);
  CHECK_THROWS_AS(Verifier({Algorithm::rs256, ec.public_pem()}), std::invalid_argument);
}
