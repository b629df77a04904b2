// Cluster membership by gossip (Scuttlebutt-style heartbeats). Every round
// (300 ms) an agent raises its own heartbeat (an HLC timestamp, so it also
// rises across restarts) and sends its member table to its seeds and a few
// random members; each side keeps, per member, the entry with the highest
// heartbeat. A member whose heartbeat has not risen for 2 s is suspect, for
// 10 s dead (dead members stay listed). Each node picks a cluster-unique index
// (the smallest positive integer no known member holds), keeps it in its store,
// and gives it up only on a conflict with a member of lower node id, which can
// happen only before the two have heard of each other. The members' addresses
// are kept in the store: a restarted node asks them too until one answers, so
// it finds the cluster even when its seeds are down.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "naming/node_identity.h"
#include "onebox/v1/peer.grpc.pb.h"

namespace onebox {

struct MembershipOptions {
  std::chrono::milliseconds round{300};
  std::chrono::milliseconds suspect_after{2000};
  std::chrono::milliseconds dead_after{10000};
  int fanout = 3;  // random members per round, besides the seeds
};

class Membership {
 public:
  Membership(Store& store, NodeIdentity self, std::string address, std::vector<std::string> seeds,
             MembershipOptions options = {});
  ~Membership();
  void Start();
  void Stop();

  // The Gossip RPC: merge what a peer says, answer with our table.
  void OnGossip(const v1::GossipRequest& req, v1::GossipResponse* resp);
  // Every member we know, ourselves included, with its state now.
  std::vector<v1::Node> Nodes();
  // (node id, address) of every other member now alive.
  std::vector<std::pair<std::string, std::string>> AliveOthers();
  // Members we know of in any state, ourselves included (at least as many as
  // were known before a restart).
  size_t KnownCount();
  uint32_t index() const { return index_.load(); }
  // Called after every gossip round with the number of other members alive.
  void set_alive_observer(std::function<void(size_t)> fn) { alive_observer_ = std::move(fn); }
  void set_address(const std::string& address);

 private:
  struct Known {
    v1::Member member;
    std::chrono::steady_clock::time_point heard;  // when its heartbeat last rose
  };
  void Loop();
  void MergeLocked(const v1::Member& m);
  v1::Member SelfLocked();
  void ChooseIndexLocked();
  // Keeps the members' addresses in the store when they changed (for rejoin).
  void SaveKnownLocked();
  v1::NodeState StateOf(const Known& k, std::chrono::steady_clock::time_point now) const;
  v1::Peer::Stub* StubFor(const std::string& address);

  Store& store_;
  NodeIdentity self_;
  std::string address_;
  std::vector<std::string> seeds_;
  std::function<void(size_t)> alive_observer_;
  size_t known_before_ = 0;  // other members known before a restart (persisted)
  std::vector<std::string> rejoin_;  // members known before a restart (loop thread only)
  std::string saved_known_;          // under mu_
  MembershipOptions options_;
  std::atomic<uint32_t> index_{0};
  int rounds_ = 0;

  std::mutex mu_;
  std::map<std::string, Known> members_;  // by node id (hex), not ourselves
  std::map<std::string, std::unique_ptr<v1::Peer::Stub>> stubs_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace onebox
