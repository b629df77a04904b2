// The requests the shim sends the agent (proto/onebox/v1/shim.proto),
// declared once, in the manner of consistency/column_families.h:
// X(oneof case, handler in ShimHandlers, where it runs, what it is for).
// A new kind of request is one line here and one handler. kInline requests
// are answered on the socket's thread and never block; kPool requests may
// take long (hashing a file, fetching content, a vote) and are answered from
// the shim work pool while their connection waits (ShimCall::Defer); kCalls
// requests likewise, on a pool of their own, so that a user's writes at
// QUORUM never hold up programs' fsync or opens.
#pragma once

#define ONEBOX_SHIM_REQUESTS(X)                                                                              \
  X(kPing, Ping, kInline, "who the agent is, and the caller as the kernel names it (the CLI finds gRPC so)") \
  X(kHello, Hello, kInline, "the shim's root, made in the view: answered with the view and the state page") \
  X(kPublish, Publish, kPool, "fsync: record the file now, durably, and on the write quorum")               \
  X(kHydrate, Hydrate, kPool, "open of a stub: fetch the content and put the whole file in place")          \
  X(kClaim, Claim, kInline, "an exclusive create: at once under a lease held here, else on the pool (a vote)") \
  X(kAnnounceSymlink, AnnounceSymlink, kInline, "before symlink(): the state page says the view may hold one") \
  X(kSymlinkMade, SymlinkMade, kInline, "after symlink(): the announcement is done")                      \
  X(kCall, Call, kCalls, "a method that acts as its caller (kv put, restore: api/local_calls.h), for the CLI") \
  X(kSignal, Signal, kCalls, "kill, killpg or sigqueue of a gpid: Process/Signal, as the caller")          \
  X(kRun, StartRun, kInline, "onebox run: the connection becomes the run's stream (process/run_relay.h)") \
  X(kPlace, Place, kPool, "exec of a program ONEBOX_PLACE places: the node it runs on (process/placement.h)") \
  X(kBindPort, BindPort, kCalls, "bind() of a cluster port: a vote, then the port table (sockets/port_table.h)") \
  X(kDialPort, DialPort, kInline, "connect() to another node's port: a link to its owner, sent back (sockets/port_relay.h)") \
  X(kTakeLink, TakeLink, kInline, "accept() of the agent's connection to a server: the link behind it (sockets/handover.h)") \
  X(kView, View, kInline, "a program in another mount namespace: the view as a descriptor (view/detached_view.h)") \
  X(kLock, Lock, kInline, "flock, fcntl's locks, lockf on a cluster file: to its lock home, answered later (locks/node_locks.h)")

namespace onebox {

enum class ShimRuns { kInline, kPool, kCalls };

}  // namespace onebox
