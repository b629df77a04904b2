// The view recorder's side of the symlink-free view (view/symlink_guard.h):
// it counts the symlinks it sees in the view, and proves the view free of
// them when it can (the walk is view/symlink_walk.h).
#include <poll.h>
#include <sys/ioctl.h>

#include <spdlog/spdlog.h>

#include "nodeagent/view/symlink_walk.h"
#include "nodeagent/view/view_fs.h"
#include "nodeagent/view/view_recorder.h"

namespace onebox {

void ViewRecorder::NoteSymlink(const std::string& path, bool is_symlink) {
  if (guard_ == nullptr) return;
  std::lock_guard lock(record_mu_);
  bool changed = is_symlink ? symlinks_.insert(path).second : symlinks_.erase(path) > 0;
  if (changed) guard_->SetKnown(symlinks_.size());
}

void ViewRecorder::ForgetSymlinks(const std::string& path) {
  if (guard_ == nullptr) return;
  std::lock_guard lock(record_mu_);
  std::string below = path + "/";
  size_t before = symlinks_.size();
  symlinks_.erase(path);
  symlinks_.erase(symlinks_.lower_bound(below), symlinks_.lower_bound(path + "0"));  // '0' follows '/'
  if (symlinks_.size() != before) guard_->SetKnown(symlinks_.size());
}

bool ViewRecorder::MountsChanged() {
  // poll() says POLLPRI once per change of the mount table (and resets it):
  // the loop's poll or this one, whichever looks first.
  pollfd p{mounts_fd_, POLLPRI, 0};
  if (mounts_fd_ < 0 || poll(&p, 1, 0) <= 0 || !(p.revents & (POLLPRI | POLLERR))) return false;
  OnMountsChanged();
  return true;
}

void ViewRecorder::OnMountsChanged() {
  // Something may be mounted in the view now (a symlink below it, or one
  // leading out): prove it anew. Or a mount point that stopped the last
  // proof may be gone.
  spdlog::debug("view recorder: the mount table changed");
  ++mount_changes_;
  guard_->Unprove();
  ObstacleMayBeGone();
  // A symlink we saw through a mount that is gone now has left the view
  // without an event: look at each again (else the count waits for it).
  std::vector<std::string> known;
  {
    std::lock_guard lock(record_mu_);
    known.assign(symlinks_.begin(), symlinks_.end());
  }
  for (const std::string& path : known) Follow(path, Change::kMetadata);
}

void ViewRecorder::ObstacleMayBeGone() {
  if (guard_ == nullptr || obstacle_.empty()) return;
  obstacle_.clear();
  guard_->RetryProofSoon();
}

void ViewRecorder::TryProof(uint64_t raises) {
  // The argument is in nodeagent/view/symlink_guard.h (3).
  auto t0 = SymlinkGuard::Clock::now();
  if (!guard_->LockForProof()) {  // a shim is making a symlink: no use walking now
    guard_->ProofFailed(SymlinkGuard::Clock::duration::zero());
    return;
  }
  guard_->UnlockAfterProof();  // the walk runs unlocked: symlink() waits only for the end
  ++walks_;
  int root = OpenBeneath(root_fd_, "", O_RDONLY | O_DIRECTORY);
  Walk walk = root >= 0 ? NoSymlinkBelow(root, "", &obstacle_) : Walk::kFailed;
  bool none = walk == Walk::kClean;
  // Everything queued while we walked: a move or a creation may have hidden
  // a symlink from the walk; an overflow may have hidden a move.
  bool moved = false;
  ReadEvents(&moved);
  // A mount made meanwhile on a directory walked already (the walk saw its old content).
  if (MountsChanged()) moved = true;
  // Under the write lock (no shim between its lock and its unlock), with
  // nothing queued since: what came meanwhile is handled unlocked, then again.
  for (int tries = 0; none && !moved && unwatched_ == 0 && tries < 8; ++tries) {
    if (!guard_->LockForProof()) break;  // a shim is making a symlink
    int queued = -1;
    if (ioctl(inotify_fd_, FIONREAD, &queued) == 0 && queued == 0) {
      bool proven = guard_->CommitProof(raises, SymlinkGuard::Clock::now() - t0);  // backs off itself if not
      guard_->UnlockAfterProof();
      if (proven) spdlog::debug("view recorder: the view holds no symlink");
      return;
    }
    guard_->UnlockAfterProof();
    ReadEvents(&moved);
    if (MountsChanged()) moved = true;
  }
  if (walk == Walk::kObstacle && !obstacle_.empty()) {
    // Walking again finds it again: not before an event says it may be gone.
    spdlog::info("view recorder: /{} keeps stat on the confined lookup (cannot prove the view free of symlinks)",
                 obstacle_);
    guard_->ProofBlocked(SymlinkGuard::Clock::now() - t0);
  } else {
    guard_->ProofFailed(SymlinkGuard::Clock::now() - t0);
  }
}

}  // namespace onebox
