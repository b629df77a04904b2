// SHA-256, written once (OpenSSL's EVP): content chunks are addressed by it,
// and the store's state digest, anti-entropy's bucket digests, stub ids and
// the holders' ranking weights are made with it; HMAC-SHA256 for the join
// token's proofs and the stubs' marks.
#pragma once

#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace onebox {

// SHA-256 of bytes (raw, 32 bytes).
std::string Sha256(std::string_view bytes);
// HMAC-SHA256 of bytes under key (raw, 32 bytes; empty if OpenSSL fails).
// (Beats, sealed thousands of times a second, keep their own ready contexts: peer/beat_seal.cc.)
std::string HmacSha256(std::string_view key, std::string_view bytes);
// Lowercase hex of raw bytes (digests in logs, keys and the API).
std::string HexOf(std::string_view raw);

// SHA-256 over a sequence of parts, each framed by its length (8 bytes,
// big-endian), so that ("ab", "c") and ("a", "bc") differ.
class Sha256OfParts {
 public:
  Sha256OfParts();
  ~Sha256OfParts();
  Sha256OfParts(Sha256OfParts&& other) noexcept;
  Sha256OfParts(const Sha256OfParts&) = delete;
  Sha256OfParts& operator=(const Sha256OfParts&) = delete;
  void Add(std::string_view part);
  std::string Finish();  // raw 32 bytes; call once

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace onebox
