#include "nodeagent/peer/membership.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "consistency/meta_values.h"
#include "nodeagent/peer/node_load.h"

namespace onebox {

namespace {
constexpr std::string_view kIndexMetaKey = "node/index";
// The addresses of the members last known, so that a restarted node finds the
// cluster even when its seeds are gone: asked only until some member answers.
constexpr std::string_view kKnownMetaKey = "node/known-addresses";
constexpr auto kGossipDeadline = std::chrono::milliseconds(500);
}  // namespace

Membership::Membership(Store& store, PeerNetwork& network, NodeIdentity self, std::string address,
                       std::vector<std::string> seeds, MembershipOptions options, Clock& clock)
    : store_(store),
      network_(network),
      clock_(clock),
      self_(std::move(self)),
      address_(std::move(address)),
      seeds_(std::move(seeds)),
      options_(options),
      started_(clock.Now()),
      incarnation_(store.clock().Now()) {
  if (Result<std::string> idx = store_.GetMeta(kIndexMetaKey); idx.ok()) {
    Result<uint64_t> parsed = ParseDecimal(*idx, "node index");
    if (parsed.ok() && *parsed <= UINT32_MAX) index_ = static_cast<uint32_t>(*parsed);
    else spdlog::error("{}; choosing the node index again", parsed.ok() ? "stored node index too large" : parsed.status().message());
  }
  if (Result<std::string> known = store_.GetMeta(kKnownMetaKey); known.ok()) {
    for (std::string& a : SplitList(*known)) {
      ++known_before_;
      if (std::find(seeds_.begin(), seeds_.end(), a) == seeds_.end()) rejoin_.push_back(std::move(a));
    }
  }
}

Membership::~Membership() { Stop(); }

void Membership::Start() {
  rounds_thread_.Start("onebox-gossip", options_.round, [this] { GossipRound(); });
}

void Membership::Stop() { rounds_thread_.Stop(); }

void Membership::set_address(const std::string& address) {
  std::lock_guard lock(mu_);
  address_ = address;
}

v1::Member Membership::SelfLocked() {
  // A silence seen before the next heartbeat goes out: a lock home asks
  // (through Nodes) before it answers anything. Once per silence: a node
  // nobody has answered since (cut off, its rounds slow with timeouts)
  // does not go on as one new incarnation after another.
  const Clock::time_point now = clock_.Now(), boot_now = clock_.NowCountingSuspend();
  if (published_ && heard_since_new_incarnation_) {
    const auto silent = std::max(now - *published_, boot_now - published_boot_);
    if (silent >= options_.dead_after / 2) {
      incarnation_ = store_.clock().Now();
      published_ = now;
      published_boot_ = boot_now;
      heard_since_new_incarnation_ = false;
      spdlog::warn("this node published no heartbeat for {} ms (stopped, suspended, or its gossip stalled): the others "
                   "may have declared it dead, so it goes on as a new incarnation",
                   std::chrono::duration_cast<std::chrono::milliseconds>(silent).count());
    }
  }
  v1::Member m;
  m.set_node_id(NodeIdHex(self_.node_id));
  m.set_name(self_.name);
  m.set_address(address_);
  m.set_index(index_.load());
  m.set_heartbeat(store_.clock().Now());
  m.set_incarnation(incarnation_.load());
  *m.mutable_load() = ReadLoad();
  if (load_extra_) load_extra_(m.mutable_load());
  return m;
}

v1::Member Membership::PublishedSelfLocked() {
  v1::Member m = SelfLocked();
  published_ = clock_.Now();
  published_boot_ = clock_.NowCountingSuspend();
  return m;
}

void Membership::MergeLocked(const v1::Member& m) {
  if (m.node_id() == NodeIdHex(self_.node_id) || m.node_id().size() != 16) return;
  auto it = members_.find(m.node_id());
  if (it == members_.end()) {
    members_[m.node_id()] = Known{m, clock_.Now()};
    spdlog::info("member {} ({}) at {} joined", m.name(), m.node_id(), m.address());
    return;
  }
  if (m.heartbeat() > it->second.member.heartbeat()) {
    v1::NodeState was = StateOf(it->second, clock_.Now());
    if (was == v1::NODE_STATE_DEAD) spdlog::info("member {} ({}) is back at {}", m.name(), m.node_id(), m.address());
    // Counted alive from now on: our calls to it must not wait out a reconnect backoff.
    if (was != v1::NODE_STATE_ALIVE) network_.To(m.address()).ConnectNow();
    it->second = Known{m, clock_.Now()};
  }
}

v1::NodeState Membership::StateOf(const Known& k, Clock::time_point now) const {
  auto silent = now - k.heard;
  if (silent < options_.suspect_after) return v1::NODE_STATE_ALIVE;
  if (silent < options_.dead_after) return v1::NODE_STATE_SUSPECT;
  return v1::NODE_STATE_DEAD;
}

void Membership::OnGossip(const v1::GossipRequest& req, v1::GossipResponse* resp) {
  std::lock_guard lock(mu_);
  heard_since_new_incarnation_ = true;
  MergeLocked(req.from());
  for (const v1::Member& m : req.members()) MergeLocked(m);
  SaveKnownLocked();
  *resp->add_members() = PublishedSelfLocked();
  for (auto& [id, k] : members_) *resp->add_members() = k.member;
}

std::vector<v1::Node> Membership::Nodes() {
  std::lock_guard lock(mu_);
  auto now = clock_.Now();
  std::vector<v1::Node> nodes;
  v1::Member me = SelfLocked();
  auto to_node = [](const v1::Member& m, v1::NodeState state, bool self) {
    v1::Node n;
    n.set_name(m.name());
    n.set_node_id(m.node_id());
    n.set_address(m.address());
    n.set_state(state);
    *n.mutable_load() = m.load();
    n.set_self(self);
    n.set_index(m.index());
    n.set_incarnation(m.incarnation());
    return n;
  };
  nodes.push_back(to_node(me, v1::NODE_STATE_ALIVE, true));
  for (auto& [id, k] : members_) nodes.push_back(to_node(k.member, StateOf(k, now), false));
  std::sort(nodes.begin(), nodes.end(), [](const v1::Node& a, const v1::Node& b) { return a.name() < b.name(); });
  return nodes;
}

std::vector<PeerAddress> Membership::AliveOthers() {
  std::lock_guard lock(mu_);
  auto now = clock_.Now();
  std::vector<PeerAddress> out;
  for (auto& [id, k] : members_)
    if (StateOf(k, now) == v1::NODE_STATE_ALIVE) out.push_back({id, k.member.address()});
  return out;
}

std::optional<PeerAddress> Membership::AliveOther(const std::string& node_id) {
  for (PeerAddress& p : AliveOthers())
    if (p.node_id == node_id) return std::move(p);
  return std::nullopt;
}

bool Membership::SeesMajority() { return AliveOthers().size() + 1 > KnownCount() / 2; }

bool Membership::HeardByMajorityWithin(std::chrono::milliseconds window) {
  const size_t known = KnownCount();
  std::lock_guard lock(mu_);
  const auto now = clock_.Now();
  size_t heard = 1;  // ourselves
  for (const auto& [id, k] : members_)
    if (auto it = answered_.find(k.member.address()); it != answered_.end() && now - it->second <= window) ++heard;
  return heard > known / 2;
}

bool Membership::Dead(const std::string& node_id) {
  std::lock_guard lock(mu_);
  auto it = members_.find(node_id);
  return it != members_.end() && StateOf(it->second, clock_.Now()) == v1::NODE_STATE_DEAD;
}

bool Membership::Gone(const std::string& node_id) {
  std::lock_guard lock(mu_);
  auto now = clock_.Now();
  auto it = members_.find(node_id);
  if (it == members_.end()) return now - started_ > options_.dead_after;
  return StateOf(it->second, now) == v1::NODE_STATE_DEAD;
}

std::optional<std::chrono::milliseconds> Membership::SilentFor(const std::string& node_id) {
  std::lock_guard lock(mu_);
  auto it = members_.find(node_id);
  if (it == members_.end()) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - it->second.heard);
}

size_t Membership::KnownCount() {
  std::lock_guard lock(mu_);
  // Right after a restart gossip knows no one yet: the members known before
  // count too, and so do seeds not heard from, or QUORUM, ALL and fsync's
  // quorum would shrink to this node alone.
  return std::max(members_.size() + UnheardSeedsLocked(), known_before_) + 1;
}

size_t Membership::UnheardSeeds() {
  std::lock_guard lock(mu_);
  return UnheardSeedsLocked();
}

size_t Membership::UnheardSeedsLocked() const {
  size_t unheard = 0;
  for (const std::string& seed : seeds_) {
    if (seed == address_) continue;
    bool heard = std::any_of(members_.begin(), members_.end(),
                             [&](const auto& kv) { return kv.second.member.address() == seed; });
    if (!heard) ++unheard;
  }
  return unheard;
}

void Membership::SaveKnownLocked() {
  std::vector<std::string> addresses;
  for (auto& [id, k] : members_) addresses.push_back(k.member.address());
  std::string known = JoinList(addresses);
  if (members_.empty() || known == saved_known_) return;
  // Only a hint for the next start (where to look when the seeds are gone):
  // a failed write costs nothing now, and is tried again at the next change.
  if (Status s = store_.PutMeta(kKnownMetaKey, known, /*sync=*/false); !s.ok()) {
    spdlog::warn("membership: cannot keep the members' addresses: {}", s.message());
    return;
  }
  saved_known_ = known;
}

void Membership::ChooseIndexLocked() {
  // Taken: every index a member (dead ones too) holds. We keep ours unless a
  // member of lower node id holds it too; then we pick again.
  std::set<uint32_t> taken;
  bool conflict = false;
  for (auto& [id, k] : members_) {
    taken.insert(k.member.index());
    if (k.member.index() == index_.load() && index_.load() != 0 && id < NodeIdHex(self_.node_id)) conflict = true;
  }
  if (index_.load() != 0 && !conflict) return;
  uint32_t pick = 1;
  while (taken.count(pick)) ++pick;
  if (conflict) spdlog::warn("node index {} is also held by a member of lower id; taking {}", index_.load(), pick);
  index_ = pick;
  // Kept in memory either way: a failed write means the index may be chosen
  // again after a restart, as for a new node.
  if (Status s = store_.PutMeta(kIndexMetaKey, std::to_string(pick), /*sync=*/true); !s.ok())
    spdlog::error("membership: cannot keep node index {}: {}", pick, s.message());
  spdlog::info("node index {}", pick);
}

std::vector<std::string> Membership::PrepareRoundLocked(v1::GossipRequest* req) {
  // Our index once we have heard from the cluster (or have no one to ask).
  if (rounds_ >= 2 || seeds_.empty() || !members_.empty()) ChooseIndexLocked();
  ++rounds_;
  *req->mutable_from() = PublishedSelfLocked();
  std::vector<std::string> targets;
  for (auto& [id, k] : members_) {
    *req->add_members() = k.member;
    if (k.member.address() != address_) targets.push_back(k.member.address());
  }
  std::shuffle(targets.begin(), targets.end(), rng_);
  if (targets.size() > static_cast<size_t>(options_.fanout)) targets.resize(options_.fanout);
  auto add = [&](const std::string& a) {
    if (a != address_ && std::find(targets.begin(), targets.end(), a) == targets.end()) targets.push_back(a);
  };
  for (const std::string& s : seeds_) add(s);
  if (members_.empty())
    for (const std::string& s : rejoin_) add(s);
  return targets;
}

void Membership::GossipRound() {
  v1::GossipRequest req;
  std::vector<std::string> targets;
  {
    std::lock_guard lock(mu_);
    targets = PrepareRoundLocked(&req);
  }
  for (const std::string& target : targets) {
    v1::GossipResponse resp;
    // Down or unreachable: its heartbeat will tell.
    bool answered = network_.To(target).Gossip(req, &resp, {.timeout = kGossipDeadline}).ok();
    if (progress_observer_) progress_observer_();
    if (!answered) continue;
    std::lock_guard lock(mu_);
    answered_[target] = clock_.Now();
    heard_since_new_incarnation_ = true;
    for (const v1::Member& m : resp.members()) MergeLocked(m);
    SaveKnownLocked();
  }
  if (progress_observer_) progress_observer_();
  if (alive_observer_) alive_observer_(AliveOthers().size());
}

}  // namespace onebox
