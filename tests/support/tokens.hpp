// Minting JSON Web Tokens in tests and in the bench, as a front door would:
// the encoding and the HS256 signature, with OpenSSL.
#pragma once

#include <string>

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace oasync::test {

// Standard base64 without padding: how phoenix.js's authToken carries a
// token in Sec-WebSocket-Protocol ("base64url.bearer.phx." + this).
inline std::string base64_unpadded(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

// Base64url without padding (RFC 7515 §2).
inline std::string b64url(const std::string& bytes) {
  std::string out = base64_unpadded(bytes);
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

// The raw HMAC-SHA256 of `input` keyed with `secret`: an HS256 signature.
inline std::string hs256(const std::string& input, const std::string& secret) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &n);
  return std::string(reinterpret_cast<char*>(mac), n);
}

// An HS256 JWT of `claims` (a JSON object's text) signed with `secret`.
inline std::string hs256_token(const std::string& secret, const std::string& claims) {
  const std::string input = b64url(R"({"alg":"HS256","typ":"JWT"})") + "." + b64url(claims);
  return input + "." + b64url(hs256(input, secret));
}

}  // namespace oasync::test
