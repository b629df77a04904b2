// Fuzzes the state page as the shim takes it from the agent's socket
// (proto/state_page.h, preload/agent_link.cc): any memfd, of any size, with
// any seals, holding any bytes. The shim maps it only when nobody can shrink
// or rewrite it, never past its end (a read there would be SIGBUS in the
// program), and every read the shim makes of a trusted page (stubs, peers,
// the symlink-free view, the port bits for any port, the lock leases and
// the create slots for any file or directory) stays inside the
// mapping and agrees with the bytes.
//
// Input: byte 0 picks the seals, byte 1 the size (bit 16: the input's own
// length, else a menu around the page's edges), the rest is the memfd's
// content; its last 8 bytes, if any, are ports to look up, and its last
// bytes (of a few lengths) directories to look up in the create slots.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "proto/state_page.h"
#include "tests/fuzz/fuzz_util.h"

using onebox::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace onebox;
  if (size < 2) return 0;
  constexpr int kSealChoices[] = {F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE, F_SEAL_SEAL};
  const int64_t kSizes[] = {0,
                            4096,
                            4097,
                            static_cast<int64_t>(kStateMapBytes) - 1,
                            static_cast<int64_t>(kStateMapBytes),
                            static_cast<int64_t>(kStateMapBytesWithLeases) - 1,
                            static_cast<int64_t>(kStateMapBytesWithLeases),
                            static_cast<int64_t>(kStateMapBytesWithLeases) + 4096,
                            static_cast<int64_t>(kStateMapBytesWithCreates) - 1,
                            static_cast<int64_t>(kStateMapBytesWithCreates),
                            static_cast<int64_t>(kStateMapBytesWithCreates) + 4096};
  const uint8_t* content = data + 2;
  const size_t content_size = size - 2;
  const int64_t file_size = (data[1] & 16) != 0 ? static_cast<int64_t>(content_size)
                                                : kSizes[(data[1] & 15) % (sizeof kSizes / sizeof kSizes[0])];

  int fd = memfd_create("state-page-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  Require(fd >= 0);
  Require(ftruncate(fd, file_size) == 0);
  const size_t written = content_size < static_cast<size_t>(file_size) ? content_size : static_cast<size_t>(file_size);
  if (written != 0) Require(pwrite(fd, content, written, 0) == static_cast<ssize_t>(written));
  int seals = 0;
  for (size_t i = 0; i < sizeof kSealChoices / sizeof kSealChoices[0]; ++i)
    if ((data[0] >> i & 1) != 0) seals |= kSealChoices[i];
  // F_SEAL_SEAL last: the kernel takes the set at once.
  if (seals != 0) Require(fcntl(fd, F_ADD_SEALS, seals) == 0);

  // The shim's steps.
  struct stat st;
  Require(fstat(fd, &st) == 0);
  const size_t bytes = StatePageMapBytes(fcntl(fd, F_GET_SEALS), st.st_size);
  if (bytes == 0) {
    close(fd);
    return 0;
  }
  Require(static_cast<int64_t>(bytes) <= st.st_size);  // never mapped past the end
  Require((seals & F_SEAL_SHRINK) != 0 && (seals & F_SEAL_SEAL) != 0);
  Require(ftruncate(fd, 0) != 0);  // and it stays that long
  void* map = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return 0;  // (F_SEAL_WRITE: some kernels refuse even a read-only shared map)
  StatePageParts parts;
  const StatePage* page = TrustedStatePage(map, bytes, &parts);
  const PortMaps* maps = parts.ports;
  const LockLeases* leases = parts.leases;
  const CreateSlots* creates = parts.creates;
  if (page != nullptr) {
    uint64_t magic;
    std::memcpy(&magic, content, sizeof magic);
    Require(content_size >= sizeof magic && magic == StatePage::kMagic);
    Require(maps == nullptr || st.st_size >= static_cast<int64_t>(kStateMapBytes));
    Require(leases == nullptr || st.st_size >= static_cast<int64_t>(kStateMapBytesWithLeases));
    Require(creates == nullptr || st.st_size >= static_cast<int64_t>(kStateMapBytesWithCreates));
    // Whatever a lease slot holds, the shim's looks stay inside the map.
    for (uint64_t probe = 0; leases != nullptr && probe < 4 && content_size >= 16; ++probe) {
      uint64_t dev = 0, ino = 0;
      std::memcpy(&dev, content + content_size - 16, 8);
      std::memcpy(&ino, content + content_size - 8, 8);
      unsigned slot = LockLeases::kSlots;
      if (uint64_t seq = LockLeaseBegin(leases, dev + probe, ino, probe % 2 == 1, &slot); seq != 0) {
        Require(slot < LockLeases::kSlots && (seq & 1) == 1);
        (void)LockLeaseStill(leases, slot, seq);
      }
    }
    // Whatever a create slot holds, the shim's looks stay inside the map
    // (the directory looked up: the input's last bytes, of a few lengths).
    for (size_t len = 0; creates != nullptr && len <= content_size && len <= 240; len += 1 + len / 2) {
      const std::string_view dir(reinterpret_cast<const char*>(content) + content_size - len, len);
      unsigned slot = CreateSlots::kSlots;
      if (uint64_t seq = CreateSlotBegin(creates, dir, &slot); seq != 0) {
        Require(slot < CreateSlots::kSlots && (seq & 1) == 1 && dir.size() <= 8 * CreateSlot::kKeyWords);
        (void)CreateSlotStill(creates, slot, seq);
      }
    }
    (void)page->stubs.load();
    (void)page->peers_alive.load();
    uint64_t epoch = 0;
    if (SymlinkFreeBegin(page, &epoch)) {
      Require(page->symlinks.load() == 0 && page->symlink_guard == StatePage::kSymlinkGuard);
      (void)SymlinkFreeStill(page, epoch);
    }
    if (maps != nullptr && content_size >= 8) {
      for (size_t i = content_size - 8; i + 2 <= content_size; i += 2) {
        const unsigned port = static_cast<unsigned>(content[i]) << 8 | content[i + 1] | (content[i] & 1u) << 16;  // up to 131071
        const bool remote = maps->remote.Has(port), handover = maps->handover.Has(port);
        Require(port < PortBits::kPorts || (!remote && !handover));
      }
    }
  } else {
    Require(maps == nullptr && leases == nullptr && creates == nullptr);
  }
  munmap(map, bytes);
  return 0;
}
