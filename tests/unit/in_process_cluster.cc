#include "tests/unit/in_process_cluster.h"

#include <fmt/format.h>

namespace onebox::testing {

namespace {

// A stream to a node that cannot be reached: every call fails.
class FailedStream final : public ReplicateStream {
 public:
  explicit FailedStream(Status why) : why_(std::move(why)) {}
  bool Write(const v1::ReplicateRequest&) override { return false; }
  bool Read(v1::ReplicateResponse*) override { return false; }
  bool WritesDone() override { return false; }
  Status Finish() override { return why_; }

 private:
  Status why_;
};

// A link to a node: its answers, or, while it is silenced, what a peer that
// never answers gives (the caller's deadline passed).
class InProcessLink final : public PeerLink {
 public:
  InProcessLink(InProcessCluster& cluster, std::string address) : cluster_(cluster), address_(std::move(address)) {}

#define ONEBOX_IN_PROCESS_METHOD(method, Req, Resp, runs)                                   \
  Status method(const v1::Req& req, v1::Resp* resp, const CallOptions& options) override { \
    cluster_.Count(address_, #method);                                                      \
    if (Status s = Reachable(options); !s.ok()) return s;                                   \
    return cluster_.ByAddress(address_)->answers->method(req, resp, options);               \
  }
  ONEBOX_PEER_UNARY_CALLS(ONEBOX_IN_PROCESS_METHOD)
#undef ONEBOX_IN_PROCESS_METHOD

  std::unique_ptr<ReplicateStream> OpenReplicateStream(Cancellation* cancellation) override {
    if (Status s = Reachable({.cancellation = cancellation}); !s.ok()) return std::make_unique<FailedStream>(s);
    return cluster_.ByAddress(address_)->answers->OpenReplicateStream(cancellation);
  }
  // Heartbeats to a silenced node are lost on the way, as a cut link's are.
  bool SendBeat(std::string_view datagram) override {
    InProcessNode* to = cluster_.ByAddress(address_);
    if (to == nullptr) return false;
    cluster_.Count(address_, "Beat");
    return cluster_.silenced(address_) || cluster_.beats_dropped(address_) || to->answers->SendBeat(datagram);
  }

 private:
  Status Reachable(const CallOptions& options) {
    if (cluster_.ByAddress(address_) == nullptr) return Status::Unavailable(fmt::format("no node at {}", address_));
    if (options.cancellation != nullptr && options.cancellation->cancelled()) return Status::Unavailable("cancelled");
    if (cluster_.silenced(address_))
      return Status::Unavailable(fmt::format("{}: deadline of {} ms exceeded", address_, options.timeout.count()));
    return Status::Ok();
  }
  InProcessCluster& cluster_;
  std::string address_;
};

}  // namespace

PeerLink& InProcessNetwork::To(const std::string& address) {
  std::lock_guard lock(mu_);
  std::unique_ptr<PeerLink>& link = links_[address];
  if (!link) link = std::make_unique<InProcessLink>(cluster_, address);
  return *link;
}

InProcessCluster::InProcessCluster(size_t count, std::string seed_name) : seed_name_(std::move(seed_name)) {
  for (size_t i = 0; i < count; ++i) {
    auto n = std::make_unique<InProcessNode>();
    InProcessNode* node = n.get();
    node->name = std::string(1, static_cast<char>('a' + i));
    node->address = "inproc:" + node->name;
    Result<std::unique_ptr<Store>> store = Store::Open({.path = dir_ / node->name, .node_id = 0x1000 + i});
    if (!store.ok()) ADD_FAILURE() << store.status().ToString();
    node->store = std::move(store).value();
    std::vector<std::string> seeds;
    if (!seed_name_.empty()) seeds.push_back(seed_name_);  // the first's too: it reaches itself there
    else if (i > 0) seeds.push_back(nodes_[0]->address);
    NodeIdentity identity{node->name, node->store->node_id()};
    node->members = std::make_unique<Membership>(*node->store, network_, identity, node->address, seeds,
                                                 MembershipOptions{}, clock_);
    node->content = std::make_unique<ContentTransfer>(*node->store, *node->members, network_, node->id(), 2);
    auto on_applied = [node](Cf space, const std::string& key) {
      std::lock_guard lock(node->applied_mu);
      node->applied.emplace_back(space, key);
    };
    node->replicator = std::make_unique<Replicator>(*node->store, *node->members, *node->content, network_,
                                                    node->store->node_id(), on_applied);
    node->anti_entropy = std::make_unique<AntiEntropy>(*node->store, *node->members, network_, on_applied);
    node->members->set_store_digest([s = node->store.get()] { return s->BucketDigestsRootIfCurrent(); });
    node->members->EnableBeats();
    // No view here: a recall hands over the store's records only.
    DirLeases::Handover handover{.record_view = {}, .record_unrecorded = {}, .send_entries = [r = node->replicator.get()](const PeerAddress& peer,
                                                                            const std::string& dir) {
      return r->SendEntriesOf(peer, dir);
    }};
    node->leases = std::make_unique<DirLeases>(*node->store, *node->members, network_, node->id(), handover, clock_);
    node->processes = std::make_unique<ClusterProcesses>(*node->members, network_, node->name);
    node->answers = std::make_unique<LocalPeer>(*node->members, *node->replicator, *node->content,
                                                *node->anti_entropy, *node->leases, *node->processes);
    nodes_.push_back(std::move(n));
  }
}

InProcessCluster::~InProcessCluster() {
  // The parts before the stores they use.
  for (auto& n : nodes_) {
    n->answers.reset();
    n->leases.reset();
    n->anti_entropy.reset();
    n->replicator.reset();
    n->content.reset();
    n->members.reset();
    n->store.reset();
  }
}

InProcessNode* InProcessCluster::ByAddress(const std::string& address) {
  if (!seed_name_.empty() && address == seed_name_ && !nodes_.empty()) return nodes_[0].get();
  for (auto& n : nodes_)
    if (n->address == address) return n.get();
  return nullptr;
}

::testing::AssertionResult InProcessCluster::Join() {
  for (int round = 0; round < 6; ++round) {
    // Time passes between rounds as in the agent's loop: a member that
    // stopped echoing (beats lost, or a node that hears nothing) is called.
    if (round > 0) clock_.Advance(MembershipOptions{}.round);
    for (auto& n : nodes_) n->members->GossipRound();
    bool all = true;
    for (auto& n : nodes_) all = all && n->members->AliveOthers().size() == nodes_.size() - 1;
    if (all) return ::testing::AssertionSuccess();
  }
  std::string seen;
  for (auto& n : nodes_) {
    seen += fmt::format(" {} sees {} alive", n->name, n->members->AliveOthers().size());
    for (const v1::Node& m : n->members->Nodes())
      if (m.state() != v1::NODE_STATE_ALIVE) seen += fmt::format(" ({} {})", m.name(), v1::NodeState_Name(m.state()));
    seen += ";";
  }
  return ::testing::AssertionFailure() << "the nodes did not all meet in 6 rounds:" << seen;
}

void InProcessCluster::GossipRounds(int n) {
  for (int round = 0; round < n; ++round) {
    clock_.Advance(MembershipOptions{}.round);
    for (auto& node : nodes_) node->members->GossipRound();
  }
}

void InProcessCluster::Silence(size_t i, bool silent) {
  std::lock_guard lock(mu_);
  if (silent) silenced_.insert(nodes_[i]->address);
  else silenced_.erase(nodes_[i]->address);
}

bool InProcessCluster::silenced(const std::string& address) {
  std::lock_guard lock(mu_);
  return silenced_.count(address) > 0;
}

void InProcessCluster::DropBeats(size_t i, bool drop) {
  std::lock_guard lock(mu_);
  if (drop) beats_dropped_.insert(nodes_[i]->address);
  else beats_dropped_.erase(nodes_[i]->address);
}

bool InProcessCluster::beats_dropped(const std::string& address) {
  std::lock_guard lock(mu_);
  return beats_dropped_.count(address) > 0;
}

void InProcessCluster::Count(const std::string& address, const std::string& method) {
  std::lock_guard lock(mu_);
  ++calls_[{address, method}];
}

int InProcessCluster::calls_to(size_t i, const std::string& method) { return calls_to_address(nodes_[i]->address, method); }

int InProcessCluster::calls_to_address(const std::string& address, const std::string& method) {
  std::lock_guard lock(mu_);
  return calls_[{address, method}];
}

}  // namespace onebox::testing
