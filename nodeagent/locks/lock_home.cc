#include "nodeagent/locks/lock_home.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <set>
#include <utility>

#include "nodeagent/locks/lease_slots.h"
#include "nodeagent/locks/lock_wire.h"

namespace onebox {

namespace {

constexpr size_t kErasKept = 8;
// Files kept with no lock and no wait, for their fences: beyond this many,
// they go (a fence that old was applied everywhere long ago).
constexpr size_t kIdleFilesKept = 100'000;

}  // namespace

LockHome::LockHome(std::string self_id, Members members, Clock& clock)
    : self_(std::move(self_id)), members_(std::move(members)), clock_(clock) {
  eras_.push_back(Era{clock_.Now(), {}});  // a start: every file is new here
}

std::string LockHome::HomeOf(const std::string& path, const std::vector<std::string>& nodes) {
  std::string best;
  uint64_t best_score = 0;
  for (const std::string& node : nodes) {
    std::string both = node + '\0' + path;
    const uint64_t score = XXH3_64bits(both.data(), both.size());
    if (best.empty() || score > best_score || (score == best_score && node < best)) {
      best = node;
      best_score = score;
    }
  }
  return best;
}

void LockHome::NoteIncarnationLocked() {
  if (!members_.incarnation) return;
  const uint64_t now = members_.incarnation();
  const uint64_t was = std::exchange(incarnation_, now);
  if (was == 0 || was == now) return;
  // Back after a silence in which the others may have declared this node
  // dead and granted its files' locks elsewhere: what is kept here may be
  // stale (a lock released at another home). Every node reclaims here
  // what its programs hold (they see the new incarnation), in a grace.
  spdlog::warn("locks: this node is a new incarnation: the {} files' locks it kept are forgotten, and reclaimed "
               "by their holders within its grace", files_.size());
  files_.clear();
  eras_.assign(1, Era{clock_.Now(), {}});
  forgot_at_ = clock_.Now();
  cv_.notify_all();  // awaits of dropped files answer NOT_HOME
}

std::vector<std::string> LockHome::NodesLocked() {
  std::vector<std::string> nodes = members_.not_dead();
  if (std::find(nodes.begin(), nodes.end(), self_) == nodes.end()) nodes.push_back(self_);
  std::sort(nodes.begin(), nodes.end());
  const bool majority = members_.majority();
  // After the members and the majority: reading them (Membership::Nodes)
  // raises the incarnation first if this node was silent, and a majority
  // seen again after a silence is seen after that, so it is noted by now.
  NoteIncarnationLocked();
  if (eras_.back().nodes != nodes || eras_.back().majority != majority) {
    eras_.push_back(Era{clock_.Now(), nodes, majority});
    while (eras_.size() > kErasKept) eras_.pop_front();
  }
  return nodes;
}

bool LockHome::InGraceLocked(const std::string& path) {
  const Clock::time_point now = clock_.Now();
  // Alone: nobody else granted anything (unless this node forgot its own
  // programs' locks lately, as a new incarnation: they are reclaimed first).
  if (eras_.back().nodes == std::vector<std::string>{self_} && (!forgot_at_ || now - *forgot_at_ >= kGrace))
    return false;
  // Any membership of the last kGrace under which path's home was another
  // node (or not known yet, at the start, or not known for sure: this node
  // saw no majority, and the others may have declared it dead and taken its
  // files) may have left locks there that their holders are still
  // reclaiming here.
  for (size_t i = 0; i + 1 < eras_.size(); ++i) {
    if (now - eras_[i + 1].since >= kGrace) continue;  // ended too long ago
    if (eras_[i].nodes.empty() || !eras_[i].majority || HomeOf(path, eras_[i].nodes) != self_) return true;
  }
  return eras_.size() == 1 && now - eras_.front().since < kGrace;
}

void LockHome::GrantWaitersLocked(const std::string& path, File& file) {
  // A minority side grants nothing, not even to those already waiting; nor
  // does a home in its grace (a waiter queued before a spell without a
  // majority waits for the reclaims of what the others granted meanwhile).
  if (!MajorityLocked() || InGraceLocked(path)) return;
  bool granted = false;
  for (Waiter& w : file.waiters) {
    if (w.granted || file.locks.Conflict(w.owner, w.type, w.span)) continue;
    file.locks.Apply(w.owner, w.type, w.span);
    w.granted = granted = true;
  }
  if (granted) cv_.notify_all();
}

void LockHome::FencesLocked(const File& file, const std::string& for_node, v1::LockResponse* resp) const {
  for (const auto& [node, seq] : file.fences) {
    if (node == for_node) continue;
    v1::LockFence* f = resp->add_fences();
    f->set_node_id(node);
    f->set_seq(seq);
  }
}

void LockHome::KeepFenceLocked(File& file, const v1::LockRequest& req) {
  if (req.fence().seq() == 0 || req.fence().node_id().empty()) return;
  uint64_t& seq = file.fences[req.fence().node_id()];
  seq = std::max(seq, req.fence().seq());
}

Status LockHome::OnLock(const v1::LockRequest& req, v1::LockResponse* resp) {
  if (req.path().empty() || req.owner().node_id().empty() || req.owner().key().empty())
    return Status::InvalidArgument("a lock names its file and its owner");
  std::lock_guard lock(mu_);
  const std::vector<std::string> nodes = NodesLocked();
  // A reclaim or a lease's return is taken on either side of a partition
  // (it grants nothing new); everything else needs a majority.
  if (!MajorityLocked() && req.op() != v1::LockRequest::RECLAIM && req.op() != v1::LockRequest::RETURN) {
    resp->set_outcome(v1::LockResponse::NO_QUORUM);
    return Status::Ok();
  }
  if (std::string home = HomeOf(req.path(), nodes); home != self_) {
    resp->set_outcome(v1::LockResponse::NOT_HOME);
    resp->set_home(home);
    return Status::Ok();
  }
  const LockOwner owner = OwnerOf(req.owner());
  if (files_.size() > kIdleFilesKept)
    std::erase_if(files_, [](const auto& f) { return f.second.locks.empty() && f.second.waiters.empty(); });
  File& file = files_[LockFileKey(req.path(), req.flock())];
  resp->set_outcome(v1::LockResponse::GRANTED);
  switch (req.op()) {
    case v1::LockRequest::RECLAIM:
      // All or nothing: a lock another owner holds now (granted here while
      // the reclaimer could not reach us) is not given to a second holder.
      for (const v1::LockSpan& held : req.held())
        if (auto other = file.locks.Conflict(owner, TypeOf(held.type()), SpanOf(held))) {
          spdlog::warn("locks: /{}: {} reclaims a lock {} holds now: refused", req.path(), owner.key, other->owner.key);
          resp->set_outcome(v1::LockResponse::CONFLICT);
          ToWire(other->owner, resp->mutable_holder());
          ToWire(other->type, other->span, resp->mutable_holder_span());
          return Status::Ok();
        }
      for (const v1::LockSpan& held : req.held()) file.locks.Apply(owner, TypeOf(held.type()), SpanOf(held));
      return Status::Ok();
    case v1::LockRequest::RETURN:
      // The lease's locks become its programs' (the kernel granted them under
      // it, so none conflicts with another owner's unless a reclaim after a
      // partition put one there: that one is not given, and said).
      if (!IsLeaseOwnerKey(owner.key)) return Status::InvalidArgument("a return names a lease");
      for (const v1::LockHeld& held : req.converted())
        if (held.owner().node_id() != owner.node_id || held.owner().key().empty())
          return Status::InvalidArgument("a node returns its own programs' locks only");
      if (req.older_leases()) {  // its predecessors' (a restarted agent knows no keys)
        std::vector<LockOwner> leases;
        for (const HeldLock& h : file.locks.all())
          if (h.owner.node_id == owner.node_id && IsLeaseOwnerKey(h.owner.key) &&
              h.owner.key.rfind(owner.key + ".", 0) != 0)
            leases.push_back(h.owner);
        for (const LockOwner& lease : leases) file.locks.Release(lease);
      } else {
        file.locks.Release(owner);
      }
      for (const v1::LockHeld& held : req.converted()) {
        const LockOwner holder = OwnerOf(held.owner());
        const LockType type = TypeOf(held.span().type());
        if (type == LockType::kUnlock) continue;
        if (auto other = file.locks.Conflict(holder, type, SpanOf(held.span()))) {
          spdlog::error("locks: /{}: {} held a lock under node {}'s lease that {} holds now: not given",
                        req.path(), holder.key, owner.node_id, other->owner.key);
          continue;
        }
        file.locks.Apply(holder, type, SpanOf(held.span()));
      }
      KeepFenceLocked(file, req);
      GrantWaitersLocked(req.path(), file);
      return Status::Ok();
    case v1::LockRequest::RELEASE:
      file.locks.Release(owner);
      std::erase_if(file.waiters, [&](const Waiter& w) { return w.owner == owner; });
      KeepFenceLocked(file, req);
      GrantWaitersLocked(req.path(), file);
      return Status::Ok();
    case v1::LockRequest::TEST:
    case v1::LockRequest::SET:
      break;
    default:
      return Status::InvalidArgument("unknown lock operation");
  }
  const LockType type = TypeOf(req.span().type());
  const LockSpan span = SpanOf(req.span());
  if (type == LockType::kUnlock) {  // an unlock is never held back, not even in grace
    if (req.op() == v1::LockRequest::SET) {
      file.locks.Apply(owner, type, span);
      KeepFenceLocked(file, req);
      GrantWaitersLocked(req.path(), file);
    }
    return Status::Ok();
  }
  if (InGraceLocked(req.path())) {
    resp->set_outcome(v1::LockResponse::GRACE);
    return Status::Ok();
  }
  std::optional<HeldLock> other = file.locks.Conflict(owner, type, span);
  if (req.op() == v1::LockRequest::TEST) {
    if (other) {
      resp->set_outcome(v1::LockResponse::CONFLICT);
      ToWire(other->owner, resp->mutable_holder());
      ToWire(other->type, other->span, resp->mutable_holder_span());
    }
    return Status::Ok();
  }
  if (other) {
    // flock converts by dropping the old lock first, as the kernel does:
    // a conversion that has to wait (or fails) has given it up.
    if (req.flock()) {
      file.locks.Release(owner);
      KeepFenceLocked(file, req);
      GrantWaitersLocked(req.path(), file);
    }
    if (req.wait()) {
      std::erase_if(file.waiters,
                    [&](const Waiter& w) { return w.owner.node_id == owner.node_id && w.id == req.wait_id(); });
      file.waiters.push_back(Waiter{req.wait_id(), owner, type, span, false});
      resp->set_outcome(v1::LockResponse::QUEUED);
      ToWire(other->owner, resp->mutable_holder());  // a lease's node is asked to return it
      ToWire(other->type, other->span, resp->mutable_holder_span());
    } else {
      resp->set_outcome(v1::LockResponse::CONFLICT);
      ToWire(other->owner, resp->mutable_holder());
      ToWire(other->type, other->span, resp->mutable_holder_span());
    }
    return Status::Ok();
  }
  file.locks.Apply(owner, type, span);
  // A downgrade (write to read, or a smaller span) may let waiters in, and
  // carries its node's fence for them.
  KeepFenceLocked(file, req);
  GrantWaitersLocked(req.path(), file);
  FencesLocked(file, owner.node_id, resp);
  return Status::Ok();
}

Status LockHome::OnAwaitLock(const v1::AwaitLockRequest& req, v1::LockResponse* resp) {
  const std::string key = LockFileKey(req.path(), req.flock());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::min(req.window_ms(), 5000u));
  std::unique_lock lock(mu_);
  (void)NodesLocked();  // the majority and the incarnation as they are now
  auto find = [&]() -> std::pair<File*, std::deque<Waiter>::iterator> {
    auto f = files_.find(key);
    if (f == files_.end()) return {nullptr, {}};
    auto w = std::find_if(f->second.waiters.begin(), f->second.waiters.end(),
                          [&](const Waiter& x) { return x.owner.node_id == req.node_id() && x.id == req.wait_id(); });
    if (w == f->second.waiters.end()) return {nullptr, {}};
    return {&f->second, w};
  };
  bool tried = false;
  for (;;) {
    auto [file, w] = find();
    if (file != nullptr && !tried) {  // a majority that came back since the unlock lets waiters in now
      GrantWaitersLocked(req.path(), *file);
      tried = true;
    }
    if (file == nullptr) {  // dropped: the file moved to another home, or the waiter's node died
      resp->set_outcome(v1::LockResponse::NOT_HOME);
      resp->set_home(HomeOf(req.path(), NodesLocked()));
      return Status::Ok();
    }
    if (w->granted || req.cancel() || stopping_ || std::chrono::steady_clock::now() >= deadline) {
      const bool granted = w->granted;
      if (!granted && !req.cancel())  // what is in its way (a lease's node is asked to return it)
        if (std::optional<HeldLock> other = file->locks.Conflict(w->owner, w->type, w->span)) {
          ToWire(other->owner, resp->mutable_holder());
          ToWire(other->type, other->span, resp->mutable_holder_span());
        }
      if (granted || req.cancel()) file->waiters.erase(w);
      resp->set_outcome(granted ? v1::LockResponse::GRANTED : v1::LockResponse::QUEUED);
      if (granted) FencesLocked(*file, req.node_id(), resp);
      return Status::Ok();
    }
    cv_.wait_until(lock, deadline);
  }
}

void LockHome::MembersChanged() {
  std::lock_guard lock(mu_);
  const std::vector<std::string> nodes = NodesLocked();
  const std::set<std::string> alive(nodes.begin(), nodes.end());
  for (auto it = files_.begin(); it != files_.end();) {
    const std::string path = it->first.substr(2);
    if (HomeOf(path, nodes) != self_) {  // its holders reclaim at its new home
      it = files_.erase(it);
      continue;
    }
    File& file = it->second;
    std::set<std::string> gone;
    for (const HeldLock& h : file.locks.all())
      if (!alive.contains(h.owner.node_id)) gone.insert(h.owner.node_id);
    for (const std::string& node : gone) file.locks.ReleaseNode(node);
    std::erase_if(file.fences, [&](const auto& f) { return !alive.contains(f.first); });  // nobody can wait for it
    std::erase_if(file.waiters, [&](const Waiter& w) { return !alive.contains(w.owner.node_id); });
    GrantWaitersLocked(path, file);
    ++it;
  }
  cv_.notify_all();  // awaits of dropped files answer NOT_HOME
}

void LockHome::Stop() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

size_t LockHome::HeldCount() {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [key, file] : files_) n += file.locks.all().size();
  return n;
}

}  // namespace onebox
