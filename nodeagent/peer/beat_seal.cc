#include "nodeagent/peer/beat_seal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <map>
#include <memory>

namespace onebox {

namespace {
constexpr size_t kSenderBytes = 16;
constexpr size_t kTagBytes = 32;  // SHA-256
constexpr size_t kHeaderBytes = kBeatMagic.size() + kSenderBytes;
// Keys kept ready per thread: this agent's and one per member whose beats
// come in; past this many (members restarted with new keys, or a cluster
// this big), one is let go for each new one.
constexpr size_t kReadyKeysMax = 256;

struct FreeMacCtx {
  void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
};
using MacCtx = std::unique_ptr<EVP_MAC_CTX, FreeMacCtx>;
struct FreeMac {
  void operator()(EVP_MAC* mac) const { EVP_MAC_free(mac); }
};

// HMAC-SHA256 set up with key, once per key and thread. OpenSSL 3's
// one-shot HMAC() looks both algorithms up by name at every call, which was
// most of what sealing or opening a beat cost; a copy of a ready context
// looks nothing up. Null if OpenSSL fails (tried again at the next call).
const EVP_MAC_CTX* ReadyMac(std::string_view key) {
  thread_local std::unique_ptr<EVP_MAC, FreeMac> hmac;
  thread_local std::map<std::string, MacCtx, std::less<>> ready;
  if (auto it = ready.find(key); it != ready.end()) return it->second.get();
  if (!hmac) hmac.reset(EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr));
  if (!hmac) return nullptr;
  MacCtx ctx(EVP_MAC_CTX_new(hmac.get()));
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  if (!ctx || EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(key.data()), key.size(), params) != 1)
    return nullptr;
  if (ready.size() >= kReadyKeysMax) ready.erase(ready.begin());
  return ready.emplace(std::string(key), std::move(ctx)).first->second.get();
}

// The tag over sealed under key; empty if OpenSSL fails (no beat seals or
// opens with it).
std::string Tag(std::string_view key, std::string_view sealed) {
  const EVP_MAC_CTX* ready = ReadyMac(key);
  MacCtx ctx(ready != nullptr ? EVP_MAC_CTX_dup(ready) : nullptr);
  unsigned char tag[EVP_MAX_MD_SIZE];
  size_t len = 0;
  if (!ctx || EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(sealed.data()), sealed.size()) != 1 ||
      EVP_MAC_final(ctx.get(), tag, &len, sizeof tag) != 1)
    return {};
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
