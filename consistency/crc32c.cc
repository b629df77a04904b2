#include "consistency/crc32c.h"

#include <dlfcn.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace {

using ExtendFn = uint32_t (*)(uint32_t crc, const char* buf, size_t size);

// The library's definition, for a CPU without SSE4.2 (its mangled name).
constexpr const char* kLibraryExtend = "_ZN7rocksdb6crc32c6ExtendEjPKcm";

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t ExtendWithCrc32Instruction(uint32_t crc, const char* buf, size_t size) {
  uint64_t c = crc ^ 0xffffffffu;
  const char* p = buf;
  for (; size >= 8; p += 8, size -= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof word);
    c = _mm_crc32_u64(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; size > 0; ++p, --size) c32 = _mm_crc32_u8(c32, static_cast<unsigned char>(*p));
  return c32 ^ 0xffffffffu;
}
#endif

ExtendFn Chosen() {
#if defined(__x86_64__)
  __builtin_cpu_init();  // (a no-op once libgcc's constructor ran it)
  if (__builtin_cpu_supports("sse4.2")) return &ExtendWithCrc32Instruction;
#endif
  auto library = reinterpret_cast<ExtendFn>(dlsym(RTLD_NEXT, kLibraryExtend));
  if (library == nullptr) {
    const char* why = dlerror();
    std::fprintf(stderr, "onebox: RocksDB's own CRC32C (%s) is not found: %s\n", kLibraryExtend,
                 why != nullptr ? why : "no later definition");
    std::abort();  // every checksum RocksDB writes or checks goes through here
  }
  return library;
}

std::atomic<uint64_t> calls{0};

ExtendFn Implementation() {
  static const ExtendFn chosen = Chosen();
  return chosen;
}

}  // namespace

namespace rocksdb::crc32c {

// Declared by rocksdb (util/crc32c.h, not installed): the CRC32C of buf
// continued from crc, the CRC32C of what came before it.
uint32_t Extend(uint32_t crc, const char* buf, size_t size);
uint32_t Extend(uint32_t crc, const char* buf, size_t size) {
  calls.fetch_add(1, std::memory_order_relaxed);
  return Implementation()(crc, buf, size);
}

}  // namespace rocksdb::crc32c

namespace onebox {

uint64_t Crc32cCalls() { return calls.load(std::memory_order_relaxed); }

bool Crc32cInHardware() {
#if defined(__x86_64__)
  return Implementation() == &ExtendWithCrc32Instruction;
#else
  return false;
#endif
}

}  // namespace onebox
