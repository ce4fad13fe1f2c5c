// oasync serve's token checks: the configured algorithm only (the HS256 with
// a public key attack, "none"), signatures, times and claims, and one
// spelling and one reading per token (canonical base64url, no duplicate
// member names, no crit, bounded NumericDates). Keys are made and tokens
// signed here with OpenSSL.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <nlohmann/json.hpp>

#include "jwt.hpp"
#include "oasync/sessions.hpp"
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

namespace {

// An HS256 token over the segments as given (which need not be canonical).
std::string hs_signed(const std::string& header_segment, const std::string& claims_segment) {
  const std::string input = header_segment + "." + claims_segment;
  return input + "." + b64url(hs256(input, kSecret));
}

// An HS256 token over the header and claims as JSON text, which may name a
// member twice or hold what nlohmann::json cannot write (1e300).
std::string hs_text(const std::string& header, const std::string& body) {
  return hs_signed(b64url(header), b64url(body));
}

const std::string kHeader = R"({"alg":"HS256","typ":"JWT"})";

// claims() as JSON text, with `extra` spliced in as raw members.
std::string claims_text(const std::string& extra) {
  std::string body = claims().dump();
  body.insert(body.size() - 1, "," + extra);
  return body;
}

// The same bytes spelled with the lowest unused bit of the last character
// set: base64url text of length 2 or 3 mod 4 has 4 or 2 such bits.
std::string with_unused_bit(std::string segment) {
  static const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  REQUIRE((segment.size() % 4 == 2 || segment.size() % 4 == 3));
  char& last = segment.back();
  last = alphabet[alphabet.find(last) + 1];
  return segment;
}

// JSON text padded with trailing spaces until its base64url spelling has
// unused bits (a length that is not a multiple of 3), or has none.
std::string unaligned(std::string text) {
  while (text.size() % 3 == 0) text += ' ';
  return text;
}
std::string aligned(std::string text) {
  while (text.size() % 3 != 0) text += ' ';
  return text;
}

// Base64url (canonical, as b64url writes it) back to bytes.
std::string from_b64url(std::string text) {
  for (char& c : text) c = c == '-' ? '+' : c == '_' ? '/' : c;
  const std::size_t pad = (4 - text.size() % 4) % 4;
  text.append(pad, '=');
  std::string bytes(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(bytes.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  REQUIRE(n >= 0);
  bytes.resize(static_cast<std::size_t>(n) - pad);
  return bytes;
}

}  // namespace

TEST_CASE(
    "session_id: more than kMaxSessionIdBytes bytes is refused, as it could never be revoked") {
  const Verifier hs({Algorithm::hs256, kSecret});
  const std::string longest(oasync::kMaxSessionIdBytes, 's');
  CHECK(hs.verify(sign("HS256", claims({{"session_id", longest}}), "HS256"), kNow).session_id ==
        longest);
  CHECK(reason_of(hs, sign("HS256", claims({{"session_id", longest + "s"}}), "HS256")) == "claims");
  CHECK(reason_of(hs, sign("HS256", claims({{"session_id", std::string(4096, 's')}}), "HS256")) ==
        "claims");
  CHECK(reason_of(hs, sign("HS256", claims({{"session_id", std::string("s\0", 2)}}), "HS256")) ==
        "claims");
}

TEST_CASE("a header with crit is refused, whatever it names") {
  const Verifier hs({Algorithm::hs256, kSecret});
  const std::string body = claims().dump();
  CHECK(reason_of(hs, hs_text(kHeader, body)) == "accepted");
  for (const char* header :
       {R"({"alg":"HS256","crit":["exp"],"exp":1})", R"({"alg":"HS256","crit":["b64"],"b64":true})",
        R"({"alg":"HS256","crit":[]})", R"({"alg":"HS256","crit":null})"}) {
    const std::string shown = header;
    CAPTURE(shown);
    CHECK(reason_of(hs, hs_text(header, body)) == "malformed");
  }
}

TEST_CASE("a member named twice in the header or the claims, at any depth, is refused") {
  const Verifier hs({Algorithm::hs256, kSecret});
  const std::string body = claims().dump();
  CHECK(reason_of(hs, hs_text(R"({"alg":"none","alg":"HS256"})", body)) == "malformed");
  CHECK(reason_of(hs, hs_text(R"({"alg":"HS256","x":{"k":1,"k":1}})", body)) == "malformed");
  CHECK(reason_of(hs, hs_text(kHeader, claims_text(R"("org_id":"1","org_id":"2")"))) ==
        "malformed");
  for (const char* members : {R"("exp":1800000600)", R"("x":{"a":1,"b":{"c":[{"d":1,"d":2}]}})",
                              R"("x":[[{"a":1,"a":1}]])"}) {
    const std::string shown = members;
    CAPTURE(shown);
    CHECK(reason_of(hs, hs_text(kHeader, claims_text(members))) == "malformed");
  }
  // One name in different objects is no duplicate.
  CHECK(
      reason_of(hs, hs_text(kHeader,
                            claims_text(R"("x":{"sub":1,"y":{"sub":2}},"z":[{"a":1},{"a":2}])"))) ==
      "accepted");
}

TEST_CASE("NumericDate: exp, nbf and iat outside 0..kMaxNumericDate or not numbers are refused") {
  const Verifier hs({Algorithm::hs256, kSecret});
  const auto with = [&](const std::string& name, const std::string& value) {
    json c = claims();
    c.erase(name);
    std::string body = c.dump();
    body.insert(body.size() - 1, ",\"" + name + "\":" + value);
    return reason_of(hs, hs_text(kHeader, body));
  };
  struct Case {
    const char* name;
    const char* value;
    const char* reason;
  };
  const Case cases[] = {
      // exp
      {"exp", "1800000600", "accepted"},
      {"exp", "1800000600.75", "accepted"},
      {"exp", "253402300799", "accepted"},
      {"exp", "253402300800", "claims"},
      {"exp", "9223372036854775807", "claims"},  // exp + leeway would overflow
      {"exp", "18446744073709551615", "claims"},
      {"exp", "1e300", "claims"},
      {"exp", "1e400", "malformed"},  // no finite double: not JSON to nlohmann::json
      {"exp", "-1e300", "claims"},
      {"exp", "-1", "claims"},
      {"exp", "\"1800000600\"", "claims"},
      {"exp", "null", "claims"},
      {"exp", "true", "claims"},
      // Rounds down: from kNow - 30 on it is refused.
      {"exp", "1799999970.9", "expired"},
      // nbf
      {"nbf", "0", "accepted"},
      {"nbf", "1800000030", "accepted"},
      {"nbf", "1800000030.25", "not_yet_valid"},  // rounds up to kNow + 31
      {"nbf", "1800000031", "not_yet_valid"},
      {"nbf", "253402300800", "claims"},
      {"nbf", "9223372036854775808", "claims"},
      {"nbf", "18446744073709551615", "claims"},  // once read as -1: fail open
      {"nbf", "1e300", "claims"},                 // once undefined, read as a huge negative
      {"nbf", "-1e300", "claims"},
      {"nbf", "-9223372036854775809", "claims"},
      {"nbf", "-1", "claims"},
      {"nbf", "\"soon\"", "claims"},
      // iat: not used, but checked
      {"iat", "1800000000", "accepted"},
      {"iat", "1800000000.5", "accepted"},
      {"iat", "1e300", "claims"},
      {"iat", "-5", "claims"},
      {"iat", "\"yesterday\"", "claims"},
  };
  for (const Case& c : cases) {
    const std::string member = std::string(c.name) + ": " + c.value;
    CAPTURE(member);
    CHECK(with(c.name, c.value) == std::string(c.reason));
  }
  const Claims read = hs.verify(hs_text(kHeader, claims_text(R"("nbf":0)")), kNow);
  CHECK(read.expires_at == kNow + 600);
  json fraction = claims();
  fraction.erase("exp");
  std::string body = fraction.dump();
  body.insert(body.size() - 1, R"(,"exp":1800000600.75)");
  CHECK(hs.verify(hs_text(kHeader, body), kNow).expires_at == kNow + 600);
}

TEST_CASE("the leeway is bounded, so exp + leeway cannot overflow") {
  CHECK_THROWS_AS(Verifier({Algorithm::hs256, kSecret, "", "", -1}), std::invalid_argument);
  CHECK_THROWS_AS(Verifier({Algorithm::hs256, kSecret, "", "", kMaxLeewaySeconds + 1}),
                  std::invalid_argument);
  CHECK_THROWS_AS(
      Verifier({Algorithm::hs256, kSecret, "", "", std::numeric_limits<std::int64_t>::max()}),
      std::invalid_argument);
  const Verifier widest({Algorithm::hs256, kSecret, "", "", kMaxLeewaySeconds});
  const Claims c = widest.verify(sign("HS256", claims({{"exp", kMaxNumericDate}}), "HS256"), kNow);
  CHECK(c.valid_until == kMaxNumericDate + kMaxLeewaySeconds);
  CHECK(widest.verify(sign("HS256", claims({{"exp", kNow}}), "HS256"), kNow).valid_until ==
        kNow + kMaxLeewaySeconds);
  CHECK(reason_of(widest, sign("HS256", claims({{"nbf", kMaxNumericDate}}), "HS256")) ==
        "not_yet_valid");
}

TEST_CASE("base64url: only the canonical spelling of each segment verifies") {
  const Verifier hs({Algorithm::hs256, kSecret});
  const std::string header = b64url(unaligned(kHeader));
  const std::string body = b64url(unaligned(claims().dump()));
  const std::string good = hs_signed(header, body);
  REQUIRE(reason_of(hs, good) == "accepted");
  const std::string signature = good.substr(good.rfind('.') + 1);
  const std::string signed_part = good.substr(0, good.rfind('.'));
  // The signer spelled a segment with an unused bit set (the signature covers
  // that text, so only the spelling is wrong).
  CHECK(reason_of(hs, hs_signed(with_unused_bit(header), body)) == "malformed");
  CHECK(reason_of(hs, hs_signed(header, with_unused_bit(body))) == "malformed");
  // Anyone can respell a signature: the same bytes, another token.
  CHECK(reason_of(hs, signed_part + "." + with_unused_bit(signature)) == "malformed");
  // Padding, another alphabet, whitespace, a length of 1 mod 4.
  CHECK(reason_of(hs, signed_part + "." + signature + "=") == "malformed");
  CHECK(reason_of(hs, hs_signed(header + "==", body)) == "malformed");
  CHECK(reason_of(hs, hs_signed(header, body + "=")) == "malformed");
  for (const char* swap : {"+", "/", " ", "\n", "*", "\xC3\xA9"}) {
    const std::string shown = swap;
    CAPTURE(shown);
    std::string respelled = signature;
    respelled.replace(5, 1, swap);
    CHECK(reason_of(hs, signed_part + "." + respelled) == "malformed");
  }
  const std::string whole = b64url(aligned(claims().dump()));
  REQUIRE(whole.size() % 4 == 0);
  CHECK(reason_of(hs, hs_signed(header, whole)) == "accepted");
  CHECK(reason_of(hs, hs_signed(header, whole + "A")) == "malformed");

  const Key ec(EVP_EC_gen("P-256"));
  const Verifier es({Algorithm::es256, ec.public_pem()});
  const std::string token = sign("ES256", claims(), "ES256", "", ec.pkey);
  REQUIRE(reason_of(es, token) == "accepted");
  CHECK(reason_of(es, token.substr(0, token.rfind('.') + 1) +
                          with_unused_bit(token.substr(token.rfind('.') + 1))) == "malformed");
}

TEST_CASE("ES256: a signature with a high S verifies, as with a low S") {
  const Key ec(EVP_EC_gen("P-256"));
  const Verifier es({Algorithm::es256, ec.public_pem()});
  const std::string token = sign("ES256", claims(), "ES256", "", ec.pkey);
  const std::size_t dot = token.rfind('.');
  // The same r with n - s: one of the two S values is above n / 2.
  const std::string raw = from_b64url(token.substr(dot + 1));
  REQUIRE(raw.size() == 64);
  EC_GROUP* group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  BIGNUM* flipped = BN_new();
  BN_sub(flipped, EC_GROUP_get0_order(group), s);
  std::string other = raw;
  BN_bn2binpad(flipped, reinterpret_cast<unsigned char*>(other.data()) + 32, 32);
  BN_free(flipped);
  BN_free(s);
  EC_GROUP_free(group);
  REQUIRE(other != raw);
  CHECK(reason_of(es, token) == "accepted");
  CHECK(reason_of(es, token.substr(0, dot + 1) + b64url(other)) == "accepted");
}
