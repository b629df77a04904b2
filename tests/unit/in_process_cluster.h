// Several nodes' cluster parts (membership, content transfer, replicator,
// anti-entropy, directory leases) in one process, each on a store of its own, linked
// to each other's answers (sync/local_peer.h) instead of gRPC, on one clock
// the test moves by hand: the distributed core stepped deterministically,
// with no threads of the parts' own and no sleeping. A node can be silenced:
// every call to it then fails as one that never answers does.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "consistency/store.h"
#include "naming/node_identity.h"
#include "nodeagent/process/cluster_processes.h"
#include "nodeagent/peer/clock.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/sync/anti_entropy.h"
#include "nodeagent/sync/dir_leases.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/sync/local_peer.h"
#include "nodeagent/sync/replicator.h"
#include "tests/test_util.h"

namespace onebox::testing {

// A clock that moves only when told to, or when a part sleeps on it. With
// several threads sleeping on it at once, time would pass as fast as all of
// them together: freeze() makes Sleep only yield instead.
class FakeClock final : public Clock {
 public:
  time_point Now() override { return time_point(std::chrono::nanoseconds(ns_.load())); }
  void Sleep(std::chrono::milliseconds d) override {
    if (frozen_) std::this_thread::yield();
    else Advance(d);
  }
  void Advance(std::chrono::nanoseconds d) { ns_ += d.count(); }
  void freeze(bool frozen = true) { frozen_ = frozen; }
  std::chrono::nanoseconds Elapsed() const { return std::chrono::nanoseconds(ns_.load() - kStart); }

 private:
  static constexpr int64_t kStart = 1'000'000'000'000;  // any point: steady clocks have no epoch
  std::atomic<int64_t> ns_{kStart};
  std::atomic<bool> frozen_{false};
};

class InProcessCluster;

// One node: its store and parts, wired as the agent wires them.
struct InProcessNode {
  std::string name;
  std::string address;  // "inproc:NAME"
  std::unique_ptr<Store> store;
  std::unique_ptr<Membership> members;
  std::unique_ptr<ContentTransfer> content;
  std::unique_ptr<Replicator> replicator;
  std::unique_ptr<AntiEntropy> anti_entropy;
  std::unique_ptr<DirLeases> leases;
  std::unique_ptr<ClusterProcesses> processes;
  std::unique_ptr<LocalPeer> answers;
  std::vector<std::pair<Cf, std::string>> applied;  // what replication and anti-entropy applied here
  std::mutex applied_mu;

  std::string id() const { return NodeIdHex(store->node_id()); }
  PeerAddress peer() const { return {id(), address}; }
};

// The links between the nodes: a call to a node goes straight to its
// answers, unless the node is silenced.
class InProcessNetwork final : public PeerNetwork {
 public:
  explicit InProcessNetwork(InProcessCluster& cluster) : cluster_(cluster) {}
  PeerLink& To(const std::string& address) override;

 private:
  InProcessCluster& cluster_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<PeerLink>> links_;
};

class InProcessCluster {
 public:
  // Nodes "a", "b", ... each seeded with the first: by its address, or by
  // seed_name when given (a name that reaches the first, as a host name or
  // a Service does; the first is given it too, and reaches itself there).
  explicit InProcessCluster(size_t nodes, std::string seed_name = "");
  ~InProcessCluster();

  InProcessNode& node(size_t i) { return *nodes_[i]; }
  InProcessNode* ByAddress(const std::string& address);
  size_t size() const { return nodes_.size(); }
  FakeClock& clock() { return clock_; }
  // Gossip rounds on every node, a round's time apart, until each knows
  // every other as alive (at most 6: 2.5 s).
  ::testing::AssertionResult Join();
  // n gossip rounds on every node, each after a round's time.
  void GossipRounds(int n);
  // A silenced node answers nothing (its calls out still work).
  void Silence(size_t i, bool silent = true);
  bool silenced(const std::string& address);
  // Heartbeat datagrams to node i are lost (UDP filtered); calls still work.
  void DropBeats(size_t i, bool drop = true);
  bool beats_dropped(const std::string& address);
  // The calls of a method ("Gossip", "BucketDigests", ...) made to node i
  // so far, and the heartbeats it was sent ("Beat").
  int calls_to(size_t i, const std::string& method);
  int calls_to_address(const std::string& address, const std::string& method);
  int gossip_calls_to(size_t i) { return calls_to(i, "Gossip"); }
  int beats_to(size_t i) { return calls_to(i, "Beat"); }
  void Count(const std::string& address, const std::string& method);

 private:
  TempDir dir_;
  FakeClock clock_;
  InProcessNetwork network_{*this};
  std::vector<std::unique_ptr<InProcessNode>> nodes_;
  std::string seed_name_;
  std::mutex mu_;
  std::set<std::string> silenced_;
  std::set<std::string> beats_dropped_;
  std::map<std::pair<std::string, std::string>, int> calls_;  // by address and method
};

}  // namespace onebox::testing
