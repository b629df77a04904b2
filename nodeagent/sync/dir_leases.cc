#include "nodeagent/sync/dir_leases.h"

#include <algorithm>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/node_identity.h"
#include "naming/ns_key.h"
#include "nodeagent/peer/quorum.h"

namespace onebox {

namespace {
constexpr auto kVoteDeadline = std::chrono::milliseconds(500);
// A recall waits for the holder's recorder and a send of its records.
constexpr auto kRecallDeadline = std::chrono::seconds(3);
// How long a create may wait for a lease: a gone holder's term, and a little.
constexpr auto kWait = DirLeases::kTerm + std::chrono::seconds(1);
// Creates granted this recently are named in a recall's answer unless
// recorded: the program may not have made the entry yet (the grant goes out
// just before its open).
constexpr auto kRecent = DirLeases::kPendingHold;
// A recall waits this long at most for this node's own acquisition of the
// directory to end (it asks the others, then fetches from earlier holders).
constexpr auto kRecallWaitsForOwn = std::chrono::seconds(2);
// A create slot runs out this long before the lease's renewal is due (the
// shims' clock and the agent's may tick apart by a coarse tick or two).
constexpr auto kSlotMargin = std::chrono::milliseconds(20);

bool IsDirKey(const std::string& dir) { return dir.empty() || IsValidNsKey(dir); }

// A name a recall's answer says is being made.
void AddPending(v1::RecallDirLeaseResponse* resp, std::string key, HlcTimestamp since, const std::string& granted_by) {
  v1::PendingName* name = resp->add_pending();
  name->set_key(std::move(key));
  name->set_since(since);
  name->set_granted_by(granted_by);
}

uint64_t NewLeaseId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  for (;;)
    if (uint64_t id = rng(); id != 0) return id;  // 0 means "none" on the wire
}
}  // namespace

DirLeases::DirLeases(Store& store, Membership& members, PeerNetwork& network, std::string self_id, Handover handover,
                     Clock& clock)
    : store_(store),
      members_(members),
      network_(network),
      self_(std::move(self_id)),
      handover_(std::move(handover)),
      clock_(clock) {}

uint64_t DirLeases::won() const {
  std::lock_guard lock(mu_);
  return won_;
}

uint64_t DirLeases::recalled() const {
  std::lock_guard lock(mu_);
  return recalled_;
}

uint64_t DirLeases::decided() const {
  std::lock_guard lock(mu_);
  return decided_;
}

void DirLeases::set_create_slots(CreateSlotTable* slots, std::function<bool()> view_settled) {
  std::lock_guard lock(mu_);
  slots_ = slots;
  view_settled_ = std::move(view_settled);
}

void DirLeases::Sweep() {
  Clock::time_point now = clock_.Now();
  if (now - last_sweep_ < std::chrono::seconds(10)) return;
  last_sweep_ = now;
  for (auto it = votes_.begin(); it != votes_.end();) {
    std::erase_if(it->second.holders, [&](const auto& kv) { return now - kv.second > kRemember; });
    std::erase_if(it->second.covering, [&](const auto& kv) { return now - kv.second > kRemember; });
    it = it->second.holders.empty() && it->second.until <= now ? votes_.erase(it) : std::next(it);
  }
  std::erase_if(held_, [&](const auto& kv) { return now - kv.second.until > kRemember; });
  std::erase_if(covered_, [&](const auto& kv) { return now - kv.second.last_used > kRemember && LeaseDirOf(kv.first) == kv.first; });
  std::erase_if(carved_, [&](const auto& kv) { return now - kv.second > kRemember && CoversAbove(kv.first).empty(); });
  std::erase_if(pending_, [&](const auto& kv) { return kv.second.until <= now; });
}

bool DirLeases::GrantedBelow(const std::string& dir, const std::string& node, Clock::time_point now) const {
  const std::string prefix = KeyPrefixBelow(dir);
  for (auto it = votes_.lower_bound(prefix); it != votes_.end() && it->first.starts_with(prefix); ++it) {
    if (it->first == dir) continue;
    if (it->second.until > now && it->second.holder != node) return true;
    for (const auto& [holder, when] : it->second.holders)
      if (holder != node && now - when <= kRemember) return true;
  }
  return false;
}

std::vector<uint64_t> DirLeases::CoversAbove(const std::string& dir) const {
  std::vector<uint64_t> covers;
  for (const auto& [d, held] : held_)
    if (held.covers && held.lease_id != 0 && IsKeyBelow(dir, d)) covers.push_back(held.lease_id);
  return covers;
}

std::string DirLeases::LeaseDirOf(const std::string& dir) const {
  auto own = held_.find(dir);
  if (own != held_.end() && clock_.Now() < own->second.until) return dir;
  auto c = covered_.find(dir);
  if (c == covered_.end()) return dir;
  auto by = held_.find(c->second.by);
  if (by == held_.end() || !by->second.covers || by->second.lease_id != c->second.lease_id) return dir;
  return c->second.by;
}

v1::DirLeaseResponse DirLeases::Cast(const std::string& dir, const std::string& node, uint64_t lease_id,
                                     const std::set<uint64_t>& given_up, bool cover) {
  v1::DirLeaseResponse vote;
  Clock::time_point now = clock_.Now();
  Votes& v = votes_[dir];
  for (const auto& [holder, when] : v.holders)
    if (holder != node && now - when <= kRemember) vote.add_previous_holders(holder);
  if (v.until > now && v.holder != node && !given_up.count(v.lease_id)) {
    vote.set_holder(v.holder);
    vote.set_holder_lease_id(v.lease_id);
    return vote;
  }
  // Below a covering lease: its holder may have made dir and be deciding in
  // it, unless dir itself is the asker's already (granted over the cover).
  const bool held_by_asker = v.until > now && v.holder == node;
  for (std::string up = dir; !up.empty();) {
    up = ParentKey(up);
    auto it = votes_.find(up);
    if (it == votes_.end()) continue;
    for (const auto& [holder, when] : it->second.covering)
      if (holder != node && now - when <= kRemember) vote.add_previous_holders(holder);
    const Votes& above = it->second;
    if (!above.covers || above.until <= now || above.holder == node || held_by_asker) continue;
    if (v.out_of_cover.count(above.lease_id)) continue;  // its holder gave dir up for good
    if (given_up.count(above.lease_id)) {
      v.out_of_cover.insert(above.lease_id);
      continue;
    }
    vote.set_holder(above.holder);
    vote.set_holder_lease_id(above.lease_id);
    return vote;
  }
  // A renewal keeps its cover; a new grant covers if nothing below is another's.
  const bool covers =
      cover && ((held_by_asker && v.lease_id == lease_id && v.covers) || !GrantedBelow(dir, node, now));
  v.holder = node;
  v.lease_id = lease_id;
  v.until = now + kTerm;
  v.covers = covers;
  v.holders[node] = now;
  if (covers) v.covering[node] = now;
  vote.set_granted(true);
  vote.set_covers(covers);
  return vote;
}

DirLeases::Round DirLeases::Ask(const std::string& dir, uint64_t lease_id, uint64_t replaces,
                                const std::set<uint64_t>& given_up, bool renewal) {
  Round round;
  round.covers = true;  // until a vote says otherwise
  auto take = [&round](const v1::DirLeaseResponse& vote) {
    round.previous.insert(vote.previous_holders().begin(), vote.previous_holders().end());
    if (vote.granted()) {
      round.covers = round.covers && vote.covers();
      return;
    }
    round.holder = vote.holder();
    round.holder_lease_id = vote.holder_lease_id();
  };
  {
    std::lock_guard lock(mu_);
    Sweep();
    take(Cast(dir, self_, lease_id, given_up, /*cover=*/true));
    if (!round.holder.empty()) {
      round.why = fmt::format("this node granted it to {}", round.holder);
      return round;
    }
  }
  // (Members not heard of since this agent started count as live: a
  // restarted agent wins nothing alone before it has looked for them.)
  size_t unheard = 0;
  std::vector<PeerAddress> peers = members_.AliveOthersAndUnheard(&unheard);
  size_t votes = 1;
  std::vector<std::string> granted;  // addresses, to release on a loss
  v1::DirLeaseRequest req;
  req.set_dir(dir);
  req.set_node_id(self_);
  req.set_lease_id(lease_id);
  req.set_replaces(replaces);  // (an agent before covers reads only this one)
  for (uint64_t id : given_up) req.add_given_up(id);
  req.set_cover(true);
  for (const auto& [node_id, address] : peers) {
    v1::DirLeaseResponse resp;
    Status st = network_.To(address).DirLease(req, &resp, {.timeout = kVoteDeadline});
    if (!st.ok()) {
      round.why += fmt::format("; {}: {}", node_id, st.message());
      continue;
    }
    take(resp);
    if (resp.granted()) {
      ++votes;
      granted.push_back(address);
      continue;
    }
    round.why += fmt::format("; {} granted it to {}", node_id, resp.holder());
    break;  // held by another node: no use asking the others
  }
  const size_t voters = peers.size() + 1 + unheard;
  round.won = round.holder.empty() && votes >= LeaseVotesNeeded(voters);
  if (round.won) return round;
  round.why = fmt::format("{} of {} live nodes granted it{}", votes, voters, round.why);
  // A renewal that failed leaves the votes as they are: the lease still
  // runs on them until its term ends.
  if (renewal) return round;
  // Refused, or too few answers: give the votes back.
  {
    std::lock_guard lock(mu_);
    Votes& v = votes_[dir];
    if (v.holder == self_ && v.lease_id == lease_id) v.until = {};
  }
  req.set_release(true);
  for (const std::string& address : granted) {
    v1::DirLeaseResponse resp;
    // Not taken back, a vote lapses after kTerm: nothing to do on a failure.
    (void)network_.To(address).DirLease(req, &resp, {.timeout = kVoteDeadline});
  }
  return round;
}

Status DirLeases::Recall(const std::string& dir, const std::string& node, std::set<uint64_t>* given_up,
                         uint64_t* own) {
  std::optional<PeerAddress> peer = members_.AliveOther(node);
  if (!peer) return Status::NotFound(fmt::format("{} is not alive", node));
  v1::RecallDirLeaseRequest req;
  req.set_dir(dir);
  req.set_node_id(self_);
  v1::RecallDirLeaseResponse resp;
  auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(kRecallDeadline);
  if (Status st = network_.To(peer->address).RecallDirLease(req, &resp, {.timeout = timeout}); !st.ok()) return st;
  if (own != nullptr) *own = resp.lease_id();
  if (given_up != nullptr) {
    if (resp.lease_id() != 0) given_up->insert(resp.lease_id());
    given_up->insert(resp.uncovered().begin(), resp.uncovered().end());
  }
  std::lock_guard lock(mu_);
  for (const v1::PendingName& p : resp.pending())
    if (ParentKey(p.key()) == dir && p.granted_by() != self_)
      pending_[p.key()] = {clock_.Now() + kPendingHold, p.since(), p.granted_by()};
  return Status::Ok();
}

Status DirLeases::Hold(const std::string& dir, std::unique_lock<std::mutex>& lock) {
  static thread_local std::mt19937 rng(std::random_device{}());
  Clock::time_point deadline = clock_.Now() + kWait;
  std::set<uint64_t> given_up;  // by the holders recalled for this acquisition
  uint64_t replaces = 0;        // among them, the last one given up on dir itself (what agents before covers read)
  std::string why;
  for (int pause = 0;;) {
    settled_.wait(lock, [&] { return !acquiring_.count(dir); });
    auto it = held_.find(dir);
    Clock::time_point now = clock_.Now();
    bool valid = it != held_.end() && now < it->second.until;
    if (valid && now < it->second.renew_after) return Status::Ok();
    uint64_t lease_id = valid ? it->second.lease_id : NewLeaseId();
    // Until the lease is won and what earlier holders made is here, no create in dir is decided.
    acquiring_.insert(dir);
    lock.unlock();
    Round round = Ask(dir, lease_id, replaces, given_up, /*renewal=*/valid);
    std::string missing;  // earlier holders alive that did not hand over
    if (round.won && !valid) {
      for (const std::string& node : round.previous) {
        if (node == self_) continue;
        // A node that is not alive is cut off or gone: what it made comes
        // with its records when it is back (the partition rule). One that
        // is alive must hand over before anything is decided here, even one
        // recalled before this round: it may have won the lease again
        // since, made names, and handed them to a third node, which passes
        // on only the names it was told are pending, not the records.
        Status s = Recall(dir, node);
        if (!s.ok() && s.code() != Code::kNotFound) missing += fmt::format("; {}: {}", node, s.message());
      }
      if (!missing.empty()) {
        round.won = false;
        round.why = "an earlier holder did not hand over" + missing;
      }
    }
    lock.lock();
    acquiring_.erase(dir);
    settled_.notify_all();
    if (round.won) {
      Held& held = held_[dir];
      if (held.lease_id != lease_id) {
        ++won_;
        // The directories this node made under its cover of dir that ran
        // out (unused for a term: a tree extracted, then compiled in) are
        // covered again, with no vote each, when nobody else may have
        // decided anything there since: the new lease covers too (no
        // directory below was granted to another node), no other node held
        // dir or a cover above it (none to recall), and the old one ended
        // within what members remember. A recall zeroed the old lease's id.
        if (round.covers && held.covers && held.lease_id != 0 && now - held.until <= kRemember &&
            std::none_of(round.previous.begin(), round.previous.end(), [&](const auto& n) { return n != self_; }))
          for (auto& [covered_dir, cover] : covered_)
            if (cover.by == dir && cover.lease_id == held.lease_id) cover.lease_id = lease_id;
        held.covers = round.covers;
        spdlog::debug("lease on /{} won{}{}", dir, round.covers ? " as covering" : "",
                      !given_up.empty() ? " (recalled from its holder)" : "");
      } else {
        held.covers = held.covers && round.covers;  // a voter that no longer grants it as covering ends the cover
      }
      held.lease_id = lease_id;
      held.until = now + kTerm - kMargin;  // counted from before the first vote went out
      held.renew_after = now + kTerm / 2;
      return Status::Ok();
    }
    it = held_.find(dir);
    if (it != held_.end() && it->second.lease_id == lease_id && clock_.Now() < it->second.until)
      return Status::Ok();  // a renewal that failed: the lease still runs
    why = round.why;
    if (!round.holder.empty() && round.holder != self_) {
      lock.unlock();
      const size_t known = given_up.size();
      uint64_t own = 0;
      Status recalled = Recall(dir, round.holder, &given_up, &own);
      lock.lock();
      if (recalled.ok()) {
        given_up.insert(round.holder_lease_id);
        replaces = own != 0 ? own : round.holder_lease_id;
        // At once, when the recall gave something new up: the lease is free
        // for us now. Otherwise after a pause, as below.
        if (given_up.size() > known && clock_.Now() < deadline) continue;
      } else {
        why += fmt::format("; recall: {}", recalled.message());
      }
    }
    if (clock_.Now() >= deadline) return Status::Unavailable(fmt::format("no lease on /{}: {}", dir, why));
    // Split votes, a gone holder whose term runs, or too few answers: wait a
    // random moment and try again.
    int most = 20 << std::min(pause++, 4);  // up to 320 ms
    lock.unlock();
    clock_.Sleep(std::chrono::milliseconds(std::uniform_int_distribution<int>(5, most)(rng)));
    lock.lock();
  }
}

bool DirLeases::MadeElsewhere(const std::string& key) {
  Result<Record> rec = store_.GetWithTombstone(key, Cf::kNs);
  // This node's own record does not count: the shim found no entry in the
  // view, so the program here removed it (git makes and removes index.lock
  // within milliseconds) and the removal is not recorded yet.
  if (rec.ok() && !rec->tombstone && NodeIdHex(rec->version.node) != self_) return true;
  auto it = pending_.find(key);
  if (it == pending_.end()) return false;
  if (clock_.Now() >= it->second.until || (rec.ok() && rec->version.hlc > it->second.since)) {
    pending_.erase(it);  // its record (or removal) came, or it lapsed
    return false;
  }
  return true;
}

Status DirLeases::Decide(const std::string& key, bool directory, const std::string& lease_dir, Held& held,
                         Clock::time_point now) {
  if (MadeElsewhere(key)) return Status::AlreadyExists(fmt::format("/{}: it exists", key));
  std::deque<Granted>& recent = held.recent;
  while (!recent.empty() && now - recent.front().when > kRecent) recent.pop_front();
  recent.push_back({key, now, store_.clock().Last()});
  if (auto c = covered_.find(ParentKey(key)); c != covered_.end() && c->second.by == lease_dir) c->second.last_used = now;
  const bool covers_new = directory && held.covers && !carved_.count(key);
  if (covers_new) covered_[key] = {lease_dir, held.lease_id, now};
  ++decided_;
  // The files made next in the directory (or in the new one, covered) are
  // decided by the shims.
  if (!directory) OfferSlot(ParentKey(key), held, now);
  else if (covers_new) OfferSlot(key, held, now);
  return Status::Ok();
}

bool DirLeases::PendingIn(const std::string& dir) {
  const std::string prefix = KeyPrefixBelow(dir);
  const Clock::time_point now = clock_.Now();
  // Until it lapses, even once its record is here: the record may not be
  // in the view's queue yet (a batch is stored whole, then queued entry by
  // entry).
  for (auto it = pending_.lower_bound(prefix); it != pending_.end() && it->first.starts_with(prefix); ++it)
    if (now < it->second.until && ParentKey(it->first) == dir) return true;
  return false;
}

void DirLeases::OfferSlot(const std::string& dir, const Held& held, Clock::time_point now) {
  if (slots_ == nullptr || now + kSlotMargin >= held.renew_after) return;
  // Read before the look at the view's queue: a peer's change after it
  // (enqueued after our look) makes the install refuse.
  const uint64_t seen = slots_->peer_changes();
  if ((view_settled_ && !view_settled_()) || PendingIn(dir)) return;
  const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(held.renew_after - now - kSlotMargin);
  slots_->Install(dir, BootTimeNs() + left.count(), seen);
}

Status DirLeases::Create(const std::string& key, bool directory) {
  if (!IsValidNsKey(key)) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", key));
  std::string dir = ParentKey(key);
  std::unique_lock lock(mu_);
  // The lease may be recalled between Hold and the decision, or the cover
  // over dir end: then again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string lease_dir = LeaseDirOf(dir);
    if (Status held = Hold(lease_dir, lock); !held.ok()) return held;
    if (LeaseDirOf(dir) != lease_dir) continue;
    auto it = held_.find(lease_dir);
    Clock::time_point now = clock_.Now();
    if (it == held_.end() || now >= it->second.until) continue;
    return Decide(key, directory, lease_dir, it->second, now);
  }
  return Status::Unavailable(fmt::format("/{}: its directory's lease moved away again and again", key));
}

std::optional<Status> DirLeases::CreateAtOnce(const std::string& key, bool directory) {
  if (!IsValidNsKey(key)) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", key));
  std::lock_guard lock(mu_);
  std::string lease_dir = LeaseDirOf(ParentKey(key));
  if (acquiring_.count(lease_dir)) return std::nullopt;
  auto it = held_.find(lease_dir);
  Clock::time_point now = clock_.Now();
  // Held, and not due for renewal: what Hold would return at once.
  if (it == held_.end() || now >= it->second.until || now >= it->second.renew_after) return std::nullopt;
  return Decide(key, directory, lease_dir, it->second, now);
}

Status DirLeases::OnLease(const v1::DirLeaseRequest& req, v1::DirLeaseResponse* resp) {
  if (!IsDirKey(req.dir())) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", req.dir()));
  if (req.node_id().empty() || req.lease_id() == 0) return Status::InvalidArgument("a lease vote needs a node and a lease id");
  std::lock_guard lock(mu_);
  Sweep();
  if (req.release()) {
    auto it = votes_.find(req.dir());
    if (it != votes_.end() && it->second.holder == req.node_id() && it->second.lease_id == req.lease_id())
      it->second.until = {};
    return Status::Ok();
  }
  // Programs here may still decide in its predecessor's slots: no vote for
  // another node meanwhile (a majority that needs this node waits). (The
  // votes the predecessor gave last longer, and are forgotten: a known
  // limit, docs/consistency.md.)
  if (slots_ != nullptr && slots_->Starting())
    return Status::Unavailable("this agent started moments ago: it votes once its predecessor's create slots have run out");
  std::set<uint64_t> given_up(req.given_up().begin(), req.given_up().end());
  if (req.replaces() != 0) given_up.insert(req.replaces());
  *resp = Cast(req.dir(), req.node_id(), req.lease_id(), given_up, req.cover());
  return Status::Ok();
}

Status DirLeases::OnRecall(const v1::RecallDirLeaseRequest& req, v1::RecallDirLeaseResponse* resp) {
  if (!IsDirKey(req.dir())) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", req.dir()));
  // Shims may still trust the create slots of the agent before this one:
  // the asker tries again once they have run out.
  if (slots_ != nullptr && slots_->Starting())
    return Status::Unavailable("this agent started moments ago: its predecessor's create slots may still be in use");
  std::optional<PeerAddress> asker = members_.AliveOther(req.node_id());
  if (!asker) return Status::FailedPrecondition(fmt::format("{} is not a live member", req.node_id()));
  std::deque<Granted> recent;
  bool held_lately = false;
  {
    std::unique_lock lock(mu_);
    // An acquisition under way ends first, so that it cannot bring the
    // lease back; one that takes long is this node's own contest: the asker
    // tries again.
    if (!settled_.wait_for(lock, kRecallWaitsForOwn, [&] { return !acquiring_.count(req.dir()); }))
      return Status::Unavailable(fmt::format("this node is winning /{} itself", req.dir()));
    if (auto it = held_.find(req.dir()); it != held_.end()) {
      held_lately = true;
      Clock::time_point now = clock_.Now();
      if (now < it->second.until) {
        resp->set_lease_id(it->second.lease_id);
        ++recalled_;
        it->second.until = now;  // given up; its recent grants stay, for later recalls
        it->second.lease_id = 0;
      }
    }
    // Covered here, or below a covering lease of this node's: out of the
    // cover for good, and so is every directory covered below it (the asker
    // may hold it over the cover from now on, and cover those itself).
    if (auto it = covered_.find(req.dir()); it != covered_.end()) {
      held_lately = true;
      it->second.lease_id = 0;
    }
    const std::string below = KeyPrefixBelow(req.dir());
    for (auto it = covered_.lower_bound(below); it != covered_.end() && it->first.starts_with(below); ++it)
      it->second.lease_id = 0;
    if (carved_.count(req.dir())) held_lately = true;
    carved_[req.dir()] = clock_.Now();
    for (uint64_t cover : CoversAbove(req.dir())) resp->add_uncovered(cover);
    // Grants in dir, under its own lease or a covering one.
    for (const auto& [dir, held] : held_)
      for (const Granted& g : held.recent)
        if (ParentKey(g.key) == req.dir()) recent.push_back(g);
    if (auto it = votes_.find(req.dir()); it != votes_.end() && it->second.holder == self_) it->second.until = {};
    // The shims decide nothing there from here (no slot is installed again
    // without a new lease); the creates they began under the slots are
    // waited for below, before the view is recorded.
    if (slots_ != nullptr && slots_->End(req.dir(), /*below=*/true)) held_lately = true;
    // What this node was told is being made there goes on to the next holder.
    for (const auto& [key, p] : pending_)
      if (ParentKey(key) == req.dir() && clock_.Now() < p.until) AddPending(resp, key, p.since, p.granted_by);
  }
  // From here no create in dir is granted here without a new lease. What
  // programs made under the old one is recorded first.
  // A create held up in the middle (a program stopped in its open) may
  // still make a name there: nothing is handed over, and the asker waits
  // (so does every other node's create there) until it is done.
  if (slots_ != nullptr && !slots_->WaitForCreates(req.dir(), /*below=*/true))
    return Status::Unavailable(
        fmt::format("a program here is held up in the middle of an exclusive create in /{}", req.dir()));
  // An agent that started lately knows nothing of what its predecessor
  // granted or let its shims decide: what its programs made is recorded
  // as if it had held the lease.
  if (slots_ != nullptr && slots_->StartedWithin(kRemember)) held_lately = true;
  HlcTimestamp now_hlc = store_.clock().Last();
  if (held_lately && handover_.record_view)
    if (Status s = handover_.record_view(); !s.ok()) return s;
  // Made here and still unrecorded (a file that had content before the
  // recorder saw it is recorded at its close): recorded now, or (gone
  // meanwhile, or unreadable) named as being made.
  if (held_lately && handover_.record_unrecorded)
    for (std::string& key : handover_.record_unrecorded(req.dir())) {
      AddPending(resp, std::move(key), now_hlc, self_);
    }
  Clock::time_point now = clock_.Now();
  for (const Granted& g : recent) {
    if (now - g.when > kRecent) continue;
    // Recorded already, it goes with the records; not yet, the asker waits for it.
    Result<Record> rec = store_.GetWithTombstone(g.key, Cf::kNs);
    if (rec.ok() && NodeIdHex(rec->version.node) == self_ && rec->version.hlc > g.after) continue;
    AddPending(resp, g.key, g.after, self_);
  }
  if (handover_.send_entries)
    if (Status s = handover_.send_entries(*asker, req.dir()); !s.ok()) return s;
  if (resp->lease_id() != 0) spdlog::debug("lease on /{} given up for {}", req.dir(), req.node_id());
  return Status::Ok();
}

}  // namespace onebox
