#include "nodeagent/peer/beat_seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace onebox {

namespace {
constexpr size_t kSenderBytes = 16;
constexpr size_t kTagBytes = 32;  // SHA-256
constexpr size_t kHeaderBytes = kBeatMagic.size() + kSenderBytes;

std::string Tag(std::string_view key, std::string_view sealed) {
  unsigned char tag[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(sealed.data()),
       sealed.size(), tag, &len);
  return std::string(reinterpret_cast<const char*>(tag), len);
}
}  // namespace

std::string NewBeatKey() {
  std::string key(kBeatKeyBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1) return {};
  return key;
}

std::string SealBeat(std::string_view sender_id, std::string_view key, std::string_view payload) {
  std::string out;
  out.reserve(kHeaderBytes + payload.size() + kTagBytes);
  out.append(kBeatMagic).append(sender_id.substr(0, kSenderBytes)).append(payload);
  out.append(Tag(key, out));
  return out;
}

std::optional<std::string_view> BeatSender(std::string_view datagram) {
  if (datagram.size() < kHeaderBytes + kTagBytes || !datagram.starts_with(kBeatMagic)) return std::nullopt;
  return datagram.substr(kBeatMagic.size(), kSenderBytes);
}

std::optional<std::string_view> OpenBeat(std::string_view datagram, std::string_view key) {
  if (!BeatSender(datagram) || key.empty()) return std::nullopt;
  const std::string_view sealed = datagram.substr(0, datagram.size() - kTagBytes);
  const std::string want = Tag(key, sealed);
  if (want.size() != kTagBytes || CRYPTO_memcmp(want.data(), datagram.data() + sealed.size(), kTagBytes) != 0)
    return std::nullopt;
  return sealed.substr(kHeaderBytes);
}

}  // namespace onebox
