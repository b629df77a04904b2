// The cluster's port table: which node's program holds each TCP port that a
// program under the shim bound (bind() of the any address or loopback, port
// not 0). One record per port in the store's "ports" family, written by the
// owner's agent and replicated like namespace records; the owner deletes it
// once the port is let go (close, exit, crash: the agent looks every
// second), and rewrites its relay address after a restart.
//
// A port is won by a vote (Peer/ClaimPort): a majority of the members not
// declared dead (this node and seeds not heard from included) must grant
// it, and none may say that a node holds it. A member refuses a port that
// a record of a node not dead holds, or that it granted to another claim
// in the last kGrantHold (its record may not have arrived yet: the
// claimant's record, naming its claim, ends the grant). Two nodes that see
// the same members cannot both win; a round that nobody wins is withdrawn
// and tried again after a random pause. Views differ for a moment when a
// node joins or returns: docs/consistency.md says what that allows.
//
// The owner's agent deletes the record once none of the record's sockets
// listens on the port and the first binder's socket is closed; a port below
// ip_unprivileged_port_start is refused to a user other than root (as the
// kernel would refuse the bind).
//
// A record counts only while its owner is not dead to this node: the ports
// of a node declared dead (membership: 10 s without a heartbeat) are free,
// on every node, from the moment each one declares it; a node only
// suspected (2 s of silence) keeps them. So are those of a node not heard
// of at all 10 s after this agent started (Membership::Gone: one gone for
// good, whose records outlived it). docs/consistency.md
// says what a partition does.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <set>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "consistency/store.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/peer/periodic.h"
#include "onebox/v1/cluster.pb.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

// The lowest port a user other than root may bind on this node (the
// kernel's rule, read from its network namespace's
// ip_unprivileged_port_start each time).
uint32_t UnprivilegedPortStart();

class PortTable {
 public:
  // A grant stands this long for a claimant whose record has not come.
  static constexpr auto kGrantHold = std::chrono::seconds(5);
  // A claim tries vote rounds for this long before it gives up.
  static constexpr auto kClaimWait = std::chrono::seconds(3);
  // A node not heard for this long is cut off for connections: they end
  // within 10 s of its last word (heard here up to about 1 s later, through
  // another member's gossip; seen here within kWatchPeriod), 3 s before it is
  // declared dead.
  static constexpr auto kCutOffAfter = std::chrono::seconds(7);
  // How often the owner looks whether its ports are still bound.
  static constexpr auto kWatchPeriod = std::chrono::milliseconds(1000);

  struct Self {
    std::string node_id;  // hex
    std::string name;
    std::function<uint32_t()> index;  // for gpids
  };
  PortTable(Store& store, Membership& members, PeerNetwork& network, Self self);
  ~PortTable();

  const std::string& self_id() const { return self_.node_id; }
  // The key of a TCP port: "tcp/" and five digits, so keys sort by port;
  // of a Unix socket: "unix/" and its path below the view root.
  static std::string Key(uint32_t port);
  static std::string UnixKey(const std::string& rel) { return "unix/" + rel; }

  // What a program bound: a port (ipv6: connections come in over ::1), or
  // a Unix stream socket at path (below the view root); and its socket.
  struct Binding {
    uint32_t port = 0;
    bool ipv6 = false;
    std::string path;
    uint64_t socket_inode = 0;
    std::string key() const { return path.empty() ? Key(port) : UnixKey(path); }
  };

  // Where other nodes' agents reach this node's relay (sockets/port_relay.h); before Start.
  void set_relay_address(std::string address) { relay_address_ = std::move(address); }
  // Called (from any thread, without locks held) after the table may have
  // changed: a record written here or by a peer, a port let go, a member
  // cut off, dead or back (the watch calls it every kWatchPeriod for those).
  // The relay opens and closes its listeners by it. at_rest: whether what
  // on_change looks after needs no more calls (PortRelay::HoldsNothing).
  void set_on_change(std::function<void()> fn, std::function<bool()> at_rest) {
    on_change_ = std::move(fn);
    on_change_at_rest_ = std::move(at_rest);
  }
  // Watches this node's ports every kWatchPeriod, and tells on_change,
  // while the table holds any record or on_change is not at rest (an
  // empty table and an idle relay cost no wakeups).
  void Start();
  void Stop();
  // The relay took on a connection the cut-off rule may end: the watch
  // does not rest (PortRelay::HoldsNothing says so from then on).
  void WakeWatch() { watch_.Wake(); }

  // bind() by the caller (pid, uid). Ok: the kernel may bind it now.
  // AlreadyExists: another node's program holds it (EADDRINUSE).
  // Unavailable: no majority granted it. PermissionDenied: a privileged port.
  // The socket must be open in the caller (pid): a claim names its own.
  Status Claim(const Binding& b, pid_t pid, uid_t uid);
  // The kernel's bind failed after the claim: the socket is taken out of
  // the record (the record goes with its last one). The first socket, the
  // owner's, only by its user or root.
  void Release(const Binding& b, pid_t pid, uid_t uid);
  // A peer's record of key arrived (replication or anti-entropy). A grant
  // to the node that wrote it is spent (it won, or let the port go since);
  // a grant to another node stands (an old owner's late deletion must not
  // free a vote a claimant still counts).
  void PeerChanged(const std::string& key);

  // The Peer call, as this node answers it.
  Status OnClaimPort(const v1::ClaimPortRequest& req, v1::ClaimPortResponse* resp);

  // Every port whose owner is this node or a member not declared dead, in port order.
  // (This node's own are not checked here: its watch does, each second.)
  std::vector<v1::ClusterPort> Live();
  // The record of key when this node owns it.
  std::optional<v1::ClusterPort> OwnedHere(const std::string& key);
  // Whether one of this node's record's sockets listens: the relay connects
  // for another node only then (never to another program that listens on
  // the port while the record's own socket does not).
  bool ListensNow(const v1::ClusterPort& port);
  // Whether connections to node_id's ports end here: it is gone, or has not
  // been heard for kCutOffAfter. Its ports are not reached from here then
  // (new connects refused), though they stay its until it is declared dead.
  bool OwnerCutOff(const std::string& node_id);

  // Tells the relay the table may read differently now (a member was just
  // declared dead: its records no longer count; or cut off).
  void Notify();

 private:
  struct Grant {
    std::string node_id;
    uint64_t claim_id = 0;
    std::chrono::steady_clock::time_point until;
  };
  // The record of key if it counts (this node's: its port still bound
  // here; another's: its node not declared dead).
  std::optional<v1::ClusterPort> Holder(const std::string& key);
  // This node's vote (mu_ held).
  v1::ClaimPortResponse CastLocked(const v1::ClaimPortRequest& req);
  // A majority of the members not declared dead, this node and seeds not
  // heard from included.
  size_t VotesNeeded();
  // One round: this node's vote and every live other's. True when won;
  // *held when someone refused because a live node holds it.
  bool Round(const v1::ClaimPortRequest& req, bool* held, std::string* why);
  void Withdraw(v1::ClaimPortRequest req);
  // call(peer) for every live other member at once; returns when all did.
  void ForEachAliveOther(const std::function<void(const PeerAddress&)>& call);
  // Deletes this node's records whose port is not bound here any more.
  void Watch();
  bool AtRest();  // no record at all, of this node or another, and on_change at rest

  Store& store_;
  Membership& members_;
  PeerNetwork& network_;
  const Self self_;
  std::string relay_address_;
  std::function<void()> on_change_;
  std::function<bool()> on_change_at_rest_;
  std::mutex mu_;
  std::map<std::string, Grant> grants_;  // by key (under mu_)
  // One claim, release or look at a time per key (a claim waits on the
  // network: others' keys go on meanwhile).
  class KeyLock {
   public:
    KeyLock(PortTable& t, std::string key);
    ~KeyLock();

   private:
    PortTable& t_;
    std::string key_;
  };
  std::mutex keys_mu_;
  std::condition_variable keys_cv_;
  std::set<std::string> busy_keys_;  // under keys_mu_
  // Inodes of this node's records' sockets seen listening lately (ListensNow;
  // refreshed by each watch pass, and on a miss): under mu_.
  std::set<uint64_t> listening_;
  PeriodicThread watch_;
};

}  // namespace onebox
