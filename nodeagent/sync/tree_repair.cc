#include "nodeagent/sync/tree_repair.h"

#include "naming/ns_key.h"

#include <vector>

#include <spdlog/spdlog.h>

#include "onebox/v1/namespace.pb.h"

namespace onebox {

namespace {

constexpr size_t kScanPage = 1000;

}  // namespace

TreeRepair::TreeRepair(Store& store, RepairedFn on_repaired, std::chrono::milliseconds grace, Clock& clock)
    : store_(store), on_repaired_(std::move(on_repaired)), grace_(grace), clock_(clock) {}

TreeRepair::~TreeRepair() { Stop(); }

void TreeRepair::Start() {
  rounds_thread_.Start("onebox-repair", std::chrono::milliseconds(200), [this] { CheckDue(); },
                       [this] {
                         std::lock_guard lock(mu_);
                         return due_.empty();
                       });
}

void TreeRepair::Stop() { rounds_thread_.Stop(); }

void TreeRepair::Note(const std::string& key) { Note(key, grace_); }

void TreeRepair::Note(const std::string& key, std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mu_);
    // A key noted again waits a grace period from its newest record.
    due_[key] = clock_.Now() + grace;
  }
  rounds_thread_.Wake();
}

void TreeRepair::CheckDue() {
  std::vector<std::string> ready;
  {
    std::lock_guard lock(mu_);
    Clock::time_point now = clock_.Now();
    for (auto it = due_.begin(); it != due_.end();) {
      if (it->second > now) {
        ++it;
        continue;
      }
      ready.push_back(it->first);
      it = due_.erase(it);
    }
  }
  LiveInRound live_in_round;
  for (const std::string& key : ready) Check(key, live_in_round);
}

size_t TreeRepair::Check(const std::string& key) {
  LiveInRound live_in_round;
  return Check(key, live_in_round);
}

size_t TreeRepair::Check(const std::string& key, LiveInRound& live_in_round) {
  Result<Record> rec = store_.GetWithTombstone(key, Cf::kNs);
  if (!rec.ok()) return 0;
  if (!rec->tombstone) {
    v1::Inode inode;
    if (!inode.ParseFromString(rec->value)) return 0;
    return ReviveAncestors(key, inode.uid(), inode.gid(), live_in_round);
  }
  // A dead directory with live entries below it: entries its remover never
  // saw (made or moved there on another node at the same time).
  size_t revived = 0;
  std::string after;
  for (;;) {
    Result<ScanPage> page = store_.Scan(key + "/", after, kScanPage, /*keys_only=*/false, Cf::kNs);
    if (!page.ok() || page->entries.empty()) break;
    for (const auto& e : page->entries) {
      v1::Inode inode;
      if (inode.ParseFromString(e.record.value))
        revived += ReviveAncestors(e.key, inode.uid(), inode.gid(), live_in_round);
    }
    if (!page->more) break;
    after = page->entries.back().key;
  }
  return revived;
}

size_t TreeRepair::ReviveAncestors(const std::string& live, uint32_t uid, uint32_t gid,
                                   LiveInRound& live_in_round) {
  size_t revived = 0;
  for (std::string dir = ParentKey(live); !dir.empty(); dir = ParentKey(dir)) {
    if (live_in_round.count(dir) > 0) break;  // it and everything above it checked in this round
    Result<Record> rec = store_.GetWithTombstone(dir, Cf::kNs);
    if (rec.ok() && !rec->tombstone) {
      v1::Inode inode;
      if (inode.ParseFromString(rec->value) && inode.type() != v1::FILE_TYPE_DIRECTORY)
        spdlog::warn("tree repair: /{} is live but /{} above it is not a directory; it stays out of sight", live, dir);
      else
        live_in_round.insert(dir);
      continue;  // its own ancestors are checked too: a live directory may be an orphan itself
    }
    // Not here at all: its record has not come yet (a node that joined after
    // the log was cut gets it from anti-entropy, in no order), and made up
    // here as a new version it would win over the real one (mode, owner).
    // Only a removal recorded here is repaired; tombstones are never dropped.
    if (!rec.ok()) continue;
    if (Revive(dir, uid, gid, live)) {
      ++revived;
      live_in_round.insert(dir);
    }
  }
  return revived;
}

bool TreeRepair::Revive(const std::string& dir, uint32_t uid, uint32_t gid, const std::string& because) {
  // As it was when last live, if this node knew it; else as a plain directory
  // owned like the entry that needs it.
  v1::Inode inode;
  bool known = false;
  if (Result<std::vector<Record>> history = store_.History(dir); history.ok())
    for (const Record& r : *history)
      if (!r.tombstone && inode.ParseFromString(r.value) && inode.type() == v1::FILE_TYPE_DIRECTORY) {
        known = true;
        break;
      }
  if (!known) {
    inode.Clear();
    inode.set_type(v1::FILE_TYPE_DIRECTORY);
    inode.set_mode(0755);
    inode.set_uid(uid);
    inode.set_gid(gid);
  }
  inode.set_mtime_ns(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  Result<Version> v = store_.Put(dir, inode.SerializeAsString(), /*sync=*/false, Cf::kNs);
  if (!v.ok()) {
    spdlog::warn("tree repair: cannot revive /{}: {}", dir, v.status().ToString());
    return false;
  }
  ++repaired_;
  spdlog::info("tree repair: /{} was removed on one node while /{} was put below it on another; "
               "it is a directory again",
               dir, because);
  if (on_repaired_) on_repaired_(dir);
  return true;
}

}  // namespace onebox
