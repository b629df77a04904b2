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
// Rounds between two Gossip calls to a member that gets beats; and a member
// whose echoes lapse twice within as many rounds gets calls for as many.
constexpr int kRoundsBetweenCalls = 20;
// A beat's content (this node, the receiver's echo, as many other members as
// fit) is kept under this many bytes: sealed, it fits in one packet of
// IPv6's smallest MTU.
constexpr size_t kBeatBytes = 1100;
// A member's store digest counts this long after its beat brought it.
constexpr auto kStoreDigestFresh = std::chrono::seconds(2);
// Our heartbeats kept to look echoes up in: those of the last seconds,
// however many calls we answered (and at most this many).
constexpr auto kPublishedKeptFor = std::chrono::seconds(8);
constexpr size_t kPublishedKeptMax = 4096;

// m without its beat key: as a member is kept, and as beats carry members.
void StripKey(v1::Member* m) {
  m->clear_beat_key();
  m->clear_beat_key_since();
}
}  // namespace

Membership::Membership(Store& store, PeerNetwork& network, NodeIdentity self, std::string address,
                       std::vector<std::string> seeds, MembershipOptions options, Clock& clock)
    : store_(store),
      network_(network),
      clock_(clock),
      self_(std::move(self)),
      self_hex_(NodeIdHex(self_.node_id)),
      address_(std::move(address)),
      seeds_(std::move(seeds)),
      options_(options),
      started_(clock.Now()),
      incarnation_(store.clock().Now()),
      started_hlc_(incarnation_.load()),
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
  {
    std::lock_guard lock(mu_);
    gossip_started_ = clock_.Now();
  }
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
  m.set_node_id(self_hex_);
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
  while (!published_beats_.empty() && (published_beats_.size() > kPublishedKeptMax ||
                                       *published_ - published_beats_.front().second > kPublishedKeptFor))
    published_beats_.pop_front();
  return m;
}

v1::Member Membership::WithKey(const v1::Member& m, const Known& k) const {
  v1::Member out = m;
  out.set_beat_key(k.beat_key);
  out.set_beat_key_since(k.key_since);
  return out;
}

v1::Member Membership::SelfWithKeyLocked(v1::Member self) const {
  if (!beats_enabled_) return self;
  self.set_beat_key(beat_key_);
  self.set_beat_key_since(started_hlc_);
  return self;
}

void Membership::EnableBeats() {
  std::lock_guard lock(mu_);
  beats_enabled_ = !beat_key_.empty();  // without a key (no random source): calls only
}

void Membership::MergeLocked(const v1::Member& m) {
  if (m.node_id() == self_hex_ || m.node_id().size() != 16) return;
  auto [it, is_new] = members_.try_emplace(m.node_id());
  Known& k = it->second;
  if (is_new) {
    spdlog::info("member {} ({}) at {} joined", m.name(), m.node_id(), m.address());
  } else if (m.heartbeat() > k.member.heartbeat()) {
    v1::NodeState was = StateOf(k, clock_.Now());
    if (was == v1::NODE_STATE_DEAD) spdlog::info("member {} ({}) is back at {}", m.name(), m.node_id(), m.address());
    // Counted alive from now on: our calls to it must not wait out a reconnect backoff.
    if (was != v1::NODE_STATE_ALIVE) network_.To(m.address()).ConnectNow();
  }
  if (is_new || m.heartbeat() > k.member.heartbeat()) {
    k.member = m;
    StripKey(&k.member);  // kept beside it (WithKey puts it back for calls)
    k.heard = clock_.Now();
  }
  // A key comes with the start of the agent's life that made it: an older
  // life's, relayed late, never replaces a newer one's.
  if (!m.beat_key().empty() &&
      (m.beat_key_since() > k.key_since || (m.beat_key_since() == k.key_since && k.beat_key.empty()))) {
    k.beat_key = m.beat_key();
    k.key_since = m.beat_key_since();
    k.key_failed = false;
  }
}

void Membership::NoteEchoLocked(Known& k, uint64_t hb) {
  for (auto it = published_beats_.rbegin(); it != published_beats_.rend(); ++it) {
    if (it->first != hb) continue;
    if (!k.heard_us_at || *k.heard_us_at < it->second) k.heard_us_at = it->second;
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
  NoteDirectLocked(req.from());
  for (const v1::Member& m : req.members()) MergeLocked(m);
  SaveKnownLocked();
  *resp->add_members() = SelfWithKeyLocked(PublishedSelfLocked());  // first: the answer's own
  for (auto& [id, k] : members_) *resp->add_members() = WithKey(k.member, k);
}

void Membership::NoteDirectLocked(const v1::Member& from) {
  if (auto it = members_.find(from.node_id()); it != members_.end())
    it->second.direct_heartbeat = std::max(it->second.direct_heartbeat, from.heartbeat());
}

void Membership::OnBeat(std::string_view datagram) {
  std::optional<std::string_view> sender = BeatSender(datagram);
  if (!sender) return;
  const std::string sender_id(*sender);
  std::string key;
  {
    std::lock_guard lock(mu_);
    // From a node not heard of: it calls us (or is told of) first.
    auto it = members_.find(sender_id);
    if (it == members_.end()) return;
    key = it->second.beat_key;
  }
  // Opened outside the lock: a flood of datagrams costs its HMACs, not our rounds.
  std::optional<std::string_view> payload = OpenBeat(datagram, key);
  v1::Beat beat;
  const bool opened = payload && beat.ParseFromArray(payload->data(), static_cast<int>(payload->size())) &&
                      beat.from().node_id() == sender_id;
  std::lock_guard lock(mu_);
  auto it = members_.find(sender_id);
  if (it == members_.end()) return;
  Known& k = it->second;
  if (k.beat_key != key) return;  // a new key came meanwhile: the next beat opens with it
  if (!opened) {
    // Not sealed with the key we hold: its agent restarted with a new one
    // (or someone else wrote it). A call at our next round asks.
    if (!k.key_failed)
      spdlog::debug("membership: a heartbeat from {} does not open with the key we hold; asking by a call", sender_id);
    k.key_failed = true;
    ++beats_unopened_;
    return;
  }
  // Only newer beats of the sender's, and only those meant for us: a replay
  // (a beat sent again, or one sent to another member) changes nothing.
  if (beat.to() != self_hex_ || beat.from().heartbeat() <= k.last_beat) return;
  k.last_beat = beat.from().heartbeat();
  k.key_failed = false;
  ++beats_taken_;
  heard_since_new_incarnation_ = true;
  StripKey(beat.mutable_from());  // (a beat tells no key: one in it is not the sender's to tell)
  MergeLocked(beat.from());
  NoteDirectLocked(beat.from());
  for (v1::Member& m : *beat.mutable_members()) {
    StripKey(&m);
    MergeLocked(m);
  }
  NoteEchoLocked(k, beat.echo());
  k.store_digest = beat.store_digest();  // (map references outlive the merges' inserts)
  k.store_digest_at = clock_.Now();
  // It has not heard of a member we know: a call at our next round carries
  // our whole table to it (and brings its own back).
  if (members_.size() > beat.members_known()) k.needs_table = true;
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
  return AliveOthersLocked();
}

std::vector<PeerAddress> Membership::AliveOthersLocked() {
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
    if (k.heard_us_at && now - *k.heard_us_at <= window) ++heard;
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

size_t Membership::UnheardSinceStart() {
  std::lock_guard lock(mu_);
  return UnheardSinceStartLocked();
}

size_t Membership::UnheardSinceStartLocked() const {
  // (Counted from gossip's start, not this object's: the view's start may take long.)
  if (clock_.Now() - gossip_started_.value_or(started_) > options_.dead_after) return 0;
  // By count, as KnownCount has them, not by address: a member found again
  // at another address (a restart on another port) is heard of all the same.
  const size_t known_before = known_before_ > members_.size() ? known_before_ - members_.size() : 0;
  return std::max(UnheardSeedsLocked(), known_before);
}

std::vector<PeerAddress> Membership::AliveOthersAndUnheard(size_t* unheard) {
  std::lock_guard lock(mu_);
  *unheard = UnheardSinceStartLocked();
  return AliveOthersLocked();
}

bool Membership::SeedHeardLocked(const std::string& seed) const {
  if (auto answered_as = seed_members_.find(seed); answered_as != seed_members_.end()) {
    // A seed that reached this node itself (a Service's address, or one of
    // a list given to every node) is no other member; counted as none only
    // once this node knows others, so that a node alone with it is no
    // cluster of one.
    if (answered_as->second == self_hex_) return !members_.empty();
    return members_.count(answered_as->second) > 0;
  }
  return std::any_of(members_.begin(), members_.end(),
                     [&](const auto& kv) { return kv.second.member.address() == seed; });
}

size_t Membership::UnheardSeedsLocked() const {
  size_t unheard = 0;
  for (const std::string& seed : seeds_)
    if (seed != address_ && !SeedHeardLocked(seed)) ++unheard;
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
    if (k.member.index() == index_.load() && index_.load() != 0 && id < self_hex_) conflict = true;
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
  if (!beats_enabled_ || k.beat_key.empty() || k.key_failed || StateOf(k, now) != v1::NODE_STATE_ALIVE) return false;
  if (k.needs_table || rounds_ < k.calls_until_round || rounds_ >= k.call_due_round) return false;
  if (!k.heard_us_at) return false;
  if (now - *k.heard_us_at > kBeatsEchoedWithin) {
    // Once (a stalled round, a lost packet): this round's call. Again soon
    // after a call: our beats do not reach it.
    if (k.lapsed_round != 0 && rounds_ - k.lapsed_round <= kRoundsBetweenCalls) {
      spdlog::info("membership: {} ({}) does not echo our heartbeats (UDP cut or filtered?): gossiping with it by "
                   "calls for {} rounds",
                   k.member.name(), k.member.node_id(), kRoundsBetweenCalls);
      k.calls_until_round = rounds_ + kRoundsBetweenCalls;
    }
    k.lapsed_round = rounds_;
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
  StripKey(beat.mutable_from());
  beat.set_to(to.member.node_id());
  beat.set_echo(to.direct_heartbeat);
  std::vector<const Known*> others;
  for (const auto& [id, k] : members_)
    if (&k != &to) others.push_back(&k);
  std::shuffle(others.begin(), others.end(), rng_);
  for (const Known* k : others) {
    if (beat.ByteSizeLong() + k->member.ByteSizeLong() + 8 > kBeatBytes) break;
    *beat.add_members() = k->member;  // kept without its key
  }
  return SealBeat(self_hex_, beat_key_, beat.SerializeAsString());
}

std::vector<Membership::Target> Membership::PrepareRoundLocked(v1::GossipRequest* req) {
  // Our index once we have heard from the cluster (or have no one to ask).
  if (rounds_ >= 2 || seeds_.empty() || !members_.empty()) ChooseIndexLocked();
  ++rounds_;
  *req->mutable_from() = PublishedSelfLocked();
  const Clock::time_point now = clock_.Now();
  std::vector<Known*> alive, away;
  for (auto& [id, k] : members_) {
    *req->add_members() = WithKey(k.member, k);
    if (k.member.address() == address_) continue;
    (StateOf(k, now) == v1::NODE_STATE_ALIVE ? alive : away).push_back(&k);
  }
  // Every member alive (beyond options_.everyone_up_to, options_.fanout of
  // them at random, and those to call at once), so that each hears us, and
  // echoes, every round; and options_.fanout members not alive at random,
  // by calls, to find them when they come back.
  std::shuffle(alive.begin(), alive.end(), rng_);
  std::shuffle(away.begin(), away.end(), rng_);
  if (alive.size() > options_.everyone_up_to) {
    auto call_now = [](const Known* k) { return k->needs_table || k->key_failed; };
    std::stable_partition(alive.begin(), alive.end(), call_now);
    const size_t calls = static_cast<size_t>(std::count_if(alive.begin(), alive.end(), call_now));
    alive.resize(std::max(static_cast<size_t>(options_.fanout), calls));
  }
  if (away.size() > static_cast<size_t>(options_.fanout)) away.resize(options_.fanout);
  const std::string store_digest = store_digest_ ? store_digest_() : std::string();
  std::vector<Target> targets;
  std::set<std::string> chosen;
  auto add = [&](const std::string& address, Known* k) {
    if (address == address_ || !chosen.insert(address).second) return;
    Target t{address, std::nullopt};
    if (k != nullptr && ByBeatLocked(*k, now)) t.beat = SealedBeatLocked(req->from(), *k, store_digest);
    targets.push_back(std::move(t));
  };
  for (Known* k : alive) add(k->member.address(), k);
  for (Known* k : away) add(k->member.address(), nullptr);
  for (const std::string& seed : seeds_)
    if (!SeedHeardLocked(seed)) add(seed, nullptr);  // else the member it answered as is in the table
  if (members_.empty())
    for (const std::string& a : rejoin_) add(a, nullptr);
  *req->mutable_from() = SelfWithKeyLocked(req->from());
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
    heard_since_new_incarnation_ = true;
    for (const v1::Member& m : resp.members()) MergeLocked(m);
    if (resp.members_size() > 0) {
      // The answer's first entry is the member that answered (a seed named by
      // a host name answers as the member at some address).
      const v1::Member& answerer = resp.members(0);
      NoteDirectLocked(answerer);
      if (answerer.address() != target.address) seed_members_[target.address] = answerer.node_id();
      if (auto it = members_.find(answerer.node_id()); it != members_.end()) {
        it->second.heard_us_at = clock_.Now();
        it->second.call_due_round = rounds_ + kRoundsBetweenCalls;
        it->second.needs_table = false;
        it->second.key_failed = false;  // its answer brought its key
      }
    }
    SaveKnownLocked();
  }
  if (progress_observer_) progress_observer_();
  if (alive_observer_) alive_observer_(AliveOthers().size());
}

}  // namespace onebox
