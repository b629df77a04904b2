// The glance every hot interposed call (open, stat, close) takes before
// anything else, inlined into it: is this absolute path certainly not the
// cluster's? Internal to the shim (hidden symbols).
//
// It runs between two system calls, after the kernel's work has pushed the
// program's code and data out of the first-level caches: there, what costs
// is less the instructions than the code bytes and cache lines touched, and
// any frame left between the program and libc (measured: docs/performance.md,
// P1). So it is small and has no frame: the root's first 8 bytes are one
// 64-bit compare, the path is scanned for "/." and "//" 16 bytes at a time
// by a short loop, everything it reads of its own is on one cache line
// (HotPath), and it ends in a jump to the libc function, which returns
// straight to the program. Whatever it cannot answer (a relative path, a
// path whose next 17 bytes cross into another page, one that may be the
// cluster's) goes to the entry point's out-of-line slow path, which checks
// exactly (SurelyNative) before anything else.
#pragma once

#include <emmintrin.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string_view>

struct stat;

namespace onebox::shim {

// What the hot paths read, on one cache line: the root's first bytes, the
// libc functions they jump to (fcntl's too), and the shim's own two
// descriptors (which close() must not hand to libc).
struct alignas(64) HotPath {
  // The root's first 8 bytes as a little-endian word (zero-padded), and a
  // mask of the bytes that count. A root longer than 8 bytes is compared on
  // its first 8: a path that matches them is left to the slow path.
  uint64_t root_head = 0;
  uint64_t root_mask = 0;
  // Resolved by the shim's constructor; nullptr before it has run (a call
  // from another library's constructor), when the slow paths serve the call.
  std::atomic<int (*)(int, const char*, int, ...)> openat{nullptr};
  std::atomic<int (*)(int, const char*, struct stat*, int)> fstatat{nullptr};
  std::atomic<int (*)(int)> close{nullptr};
  std::atomic<int (*)(int, int, ...)> fcntl{nullptr};
  std::atomic<int (*)(int, int, ...)> fcntl64{nullptr};
  int link_fd = -1;  // the Unix socket to the agent (agent_link.cc)
  int view_fd = -1;  // the O_PATH of the view root (agent_link.cc)

  constexpr explicit HotPath(std::string_view root) { SetRoot(root); }
  constexpr void SetRoot(std::string_view root) {
    size_t n = root.size() < 8 ? root.size() : 8;
    root_head = 0;
    for (size_t i = 0; i < n; ++i) root_head |= uint64_t{static_cast<unsigned char>(root[i])} << (8 * i);
    root_mask = n == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * n)) - 1;
  }
};
static_assert(sizeof(HotPath) == 64, "the hot paths read one cache line");
extern HotPath hot_path;
void ResolveHotReals();  // fills the functions (the shim's constructor)

// Whether the program's pointer may be read (preload/user_memory.cc): false
// for an address no mapping holds, which the shim hands to libc unread, so
// that the kernel answers EFAULT.
bool MayRead(const void* pointer);
// Held across fork() (true before, false after, in parent and child), so
// that a child never starts with the table half written and its lock held.
void MayReadLockForFork(bool lock);
// As MayRead, answered at once for the pages this thread found readable
// lately (a program's paths mostly come from a few buffers: a stack frame,
// string constants, a heap block): a few slots, each page in the slot its
// low bits name.
constexpr size_t kReadablePageSlots = 8;
inline thread_local __attribute__((tls_model("initial-exec"))) uintptr_t readable_pages[kReadablePageSlots] = {
    ~uintptr_t{0}, ~uintptr_t{0}, ~uintptr_t{0}, ~uintptr_t{0}, ~uintptr_t{0}, ~uintptr_t{0}, ~uintptr_t{0}, ~uintptr_t{0}};
__attribute__((always_inline)) inline bool OnReadablePage(const char* p) {
  const uintptr_t page = reinterpret_cast<uintptr_t>(p) >> 12;
  return readable_pages[page % kReadablePageSlots] == page;
}
inline bool MayReadPage(const char* p) {
  if (__builtin_expect(OnReadablePage(p), 1)) return true;
  if (!MayRead(p)) return false;  // (the zero page too)
  const uintptr_t page = reinterpret_cast<uintptr_t>(p) >> 12;
  readable_pages[page % kReadablePageSlots] = page;
  return true;
}

// True when path is absolute, certainly outside the cluster root, and has no
// "/." or "//" in it (so it cannot normalize into the root either); false
// when the slow path must decide (which is no claim that the path is the
// cluster's). The loads may read up to 16 bytes past the path's NUL, never
// into another page (valgrind's memcheck reports that as an invalid read
// when the path is a heap string that ends near the end of its block).
__attribute__((always_inline)) inline bool NativeAtAGlance(const char* path) {
  auto near_page_end = [](const char* p) { return (reinterpret_cast<uintptr_t>(p) & 4095) > 4096 - 17; };
  const uintptr_t addr = reinterpret_cast<uintptr_t>(path);
  if (__builtin_expect((addr < 4096) | near_page_end(path), 0)) return false;  // and nullptr
  // Not on this thread's last readable page: the slow path looks (and hands an unmapped one to libc: EFAULT).
  if (!OnReadablePage(path)) return false;
  uint64_t head;
  memcpy(&head, path, sizeof head);
  const bool root_prefix = ((head ^ hot_path.root_head) & hot_path.root_mask) == 0;
  if (__builtin_expect(root_prefix | ((head & 0xff) != '/'), 0)) return false;
  const __m128i slash = _mm_set1_epi8('/'), dot = _mm_set1_epi8('.'), nul = _mm_setzero_si128();
  for (const char* p = path;;) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 1));
    // Bit i: p[i] == '/' and p[i + 1] is '/' or '.'.
    const unsigned pairs = static_cast<unsigned>(_mm_movemask_epi8(_mm_and_si128(
        _mm_cmpeq_epi8(v, slash), _mm_or_si128(_mm_cmpeq_epi8(next, slash), _mm_cmpeq_epi8(next, dot)))));
    const unsigned nuls = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, nul)));
    if (nuls != 0) return (pairs & (nuls ^ (nuls - 1))) == 0;  // the pairs before the NUL (which is no '/')
    if (pairs != 0) return false;
    p += 16;
    if (__builtin_expect(near_page_end(p), 0)) return false;
  }
}

// The exact check the slow paths make first: true when (dirfd, path)
// certainly does not concern the cluster: an absolute path outside the root
// (and nothing like "/." or "//" in it), or a relative one from a native cwd
// or dirfd. Allocation-free.
bool SurelyNative(int dirfd, const char* path);

}  // namespace onebox::shim
