#include "nodeagent/daemon/state_page_owner.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include <fmt/format.h>

namespace onebox {

Result<StatePageOwner*> StatePageOwner::Create() {
  int fd = memfd_create("onebox-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Status::IOError(fmt::format("memfd_create: {}", strerror(errno)));
  void* map = MAP_FAILED;
  if (ftruncate(fd, kStateMapBytesWithCreates) == 0)
    map = mmap(nullptr, kStateMapBytesWithCreates, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  // Our mapping stays writable; nobody can write, shrink or grow it after this.
  if (map == MAP_FAILED ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
    Status s = Status::IOError(fmt::format("state page: {}", strerror(errno)));
    if (map != MAP_FAILED) munmap(map, kStateMapBytesWithCreates);
    close(fd);
    return s;
  }
  auto* page = new (map) StatePage{};
  page->magic = StatePage::kMagic;
  auto* ports = new (static_cast<char*>(map) + kPortMapsOffset) PortMaps{};
  auto* leases = new (static_cast<char*>(map) + kLockLeasesOffset) LockLeases{};
  auto* creates = new (static_cast<char*>(map) + kCreateSlotsOffset) CreateSlots{};
  return new StatePageOwner(fd, page, ports, leases, creates);
}

}  // namespace onebox
