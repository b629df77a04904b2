// Whether a pointer a program passed may be read. A path at an address the
// process has not mapped (pjdfstest passes 0xdeadc0de) must give the program
// EFAULT, as the kernel does, and not crash it in the shim's own read of the
// string. The readable ranges of /proc/self/maps are kept in a fixed array
// behind a sequence lock, so a check takes no lock, makes no system call and
// allocates nothing; an address outside them reads the maps again (a new
// mapping, a grown stack) before it is called unreadable. Written here, not
// taken from a library: no library answers "is this address mapped" without
// a system call per question.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/syscall.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "preload/native_path.h"

namespace onebox::shim {

namespace {

// libc's syscall(), never the shim's (which would look at the path again).
long LibcSyscall(long number, long a, long b, long c) {
  static auto* libc_syscall = reinterpret_cast<long (*)(long, ...)>(dlsym(RTLD_NEXT, "syscall"));
  return libc_syscall(number, a, b, c);
}

constexpr size_t kMaxRanges = 4096;
constexpr uintptr_t kLowestMapped = 4096;  // the zero page is never mapped

std::atomic<uintptr_t> range_lo[kMaxRanges], range_hi[kMaxRanges];
std::atomic<size_t> range_count{0};
std::atomic<uint64_t> ranges_seq{0};       // odd while the ranges are being written
std::atomic<bool> too_many_ranges{false};  // then every address counts as readable
std::mutex reload_mu;

enum class Found { kYes, kNo, kBusy };

Found Lookup(uintptr_t p) {
  uint64_t before = ranges_seq.load(std::memory_order_acquire);
  if (before & 1) return Found::kBusy;
  size_t lo = 0, hi = range_count.load(std::memory_order_relaxed);
  while (lo < hi) {  // the first range whose end is above p
    size_t mid = (lo + hi) / 2;
    if (range_hi[mid].load(std::memory_order_relaxed) <= p) lo = mid + 1;
    else hi = mid;
  }
  bool in = lo < range_count.load(std::memory_order_relaxed) && range_lo[lo].load(std::memory_order_relaxed) <= p;
  std::atomic_thread_fence(std::memory_order_acquire);
  if (ranges_seq.load(std::memory_order_relaxed) != before) return Found::kBusy;
  return in ? Found::kYes : Found::kNo;
}

uintptr_t Hex(const char*& s, const char* end) {
  uintptr_t v = 0;
  for (; s < end; ++s) {
    char c = *s;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) break;
    v = v * 16 + static_cast<uintptr_t>(d);
  }
  return v;
}

// Reads /proc/self/maps into the ranges (readable ones, adjacent ones
// merged). False when another thread is at it (or a fork left its lock held).
bool Reload() {
  std::unique_lock lock(reload_mu, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  int fd = static_cast<int>(
      LibcSyscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/maps"), O_RDONLY | O_CLOEXEC));
  if (fd < 0) return false;
  ranges_seq.fetch_add(1, std::memory_order_acq_rel);  // odd: readers look again later
  std::atomic_thread_fence(std::memory_order_release);  // no range written before it is seen odd
  size_t count = 0;
  bool overflow = false;
  char buf[4096];
  size_t have = 0;
  bool in_long_line = false;  // the rest of a line longer than buf: skipped to its newline
  auto take = [&](const char* line, const char* end) {
    const char* s = line;
    uintptr_t lo = Hex(s, end);
    ++s;  // '-'
    uintptr_t hi = Hex(s, end);
    if (!(s + 1 < end && s[1] == 'r')) return;  // not readable
    if (count > 0 && range_hi[count - 1].load(std::memory_order_relaxed) == lo) {
      range_hi[count - 1].store(hi, std::memory_order_relaxed);
    } else if (count < kMaxRanges) {
      range_lo[count].store(lo, std::memory_order_relaxed);
      range_hi[count].store(hi, std::memory_order_relaxed);
      ++count;
    } else {
      overflow = true;
    }
  };
  for (;;) {
    long n = LibcSyscall(SYS_read, fd, reinterpret_cast<long>(buf + have), static_cast<long>(sizeof buf - have));
    if (n < 0) overflow = true;  // a table cut short would call readable memory unreadable: "unknown" instead
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    size_t used = 0;
    if (in_long_line) {
      const char* nl = static_cast<const char*>(memchr(buf, '\n', have));
      if (nl == nullptr) {
        have = 0;
        continue;
      }
      used = static_cast<size_t>(nl + 1 - buf);
      in_long_line = false;
    }
    for (;;) {  // every whole line: "lo-hi perms ..."
      const char* line = buf + used;
      const char* nl = static_cast<const char*>(memchr(line, '\n', have - used));
      if (nl == nullptr) break;
      take(line, nl);
      used = static_cast<size_t>(nl + 1 - buf);
    }
    memmove(buf, buf + used, have - used);
    have -= used;
    if (have == sizeof buf) {  // a line longer than buf (a mapped file's long path): its range, then skip the rest
      take(buf, buf + have);
      have = 0;
      in_long_line = true;
    }
  }
  LibcSyscall(SYS_close, fd, 0, 0);
  range_count.store(count, std::memory_order_relaxed);
  too_many_ranges.store(overflow, std::memory_order_relaxed);
  ranges_seq.fetch_add(1, std::memory_order_release);
  return true;
}

}  // namespace

void MayReadLockForFork(bool lock) {
  if (lock) reload_mu.lock();
  else reload_mu.unlock();
}

bool MayRead(const void* pointer) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(pointer);
  if (p < kLowestMapped) return false;
  if (too_many_ranges.load(std::memory_order_relaxed)) return true;
  Found found = Lookup(p);
  if (found != Found::kNo) return true;  // (busy: a reload is under way, most likely of a new mapping)
  const int saved_errno = errno;
  bool reloaded = Reload();
  errno = saved_errno;
  if (!reloaded) return true;  // another thread reloads: do not wait for it
  return Lookup(p) != Found::kNo;
}

}  // namespace onebox::shim
