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
  RemotePorts& remote_ports() { return *remote_ports_; }
  int fd() const { return fd_; }  // read-only for everyone else; send it, never close it

 private:
  StatePageOwner(int fd, StatePage* page, RemotePorts* ports) : fd_(fd), page_(page), remote_ports_(ports) {}
  int fd_;
  StatePage* page_;
  RemotePorts* remote_ports_;
};

}  // namespace onebox
