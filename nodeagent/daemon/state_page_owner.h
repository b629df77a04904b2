// The agent's side of the shared state page (proto/state_page.h): creates
// and seals the memfd, and keeps the one writable mapping of it.
#pragma once

#include "consistency/status.h"
#include "proto/state_page.h"

namespace onebox {

class StatePageOwner {
 public:
  static Result<StatePageOwner*> Create();  // lives as long as the agent
  StatePage& page() { return *page_; }
  PortMaps& port_maps() { return *port_maps_; }
  LockLeases& lock_leases() { return *lock_leases_; }
  CreateSlots& create_slots() { return *create_slots_; }
  int fd() const { return fd_; }  // read-only for everyone else; send it, never close it

 private:
  StatePageOwner(int fd, StatePage* page, PortMaps* ports, LockLeases* leases, CreateSlots* creates)
      : fd_(fd), page_(page), port_maps_(ports), lock_leases_(leases), create_slots_(creates) {}
  int fd_;
  StatePage* page_;
  PortMaps* port_maps_;
  LockLeases* lock_leases_;
  CreateSlots* create_slots_;
};

}  // namespace onebox
