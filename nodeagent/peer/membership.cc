#include "nodeagent/peer/membership.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "consistency/meta_values.h"
#include "nodeagent/peer/beat_seal.h"
#include "nodeagent/peer/node_load.h"

namespace onebox {

namespace {
constexpr std::string_view kIndexMetaKey = "node/index";
// The addresses of the members last known, so that a restarted node finds the
// cluster even when its seeds are gone: asked only until some member answers.
constexpr std::string_view kKnownMetaKey = "node/known-addresses";
constexpr auto kGossipDeadline = std::chrono::milliseconds(500);
// A member that showed it heard us within this long gets beats; else a call.
// Its echo is at most about two rounds old while beats arrive; a member whose
// beats are lost hears us again at the third round without (1.5 s), within
// the 2 s after which it would suspect us.
constexpr auto kBeatsEchoedWithin = std::chrono::milliseconds(1250);
// Rounds between two Gossip calls to a member that gets beats, and for which
// a member that stopped echoing gets calls instead.
constexpr int kRoundsBetweenCalls = 20;
// A beat carries this node, the receiver's echo and as many other members
// as fit in this many bytes: one packet on any network.
constexpr size_t kBeatBytes = 1200;
// A member's store digest counts this long after its beat brought it.
constexpr auto kStoreDigestFresh = std::chrono::seconds(2);
// Our heartbeats kept to look echoes up in (about 30 s of rounds).
constexpr size_t kPublishedKept = 64;
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
      incarnation_(store.clock().Now()),
      beat_key_(NewBeatKey()) {
  if (beat_key_.empty()) spdlog::warn("membership: no random beat key (the system's random source failed): gossip by calls only");
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
  published_beats_.emplace_back(m.heartbeat(), *published_);
  if (published_beats_.size() > kPublishedKept) published_beats_.pop_front();
  return m;
}

v1::Member Membership::WithKey(const v1::Member& m, const Known& k) const {
  v1::Member out = m;
  out.set_beat_key(k.beat_key);
  out.set_incarnation(std::max(m.incarnation(), k.key_incarnation));
  return out;
}

void Membership::MergeLocked(const v1::Member& m) {
  if (m.node_id() == NodeIdHex(self_.node_id) || m.node_id().size() != 16) return;
  auto [it, is_new] = members_.try_emplace(m.node_id());
  Known& k = it->second;
  if (is_new) {
    k.member = m;
    k.member.clear_beat_key();
    k.heard = clock_.Now();
    spdlog::info("member {} ({}) at {} joined", m.name(), m.node_id(), m.address());
  } else if (m.heartbeat() > k.member.heartbeat()) {
    v1::NodeState was = StateOf(k, clock_.Now());
    if (was == v1::NODE_STATE_DEAD) spdlog::info("member {} ({}) is back at {}", m.name(), m.node_id(), m.address());
    // Counted alive from now on: our calls to it must not wait out a reconnect backoff.
    if (was != v1::NODE_STATE_ALIVE) network_.To(m.address()).ConnectNow();
    k.member = m;
    k.member.clear_beat_key();
    k.heard = clock_.Now();
  }
  // A key comes with the entry of the agent's life that made it: an older
  // life's, relayed late, does not replace a newer one's.
  if (!m.beat_key().empty() && m.incarnation() >= k.key_incarnation) {
    if (m.beat_key() != k.beat_key) k.key_failed = false;
    k.beat_key = m.beat_key();
    k.key_incarnation = m.incarnation();
  }
}

void Membership::NoteEchoLocked(const std::string& address, uint64_t hb) {
  for (auto it = published_beats_.rbegin(); it != published_beats_.rend(); ++it) {
    if (it->first != hb) continue;
    Clock::time_point& at = answered_[address];
    at = std::max(at, it->second);
    return;
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
  const std::string self_id = NodeIdHex(self_.node_id);
  for (const v1::Member& m : req.members()) {
    if (m.node_id() == self_id) NoteEchoLocked(req.from().address(), m.heartbeat());
    MergeLocked(m);
  }
  SaveKnownLocked();
  v1::Member* me = resp->add_members();
  *me = PublishedSelfLocked();
  me->set_beat_key(beat_key_);
  for (auto& [id, k] : members_) *resp->add_members() = WithKey(k.member, k);
}

void Membership::OnBeat(std::string_view datagram) {
  std::optional<std::string_view> sender = BeatSender(datagram);
  if (!sender) return;
  std::lock_guard lock(mu_);
  // From a node not heard of: it calls us (or is told of) first.
  auto it = members_.find(std::string(*sender));
  if (it == members_.end()) return;
  std::optional<std::string_view> payload = OpenBeat(datagram, it->second.beat_key);
  v1::Beat beat;
  if (!payload || !beat.ParseFromArray(payload->data(), static_cast<int>(payload->size())) ||
      beat.from().node_id() != *sender) {
    // Not sealed with the key we hold: its agent restarted with a new one
    // (or someone else wrote it). A call asks.
    if (!it->second.key_failed)
      spdlog::debug("membership: a heartbeat from {} does not open with the key we hold; asking by a call", *sender);
    it->second.key_failed = true;
    ++beats_unopened_;
    return;
  }
  ++beats_taken_;
  heard_since_new_incarnation_ = true;
  const std::string address = it->second.member.address();
  beat.mutable_from()->clear_beat_key();
  MergeLocked(beat.from());
  for (v1::Member& m : *beat.mutable_members()) {
    m.clear_beat_key();
    MergeLocked(m);
  }
  NoteEchoLocked(address, beat.echo());
  it->second.store_digest = beat.store_digest();  // (map iterators outlive the merges' inserts)
  it->second.store_digest_at = clock_.Now();
  // It has not heard of a member we know: a call at our next round carries
  // our whole table to it (and brings its own back).
  if (members_.size() > beat.members_known()) it->second.needs_table = true;
  SaveKnownLocked();
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

bool Membership::ByBeatLocked(Known& k, Clock::time_point now) {
  if (beat_key_.empty() || k.beat_key.empty() || k.key_failed || StateOf(k, now) != v1::NODE_STATE_ALIVE) return false;
  if (k.needs_table || rounds_ < k.calls_until_round || rounds_ >= k.call_due_round) return false;
  auto echoed = answered_.find(k.member.address());
  if (echoed == answered_.end()) return false;
  if (now - echoed->second > kBeatsEchoedWithin) {
    spdlog::info("membership: {} ({}) has not echoed our heartbeats for {} ms (UDP cut or filtered?): gossiping with "
                 "it by calls for {} rounds",
                 k.member.name(), k.member.node_id(),
                 std::chrono::duration_cast<std::chrono::milliseconds>(now - echoed->second).count(),
                 kRoundsBetweenCalls);
    k.calls_until_round = rounds_ + kRoundsBetweenCalls;
    return false;
  }
  return true;
}

Membership::Counts Membership::counts() const {
  return {.calls = calls_.load(),
          .beats_sent = beats_sent_.load(),
          .beats_taken = beats_taken_.load(),
          .beats_unopened = beats_unopened_.load()};
}

std::string Membership::StoreDigestOf(const std::string& node_id) {
  std::lock_guard lock(mu_);
  auto it = members_.find(node_id);
  if (it == members_.end() || clock_.Now() - it->second.store_digest_at > kStoreDigestFresh) return {};
  return it->second.store_digest;
}

std::string Membership::SealedBeatLocked(const v1::Member& self, const Known& to, const std::string& store_digest) {
  v1::Beat beat;
  *beat.mutable_from() = self;
  beat.set_store_digest(store_digest);
  beat.set_members_known(static_cast<uint32_t>(members_.size()));
  beat.mutable_from()->clear_beat_key();
  beat.set_echo(to.member.heartbeat());
  std::vector<const Known*> others;
  for (const auto& [id, k] : members_)
    if (&k != &to) others.push_back(&k);
  std::shuffle(others.begin(), others.end(), rng_);
  for (const Known* k : others) {
    if (beat.ByteSizeLong() + k->member.ByteSizeLong() + 8 > kBeatBytes) break;
    *beat.add_members() = k->member;  // kept without its key
  }
  return SealBeat(NodeIdHex(self_.node_id), beat_key_, beat.SerializeAsString());
}

std::vector<Membership::Target> Membership::PrepareRoundLocked(v1::GossipRequest* req) {
  // Our index once we have heard from the cluster (or have no one to ask).
  if (rounds_ >= 2 || seeds_.empty() || !members_.empty()) ChooseIndexLocked();
  ++rounds_;
  *req->mutable_from() = PublishedSelfLocked();
  std::vector<std::string> addresses;
  for (auto& [id, k] : members_) {
    *req->add_members() = WithKey(k.member, k);
    if (k.member.address() != address_) addresses.push_back(k.member.address());
  }
  std::shuffle(addresses.begin(), addresses.end(), rng_);
  if (addresses.size() > static_cast<size_t>(options_.fanout)) addresses.resize(options_.fanout);
  auto add = [&](const std::string& a) {
    if (a != address_ && std::find(addresses.begin(), addresses.end(), a) == addresses.end()) addresses.push_back(a);
  };
  for (const std::string& s : seeds_) add(s);
  for (const auto& [id, k] : members_)
    if (k.needs_table) add(k.member.address());
  if (members_.empty())
    for (const std::string& s : rejoin_) add(s);

  const Clock::time_point now = clock_.Now();
  const std::string store_digest = store_digest_ ? store_digest_() : std::string();
  std::vector<Target> targets;
  for (const std::string& a : addresses) {
    Target t{a, std::nullopt};
    auto member = std::find_if(members_.begin(), members_.end(),
                               [&](const auto& kv) { return kv.second.member.address() == a; });
    if (member != members_.end() && ByBeatLocked(member->second, now)) t.beat = SealedBeatLocked(req->from(), member->second, store_digest);
    targets.push_back(std::move(t));
  }
  req->mutable_from()->set_beat_key(beat_key_);
  return targets;
}

void Membership::GossipRound() {
  v1::GossipRequest req;
  std::vector<Target> targets;
  {
    std::lock_guard lock(mu_);
    targets = PrepareRoundLocked(&req);
  }
  for (const Target& target : targets) {
    PeerLink& link = network_.To(target.address);
    if (target.beat && link.SendBeat(*target.beat)) {
      ++beats_sent_;
      continue;
    }
    ++calls_;
    v1::GossipResponse resp;
    // Down or unreachable: its heartbeat will tell.
    bool answered = link.Gossip(req, &resp, {.timeout = kGossipDeadline}).ok();
    if (progress_observer_) progress_observer_();
    if (!answered) continue;
    std::lock_guard lock(mu_);
    answered_[target.address] = clock_.Now();
    heard_since_new_incarnation_ = true;
    for (const v1::Member& m : resp.members()) MergeLocked(m);
    for (auto& [id, k] : members_)
      if (k.member.address() == target.address) {
        k.call_due_round = rounds_ + kRoundsBetweenCalls;
        k.needs_table = false;
      }
    SaveKnownLocked();
  }
  if (progress_observer_) progress_observer_();
  if (alive_observer_) alive_observer_(AliveOthers().size());
}

}  // namespace onebox
