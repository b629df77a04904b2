// The view as a descriptor, for programs in other mount namespaces (a pod
// that mounts only the agent's socket and the shim): a detached copy of the
// view's mount (open_tree(OPEN_TREE_CLONE)), one per ask, sent to the shim
// over the socket (SCM_RIGHTS).
//
// Detached, not the view directory itself: ".." at the root of a mount with
// no parent stays at that root, so a program holding the descriptor cannot
// walk up into the agent's data dir or the node's file system, whatever it
// asks the kernel directly. One per connection: anyone may change a
// detached mount's flags (mount_setattr from a user namespace of their
// own), so no two callers share one, and each copy is a mount namespace of
// its own (the node has a limit of those), so a connection gets one only.
// Made nosuid, nodev and private (no propagation from the node's mounts);
// its holder may clear the first two on its own copy, but the kernel
// honours no set-user-ID bit on a mount outside the caller's namespace,
// and device nodes still answer to the container's device rules.
//
// open_tree needs CAP_SYS_ADMIN (an agent as root); without it every ask
// says why (EACCES), and only programs that see the view's path (the node's
// own mount namespace) reach the cluster.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <string>

#include "consistency/status.h"

namespace onebox {

class DetachedView {
 public:
  explicit DetachedView(std::string view_root);

  // A new copy (O_PATH, close-on-exec) for the shim on connection: the
  // caller's to send and close. FailedPrecondition when it had one already.
  Result<int> Make(uint64_t connection);
  void ConnectionClosed(uint64_t connection);
  // The view root's identity, told in Hello: a shim that opens the view's
  // path and finds another directory asks for a copy instead.
  uint64_t dev() const { return dev_; }
  uint64_t ino() const { return ino_; }

 private:
  const std::string view_root_;
  uint64_t dev_ = 0, ino_ = 0;
  std::mutex mu_;
  std::set<uint64_t> served_;  // connections that have their copy
  bool told_made_ = false;     // logged once, as is each kind of failure
  std::set<int> told_errors_;
};

}  // namespace onebox
