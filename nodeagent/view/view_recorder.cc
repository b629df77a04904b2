#include "nodeagent/view/view_recorder.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "consistency/digest.h"
#include "naming/node_identity.h"
#include "naming/ns_key.h"
#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/daemon/thread_name.h"
#include "nodeagent/view/file_look.h"
#include "nodeagent/view/file_xattrs.h"
#include "nodeagent/view/view_fs.h"

namespace onebox {

namespace {

// No IN_MODIFY: one event per write() when two files are written in turn
// would overflow the queue (and cost a full scan) while the loop hashes.
constexpr uint32_t kWatchMask = IN_CREATE | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                IN_DELETE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK;
constexpr std::string_view kSyncMarker = ".onebox-sync-";

v1::FileType TypeOf(mode_t m) {
  if (S_ISREG(m)) return v1::FILE_TYPE_REGULAR;
  if (S_ISDIR(m)) return v1::FILE_TYPE_DIRECTORY;
  if (S_ISLNK(m)) return v1::FILE_TYPE_SYMLINK;
  return v1::FILE_TYPE_OTHER;
}

// Same metadata and, for files and symlinks, the same size and mtime: no new
// version needed. A directory's mtime is each node's own (it moves whenever an
// entry comes or goes there): it is recorded when the directory is, never a
// reason for a new version.
bool SameState(const v1::Inode& a, const v1::Inode& b) {
  return a.type() == b.type() && a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid() &&
         a.size() == b.size() && (a.type() == v1::FILE_TYPE_DIRECTORY || a.mtime_ns() == b.mtime_ns()) &&
         a.symlink_target() == b.symlink_target() && SameXattrs(a, b) && a.link_group() == b.link_group();
}

bool SameChunks(const v1::Inode& a, const v1::Inode& b) {
  return a.chunks_size() == b.chunks_size() && std::equal(a.chunks().begin(), a.chunks().end(), b.chunks().begin());
}

}  // namespace

Result<std::unique_ptr<ViewRecorder>> ViewRecorder::Start(const std::string& view_root, Store& store,
                                                          ViewLedger& ledger, SymlinkGuard* guard,
                                                          std::function<void()> settle, BehindFn behind) {
  int root_fd = open(view_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) return Status::IOError(fmt::format("open view {}: {}", view_root, strerror(errno)));
  int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ino < 0 || wake < 0) {
    Status s = Status::IOError(fmt::format("inotify: {}", strerror(errno)));
    close(root_fd);
    if (ino >= 0) close(ino);
    if (wake >= 0) close(wake);
    return s;
  }
  // The marker by which a shim whose cwd is in the view recognizes the view root.
  int marker = openat(root_fd, kViewMarker, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (marker >= 0) close(marker);
  std::unique_ptr<ViewRecorder> r(
      new ViewRecorder(view_root, root_fd, ino, wake, store, ledger, guard, std::move(settle), std::move(behind)));
  if (guard != nullptr && r->mounts_fd_ < 0)
    spdlog::warn("cannot watch /proc/self/mountinfo ({}): stat keeps the confined lookup", strerror(errno));
  if (store.ChunksMayBeLost()) r->RepairLostChunks();
  r->FullScan();
  r->prehasher_ = std::make_unique<ChunkPrehasher>(root_fd, store);
  r->thread_ = std::thread([p = r.get()] {
    FollowsCatchUp follows;  // it waits behind the placing thread patiently: Sync hurries
    p->Loop();
  });
  NameThread(r->thread_, "onebox-record");
  return r;
}

ViewRecorder::ViewRecorder(std::string view_root, int root_fd, int inotify_fd, int wake_fd, Store& store,
                           ViewLedger& ledger, SymlinkGuard* guard, std::function<void()> settle, BehindFn behind)
    : view_root_(std::move(view_root)),
      root_fd_(root_fd),
      // Readable with POLLPRI after every change of our mount table (a mount in the view voids a proof).
      mounts_fd_(guard ? open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC) : -1),
      inotify_fd_(inotify_fd),
      wake_fd_(wake_fd),
      store_(store),
      ledger_(ledger),
      record_mu_(ledger.view_mutex()),
      guard_(guard),
      settle_(std::move(settle)),
      behind_(std::move(behind)),
      event_buf_(256 * 1024) {}

ViewRecorder::~ViewRecorder() { Stop(); }

void ViewRecorder::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  {
    HurryCatchUp hurry(CatchUpWait::kStop);  // the loop may wait behind the placing thread
    thread_.join();
  }
  prehasher_->Stop();  // after the loop's last record: it stores the chunks records wait for
  if (mounts_fd_ >= 0) close(mounts_fd_);
  close(inotify_fd_);
  close(wake_fd_);
  close(root_fd_);
}

Result<std::string> ViewRecorder::EnsureRoot(const std::string& root) {
  // root is normalized and absolute. Each component is made below the last
  // one's fd, never through a symlink: any local user may ask for any root,
  // and the agent may run as root.
  int dir = OpenBeneath(root_fd_, "", O_PATH | O_DIRECTORY);
  if (dir < 0) return Status::IOError(fmt::format("open the view: {}", strerror(errno)));
  size_t pos = 1;
  while (pos <= root.size()) {
    size_t next = root.find('/', pos);
    if (next == std::string::npos) next = root.size();
    std::string comp = root.substr(pos, next - pos);
    bool last = next == root.size();
    if (mkdirat(dir, comp.c_str(), 0755) != 0 && errno != EEXIST) {
      Status s = Status::IOError(fmt::format("create {} in the view: {}", comp, strerror(errno)));
      close(dir);
      return s;
    }
    int sub = openat(dir, comp.c_str(), (last ? O_RDONLY : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(dir);
    if (sub < 0)
      return Status::FailedPrecondition(fmt::format("{} in the view is not a directory: {}", comp, strerror(errno)));
    dir = sub;
    pos = next + 1;
  }
  // The root itself: every user may create entries, and only remove their own.
  fchmod(dir, 01777);
  close(dir);
  return view_root_;
}

Status ViewRecorder::Sync() {
  uint64_t n;
  {
    std::lock_guard lock(sync_mu_);
    n = ++sync_next_;
  }
  std::string name = fmt::format("{}{}-{}", kSyncMarker, getpid(), n);
  int fd = OpenBeneath(root_fd_, "", O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Status::IOError(fmt::format("sync: {}", strerror(errno)));
  int marker = openat(fd, name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (marker >= 0) close(marker);
  std::unique_lock lock(sync_mu_);
  // The recorder may wait behind the placing thread (the view's lock): hurry it.
  bool done = WaitHurrying(CatchUpWait::kRecorderSync, sync_cv_, lock, std::chrono::seconds(10),
                           [&] { return sync_seen_ >= n; });
  lock.unlock();
  unlinkat(fd, name.c_str(), 0);
  close(fd);
  return done ? Status::Ok() : Status::Unavailable("the view recorder did not catch up within 10 s");
}

std::vector<std::string> ViewRecorder::RecordUnrecorded(const std::string& dir) {
  std::vector<std::string> unrecorded;
  int fd = OpenBeneath(root_fd_, dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return {};
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    close(fd);
    return {};
  }
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == ".." || (dir.empty() && IsAgentEntry(name))) continue;
    std::string key = JoinKey(dir, name);
    Result<Record> rec = store_.GetWithTombstone(key, Cf::kNs);
    if (rec.ok() && !rec->tombstone) continue;
    unrecorded.push_back(std::move(key));
  }
  closedir(d);
  std::vector<std::string> failed;
  for (std::string& key : unrecorded)
    if (Result<uint64_t> size = RecordNow(key); !size.ok()) failed.push_back(std::move(key));
  return failed;
}

int64_t ViewRecorder::RecordLateCreates(int64_t now_ns, bool* recorded) {
  std::vector<std::string> due;
  int64_t next = INT64_MAX;
  {
    std::lock_guard lock(record_mu_);
    for (const auto& [path, ends] : late_creates_) {
      if (ends <= now_ns) due.push_back(path);
      else next = std::min(next, ends);
    }
  }
  for (const std::string& path : due) {
    Follow(path, Change::kCreatedLate);  // (takes it out of late_creates_)
    // Followed again, as after a creation's record (which took what was
    // hashed ahead): a file held open empty may still grow big.
    prehasher_->Written(path);
  }
  if (recorded != nullptr) *recorded = !due.empty();
  return next;
}

void ViewRecorder::Loop() {
  pollfd fds[5] = {{inotify_fd_, POLLIN, 0},
                   {wake_fd_, POLLIN, 0},
                   {guard_ ? guard_->wake_fd() : -1, POLLIN, 0},
                   {mounts_fd_, POLLPRI, 0},
                   {prehasher_->idle_fd(), POLLIN, 0}};
  ReadEvents();  // what came while the start's scan ran
  bool rest_found_nothing = false;
  for (;;) {
    // Files made empty whose grace ended: recorded before the wait, which
    // the symlink guard takes for the recorder caught up, and so are the
    // events that came meanwhile.
    bool recorded_late = false;
    const int64_t next_late = RecordLateCreates(CoarseMonotonicNs(), &recorded_late);
    if (recorded_late) ReadEvents();
    // Every event read (the last ReadEvents met an empty queue): a proof may begin.
    SymlinkGuard::Plan plan = guard_ ? guard_->PlanProof() : SymlinkGuard::Plan{};
    if (plan.walk && unwatched_ == 0 && mounts_fd_ >= 0) {
      TryProof(plan.raises);
      continue;
    }
    // While peers' files are being placed, a rest away from the inotify
    // queue (the other descriptors are waited on as ever), then what came,
    // in one round (kRestWhilePlacingNs). Otherwise a wait for the first
    // event, caught up while we wait and (nearly) as of the moment it wakes us.
    const bool resting = !rest_found_nothing && CoarseMonotonicNs() - ledger_.LastPlacedNs() < kRestWhilePlacingNs;
    int timeout_ms = plan.timeout_ms;
    if (resting) timeout_ms = timeout_ms < 0 ? kRestMs : std::min(timeout_ms, kRestMs);
    if (next_late != INT64_MAX) {
      const int64_t ms = std::max<int64_t>(1, (next_late - CoarseMonotonicNs() + 999'999) / 1'000'000);
      timeout_ms = timeout_ms < 0 ? static_cast<int>(ms) : std::min(timeout_ms, static_cast<int>(ms));
    }
    if (guard_ && !resting) guard_->RecorderWaiting();
    int ready = resting ? poll(fds + 1, 4, timeout_ms) : poll(fds, 5, timeout_ms);
    if (guard_ && !resting) guard_->RecorderCaughtUp(CoarseMonotonicNs());
    if (ready < 0) {
      if (errno == EINTR) continue;
      spdlog::error("view recorder: poll: {}", strerror(errno));
      break;
    }
    if (fds[1].revents & POLLIN) break;
    if (fds[2].revents & POLLIN) guard_->ClearWake();
    if (fds[3].revents & (POLLPRI | POLLERR)) OnMountsChanged();
    if (fds[4].revents & POLLIN)
      for (const std::string& path : prehasher_->TakeIdle()) Follow(path, Change::kContentChanged);
    rest_found_nothing = !ReadEvents() && resting;
  }
  if (guard_) guard_->RecorderCaughtUp(0);  // no longer following the view: never caught up again
}

bool ViewRecorder::ReadEvents(bool* moved) {
  // (A move's two events are read in one round: the kernel queues the
  // second right after the first, and the round reads until none is left.)
  ledger_.HoldStubCount();
  struct Release {
    ViewLedger& ledger;
    ~Release() { ledger.ReleaseStubCount(); }
  } release{ledger_};
  bool read_any = false;
  for (;;) {
    int64_t now = CoarseMonotonicNs();
    ssize_t n = read(inotify_fd_, event_buf_.data(), event_buf_.size());
    if (n < 0 && errno == EAGAIN && guard_) guard_->RecorderCaughtUp(now);  // the queue was empty
    if (n <= 0) break;
    read_any = true;
    HandleEvents(event_buf_.data(), static_cast<size_t>(n), moved);
    // A read that left room for the longest event took all that was queued.
    if (guard_ && event_buf_.size() - static_cast<size_t>(n) >= sizeof(inotify_event) + NAME_MAX + 1)
      guard_->RecorderCaughtUp(now);
  }
  return read_any;
}

std::vector<bool> CoveredByAClose(const std::vector<const inotify_event*>& events) {
  std::vector<bool> covered(events.size(), false);
  std::map<std::pair<int, std::string_view>, std::vector<size_t>> by_name;
  for (size_t i = 0; i < events.size(); ++i)
    if (events[i]->len > 0 && !(events[i]->mask & IN_ISDIR)) by_name[{events[i]->wd, events[i]->name}].push_back(i);
  constexpr uint32_t kNewIncarnation = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;
  for (const auto& [name, indexes] : by_name) {
    // Runs of one incarnation of the name: each starts at a create or move in, ends before the next.
    for (size_t begin = 0; begin < indexes.size();) {
      size_t end = begin + 1;
      while (end < indexes.size() && !(events[indexes[end]]->mask & kNewIncarnation)) ++end;
      // A removal or move out ends the incarnation; it is no part of the run.
      bool closed = false;
      for (size_t k = begin; k < end; ++k) closed |= (events[indexes[k]]->mask & IN_CLOSE_WRITE) != 0;
      if (closed)
        for (size_t k = begin; k < end; ++k)
          if (events[indexes[k]]->mask & (IN_CREATE | IN_ATTRIB) &&
              !(events[indexes[k]]->mask & (IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE)))
            covered[indexes[k]] = true;
      begin = end;
    }
  }
  return covered;
}

bool ViewRecorder::IsSyncMarker(const inotify_event& ev) const {
  if (ev.len == 0 || std::string_view(ev.name).substr(0, kSyncMarker.size()) != kSyncMarker) return false;
  const std::string* dir = watched_.Find(ev.wd);
  return dir != nullptr && dir->empty();  // in the view root
}

void ViewRecorder::HandleEvents(const char* buf, size_t len, bool* moved) {
  std::vector<const inotify_event*> events;
  bool overflowed = false;
  for (size_t off = 0; off < len;) {
    const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
    off += sizeof(inotify_event) + ev->len;
    overflowed |= (ev->mask & IN_Q_OVERFLOW) != 0;
    events.push_back(ev);
  }
  // (After an overflow the rescan records everything: nothing to spare.)
  // A sync marker is a barrier: Sync() returns once the events before it
  // are handled, so none of those is left to a close that comes after it.
  std::vector<bool> covered(events.size(), false);
  for (size_t begin = 0, i = 0; !overflowed && i <= events.size(); ++i) {
    if (i < events.size() && !IsSyncMarker(*events[i])) continue;
    std::vector<bool> part = CoveredByAClose({events.begin() + static_cast<std::ptrdiff_t>(begin),
                                              events.begin() + static_cast<std::ptrdiff_t>(i)});
    std::copy(part.begin(), part.end(), covered.begin() + static_cast<std::ptrdiff_t>(begin));
    begin = i + 1;
  }
  for (size_t i = 0; i < events.size(); ++i) {
    const inotify_event* ev = events[i];
    if (ev->mask & IN_Q_OVERFLOW) {
      spdlog::warn("view recorder: inotify queue overflowed; rescanning the view");
      if (moved) *moved = true;
      if (guard_) guard_->Unprove();  // a symlink's creation may be among the events lost
      FullScan();
      continue;
    }
    if (ev->mask & IN_IGNORED) {
      watched_.Forget(ev->wd);
      continue;
    }
    const std::string* watched = watched_.Find(ev->wd);
    // A change in a directory no longer watched (it moved or went, and the
    // event that said so came first) is not recorded, but may void a proof.
    if (moved && watched == nullptr && (ev->mask & (IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO))) *moved = true;
    if (watched == nullptr || ev->len == 0) continue;  // an unwatched dir, or about the dir itself
    const std::string dir = *watched;
    std::string_view name(ev->name);
    if (IsSyncMarker(*ev)) {
      uint64_t n = 0;
      std::string_view digits = name.substr(name.rfind('-') + 1);
      // Only our own markers are named so; a stray one is not a sync.
      if ((ev->mask & IN_CREATE) &&
          std::from_chars(digits.data(), digits.data() + digits.size(), n).ec == std::errc()) {
        RecordLateCreates(INT64_MAX);  // files made before the Sync: recorded before it returns
        std::lock_guard lock(sync_mu_);
        sync_seen_ = std::max(sync_seen_, n);
        sync_cv_.notify_all();
      }
      continue;
    }
    if (dir.empty() && IsAgentEntry(name)) continue;
    if (moved && (ev->mask & (IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO))) *moved = true;
    HandleEvent(JoinKey(dir, name), ev->mask, covered[i]);
  }
}

void ViewRecorder::HandleEvent(const std::string& path, uint32_t mask, bool covered) {
  // The obstacle to the last proof, or a directory above it, was removed,
  // moved or changed its mode or owner: worth another walk.
  if (!obstacle_.empty() && (mask & (IN_ATTRIB | IN_DELETE | IN_MOVED_FROM)) &&
      (obstacle_ == path || obstacle_.compare(0, path.size() + 1, path + "/") == 0))
    ObstacleMayBeGone();
  if (mask & (IN_DELETE | IN_MOVED_FROM)) {
    if (mask & IN_ISDIR) Unwatch(path);
    // The materializer's own removal (a peer's tombstone, in the store
    // already): nothing to record. Its event may come after the peer made
    // the name again (git's index.lock), and must not remove that.
    if ((mask & IN_DELETE) && ledger_.TakeOurRemoval(path)) {
      // Its inode number may be another file's soon. (Unless the name holds
      // a file noted since: made again at once, and recorded.)
      std::lock_guard lock(record_mu_);
      if (auto known = inode_of_name_.find(path); known != inode_of_name_.end())
        if (struct stat at; fstatat(root_fd_, path.c_str(), &at, AT_SYMLINK_NOFOLLOW) != 0 || at.st_ino != known->second)
          ForgetName(path);
      return;
    }
    // A file made again under the name and recorded since (SQLite's
    // journal: removed at one commit, made and fsync'ed at the next before
    // this event is read): the record is the new file's, and a tombstone
    // now would undo what fsync's RecordNow made durable. (A file made
    // again and not recorded yet is removed from the store until its own
    // events record it, so peers never read the old one under its name.)
    std::lock_guard lock(record_mu_);
    late_creates_.erase(path);  // made empty and gone at once: never recorded
    if (!(mask & IN_ISDIR) && RecordedSince(path)) return;
    TombstonePath(path);
  } else if ((mask & (IN_CREATE | IN_MOVED_TO)) && (mask & IN_ISDIR)) {
    WatchTree(path, nullptr);  // a new or moved-in directory: everything below it too
  } else if (covered) {
    ++covered_events_;  // recorded by its close in the same read
  } else if (mask & IN_CREATE) {
    Follow(path, Change::kCreated);
    // Followed from now on (after its record, which takes what was hashed
    // ahead): if it grows big before its close, its chunks are hashed meanwhile.
    prehasher_->Written(path);
  } else if (mask & IN_CLOSE_WRITE) {
    Follow(path, Change::kWritten);
  } else if (mask & IN_MOVED_TO) {
    Follow(path, Change::kContentChanged);
  } else if (mask & IN_ATTRIB) {
    Follow(path, Change::kMetadata, /*attributes_only=*/true);
  }
}

void ViewRecorder::WatchTree(const std::string& dir, std::unordered_map<std::string, bool>* seen) {
  int fd = OpenBeneath(root_fd_, dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // gone already, or replaced by a symlink: its own events say so
  // Watch first, then list: an entry made in between shows up in both, never
  // in neither. The watch goes on the directory we opened (its /proc link),
  // not on a path someone could swap for a symlink meanwhile.
  int wd = inotify_add_watch(inotify_fd_, ProcPath(fd).c_str(), kWatchMask & ~IN_DONT_FOLLOW);
  if (wd >= 0) {
    watched_.Add(wd, dir);
  } else {
    ++unwatched_;  // moves below it go unseen: no symlink-free proof until a rescan
    spdlog::warn("view recorder: cannot watch /{}: {} (raise fs.inotify.max_user_watches?)", dir, strerror(errno));
  }
  if (!dir.empty()) {
    Follow(dir, Change::kMetadata);
    if (seen) (*seen)[dir] = true;
  }
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    close(fd);
    return;
  }
  std::vector<std::pair<std::string, bool>> children;
  while (dirent* e = readdir(d)) {
    std::string_view name(e->d_name);
    if (name == "." || name == ".." || (dir.empty() && IsAgentEntry(name))) continue;
    children.emplace_back(std::string(name), e->d_type == DT_DIR);
  }
  closedir(d);
  for (auto& [name, is_dir] : children) {
    std::string path = JoinKey(dir, name);
    if (is_dir) {
      WatchTree(path, seen);
    } else {
      Follow(path, Change::kMetadata);
      if (seen) (*seen)[path] = true;
    }
  }
}

void ViewRecorder::Unwatch(const std::string& dir) {
  for (int wd : watched_.TakeTree(dir)) inotify_rm_watch(inotify_fd_, wd);
}

Result<uint64_t> ViewRecorder::RecordNow(const std::string& path) {
  if (!IsValidNsKey(path)) return Status::InvalidArgument(fmt::format("'{}' is not a path below the view root", path));
  Result<uint64_t> size = RecordPath(path, Change::kFsync);
  if (!size.ok()) return Status::IOError(fmt::format("could not record {}: {}", path, size.status().message()));
  return size;
}

Status ViewRecorder::RecordIfWritten(const std::string& path) {
  if (!IsValidNsKey(path)) return Status::InvalidArgument(fmt::format("'{}' is not a path below the view root", path));
  Result<uint64_t> size = RecordPath(path, Change::kUnlocked);
  return size.ok() || size.status().code() == Code::kUnavailable ? Status::Ok() : size.status();
}

void ViewRecorder::Follow(const std::string& path, Change change, bool attributes_only) {
  if (path.size() >= PATH_MAX) {  // made through a relative path: no call takes its name from the view root
    spdlog::warn("view recorder: /{}... ({} bytes) not recorded: a name longer than PATH_MAX stays on this node",
                 path.substr(0, 64), path.size());
    return;
  }
  Result<uint64_t> recorded = RecordPath(path, change, attributes_only);
  Code code = recorded.status().code();
  if (!recorded.ok() && code != Code::kNotFound && code != Code::kUnavailable)
    spdlog::debug("view recorder: /{} not recorded now: {}", path, recorded.status().message());
}

void ViewRecorder::RecordOtherNamesOf(const std::string& path, ino_t ino, const std::string& group) {
  // Only names whose records share the link group: an inode number outlives
  // its file (a name the materializer removed, its number taken by a file
  // placed since), and a reader node must never record a peer's file as its own.
  std::vector<std::string> others;
  if (auto names = names_of_inode_.find(ino); names != names_of_inode_.end())
    for (const std::string& name : names->second)
      if (struct stat at; name != path && fstatat(root_fd_, name.c_str(), &at, AT_SYMLINK_NOFOLLOW) == 0 &&
                          at.st_ino == ino && S_ISREG(at.st_mode))
        if (std::optional<v1::Inode> other = RecordOf(name); other && other->link_group() == group)
          others.push_back(name);
  // Each hashed: the record of the name the change came through may be older than the file.
  const LinkedTo to{ino, group, std::nullopt};
  for (const std::string& other : others) (void)RecordPath(other, Change::kLinked, false, &to);
}

std::optional<std::string> ViewRecorder::HeldSymlinkTarget(const std::string& path, const struct stat& st) {
  std::optional<v1::Inode> old = RecordOf(path);
  if (!old || old->type() != v1::FILE_TYPE_SYMLINK || old->symlink_target().size() != static_cast<size_t>(st.st_size))
    return std::nullopt;
  return old->symlink_target();
}

v1::Inode ViewRecorder::InodeOf(int fd, const struct stat& st, const std::string* known_target,
                                const v1::Inode* held_xattrs, FileMarks* marks) {
  v1::Inode inode;
  inode.set_type(TypeOf(st.st_mode));
  inode.set_mode(st.st_mode & 07777);
  inode.set_uid(st.st_uid);
  inode.set_gid(st.st_gid);
  inode.set_mtime_ns(MtimeNs(st));
  if (S_ISREG(st.st_mode)) inode.set_size(static_cast<uint64_t>(st.st_size));
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))  // (a symlink keeps none: nothing to list)
    ReadXattrs(fd, &inode, held_xattrs, marks != nullptr ? marks->Names() : std::nullopt);
  if (S_ISLNK(st.st_mode) && known_target != nullptr) {
    inode.set_symlink_target(*known_target);
  } else if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = readlinkat(fd, "", target, sizeof target);
    if (n > 0) inode.set_symlink_target(std::string(target, static_cast<size_t>(n)));
  }
  return inode;
}

Result<uint64_t> ViewRecorder::RecordPath(const std::string& path, Change change, bool attributes_only,
                                          const LinkedTo* linked) {
  std::lock_guard lock(record_mu_);  // the loop thread and fsync's RecordNow
  // A file made empty within its grace: an attribute change (tar's, git's
  // chmod) goes with its record; anything else records it now.
  if (auto late = late_creates_.find(path); late != late_creates_.end()) {
    if (change == Change::kMetadata && attributes_only) return Status::Unavailable("recorded with its creation");
    late_creates_.erase(late);
  }
  // A change a program made through the name, to the file it held then.
  const bool through_the_name =
      change == Change::kWritten || change == Change::kUnlocked || (change == Change::kMetadata && attributes_only);
  // The entry itself, reached without following any symlink on the way.
  int fd = OpenBeneath(root_fd_, path, O_PATH);
  if (fd < 0) {
    if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP)
      return Status::IOError(fmt::format("open /{}: {}", path, strerror(errno)));
    // Gone already. A removal is recorded from what the view says, never on
    // a program's word (fsync's Publish names any path it likes). An entry
    // made, written or changed in its attributes and gone by the time its
    // event is handled has its removal's own event to come (IN_DELETE,
    // IN_MOVED_FROM): recorded then, not now, when the name may already
    // hold a peer's newer version not in place yet (git's index.lock, made
    // again at once), or the removal was the materializer's (the attributes
    // it set on a directory it placed, then removed for a peer's
    // tombstone). What no event will report gone (a listing's entries
    // under a mount taken away) is recorded gone here (after the look
    // below, which needs the name).
    // A name of a file of several names, written or chmod'ed through and
    // gone: the file's other names hold that write or that attribute.
    std::optional<v1::Inode> gone;
    if (auto known = inode_of_name_.find(path); known != inode_of_name_.end() && through_the_name &&
                                                (gone = RecordOf(path)) && !gone->link_group().empty())
      RecordOtherNamesOf(path, known->second, gone->link_group());
    if (change == Change::kMetadata && !attributes_only) TombstonePath(path);
    return Status::NotFound(fmt::format("/{} is not in the view", path));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    Status s = Status::IOError(fmt::format("stat /{}: {}", path, strerror(errno)));
    close(fd);
    return s;
  }
  // The same for a name that a program's rename put another file at since:
  // the change was the replaced file's. Not after the materializer put a
  // peer's version there (the event may be of this node's own making, and
  // a reader node must never record a peer's file as its own), nor for an
  // unlock, which comes from the lock calls, out of the events' order (the
  // name's inode known here may be older than the file unlocked).
  if (through_the_name && change != Change::kUnlocked)
    if (auto known = inode_of_name_.find(path); known != inode_of_name_.end() && known->second != st.st_ino &&
                                                !ledger_.PlacedAndUnchanged(path, st))
      if (std::optional<v1::Inode> was = RecordOf(path); was && !was->link_group().empty())
        RecordOtherNamesOf(path, known->second, was->link_group());
  NoteSymlink(path, S_ISLNK(st.st_mode));
  if (S_ISREG(st.st_mode)) NoteName(path, st.st_ino);
  // Another name's change, taken for this one: only while the name is
  // still that file. The materializer may have put another there since it
  // was seen (a peer's version, placed whole before its other names are
  // linked to it): that one is the peer's, and recording it here would
  // make it this node's. Nor over a peer's newer version of this name that
  // is still on its way into the view (placing it links it). (This node's
  // own versions are never on their way: the ledger may not know the last
  // one, when the file changed again at once.)
  if (change == Change::kLinked) {
    if (linked == nullptr || st.st_ino != linked->ino) {
      close(fd);
      return Status::Unavailable(fmt::format("/{} is another file now", path));
    }
    if (Result<Record> held = store_.Get(path, Cf::kNs); held.ok() && held->version.node != store_.node_id() &&
                                                          ledger_.ShowedOlderVersion(path, held->version)) {
      close(fd);
      return Status::Unavailable(fmt::format("a newer version of /{} is on its way into the view", path));
    }
  }
  const uint64_t size = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
  // Made with content already, by one name: a program writing it, whose close
  // records it (hashing it now would read a file still growing), or a link
  // that lost its first name, which no close will report.
  if ((change == Change::kCreated || change == Change::kCreatedLate) && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
      st.st_size > 0) {
    // A link to a stub whose first name went already: a stub, and counted
    // as one (its first name's removal took the count).
    if (ledger_.MayHoldStubs() && ViewLedger::IsStub(fd)) ledger_.SetStub(path, true);
    close(fd);
    prehasher_->RecordWhenIdle(path);
    return Status::Unavailable("recorded at its close, or once idle");
  }
  // Made empty just now: recorded at its close if that comes soon, not at
  // all if it goes as soon (kCreateGraceNs).
  if (change == Change::kCreated && S_ISREG(st.st_mode) && st.st_nlink == 1) {
    close(fd);
    late_creates_[path] = CoarseMonotonicNs() + kCreateGraceNs;
    return Status::Unavailable("recorded at its close, or once its grace ends");
  }
  // A peer's version, put here as recorded: nothing new. (fsync's record is
  // always written: it must be synced; a file a program wrote is hashed, and
  // recorded if its bytes are not the record's.)
  FileMarks marks(fd);
  // A stub's mark taken off by the shim as a program opened it to overwrite
  // it (O_TRUNC): the program's write has begun, and its close records it.
  // Recorded now, the file would reach peers empty, mid-write. (A stub
  // whose mark went otherwise, still as recorded, is recorded as ever.)
  if (attributes_only && S_ISREG(st.st_mode) && marks.NoStubMark() && ledger_.ForgetStub(path) &&
      !AsRecorded(path, st)) {
    close(fd);
    return Status::Unavailable("a stub opened to be overwritten is recorded at its close");
  }
  if (change != Change::kFsync && change != Change::kWritten && change != Change::kUnlocked &&
      change != Change::kLinked && ledger_.IsOurs(path, marks, st, change != Change::kMetadata, attributes_only)) {
    close(fd);
    return size;
  }
  // The close of the materializer's own write in place (a file programs
  // lock): recording it would make a peer's version this node's, newer than
  // the one it may hold by now.
  if (change == Change::kWritten && ledger_.WrittenInPlaceByUs(path, st)) {
    close(fd);
    return size;
  }
  std::optional<std::string> target =
      S_ISLNK(st.st_mode) && attributes_only ? HeldSymlinkTarget(path, st) : std::nullopt;
  // What an agent that is not root cannot read of the entry's attributes stays as recorded.
  std::optional<v1::Inode> held;
  if (AgentUid() != 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) held = RecordOf(path);
  v1::Inode inode = InodeOf(fd, st, target ? &*target : nullptr, held ? &*held : nullptr, &marks);
  // A stub moved, linked, touched or chmod'ed: it holds no content to hash,
  // its mark names the content.
  std::optional<v1::Inode> stub = S_ISREG(st.st_mode) ? ledger_.StubContent(marks) : std::nullopt;
  // Written by a program and unmarked: no stub any more (what the ledger
  // learns from the mark's removal, whose IN_ATTRIB a close may cover). A
  // mark the agent may not read is no proof of none: it stays counted.
  if ((change == Change::kWritten || change == Change::kUnlocked || change == Change::kLinked) && !stub &&
      marks.NoStubMark())
    ledger_.SetStub(path, false);
  std::optional<Version> shown = S_ISREG(st.st_mode) ? ledger_.ContentShown(path, marks, st) : std::nullopt;
  close(fd);
  Known known{.stub = std::move(stub),
              .shown = shown,
              .same_file = linked && linked->content ? &*linked->content : nullptr};
  if (!S_ISREG(st.st_mode) || st.st_nlink < 2) return WriteRecord(path, st, std::move(inode), known, change);
  // A hard link: every name of the file is recorded with the same group, and
  // with what this name shows.
  if (change == Change::kLinked && !linked->group.empty()) {
    inode.set_link_group(linked->group);
    return WriteRecord(path, st, std::move(inode), known, change);
  }
  Names names = NamesOf(path, st);
  inode.set_link_group(names.group);
  v1::Inode content;
  Result<uint64_t> recorded = WriteRecord(path, st, std::move(inode), known, change, &content);
  // (Also when this name could not be recorded: gone before its content
  // was read, say, the others hold what was written through it.)
  if (change == Change::kLinked) return recorded;
  LinkedTo to{st.st_ino, names.group, recorded.ok() ? std::optional<v1::Inode>(std::move(content)) : std::nullopt};
  // The file may change while its names are recorded (a chmod through
  // another name, whose own event then finds that name as recorded and
  // stops there): until it holds still, every name is recorded again.
  struct stat seen = st;
  for (int round = 0; round < 3; ++round) {
    for (const std::string& other : names.others) {
      Result<uint64_t> r = RecordPath(other, Change::kLinked, false, &to);
      if (!r.ok() && r.status().code() != Code::kNotFound)
        spdlog::debug("view recorder: /{}, a name of /{}, not recorded now: {}", other, path, r.status().message());
    }
    struct stat now;
    if (fstatat(root_fd_, path.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != st.st_ino ||
        (FileLook::Of(now).SameButCtime(FileLook::Of(seen)) && Ns(now.st_ctim) == Ns(seen.st_ctim)))
      break;
    seen = now;
    to.content.reset();  // it changed: every name hashed again
    (void)RecordPath(path, Change::kLinked, false, &to);
  }
  return recorded;
}

std::optional<v1::Inode> ViewRecorder::RecordOf(const std::string& path) {
  Result<Record> rec = store_.Get(path, Cf::kNs);
  v1::Inode inode;
  if (!rec.ok() || !inode.ParseFromString(rec->value)) return std::nullopt;
  return inode;
}

bool ViewRecorder::AsRecorded(const std::string& path, const struct stat& st) {
  std::optional<v1::Inode> held = RecordOf(path);
  return held && ShowsVersion(st, *held);
}

ViewRecorder::Names ViewRecorder::NamesOf(const std::string& path, const struct stat& st) {
  Names names;
  std::set<std::string> candidates;
  if (auto seen = names_of_inode_.find(st.st_ino); seen != names_of_inode_.end()) candidates = seen->second;
  for (std::string& name : ledger_.NamesLastSeenAs(st.st_ino)) candidates.insert(std::move(name));
  for (const std::string& name : candidates) {
    struct stat now;
    // Still this file (the looks are older).
    if (fstatat(root_fd_, name.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != st.st_ino ||
        now.st_dev != st.st_dev) {
      if (auto known = inode_of_name_.find(name); known != inode_of_name_.end() && known->second == st.st_ino)
        ForgetName(name);
      continue;
    }
    NoteName(name, st.st_ino);
    v1::Inode held;
    if (Result<Record> rec = store_.Get(name, Cf::kNs); rec.ok() && held.ParseFromString(rec->value) &&
        !held.link_group().empty() && (names.group.empty() || held.link_group() < names.group))
      names.group = held.link_group();
    if (name != path) names.others.push_back(name);
  }
  if (names.group.empty()) names.group = fmt::format("{}.{}", NodeIdHex(store_.node_id()), store_.clock().Now());
  return names;
}

Status ViewRecorder::FillContent(const std::string& path, Change change, const std::optional<v1::Inode>& stub,
                                 const v1::Inode* held, v1::Inode* inode, Deferred* deferred) {
  if (inode->type() != v1::FILE_TYPE_REGULAR) return Status::Ok();
  if (stub) {
    if (stub->size() != inode->size()) {
      spdlog::warn("view recorder: the stub at /{} changed size without its content; not recorded", path);
      return Status::FailedPrecondition(fmt::format("the stub at /{} changed size without its content", path));
    }
    *inode->mutable_chunks() = stub->chunks();
    return Status::Ok();
  }
  bool same_content = held != nullptr && held->type() == v1::FILE_TYPE_REGULAR && held->size() == inode->size() &&
                      held->mtime_ns() == inode->mtime_ns();
  if (same_content && (change == Change::kMetadata || change == Change::kLinked)) {
    *inode->mutable_chunks() = held->chunks();
    return Status::Ok();
  }
  // Vanished or unreadable meanwhile: its own events follow.
  if (change == Change::kFsync) return HashContent(path, inode, Store::ChunkDurability::kBySyncedWrite);
  Status hashed = HashContent(path, inode, Store::ChunkDurability::kEventually, deferred);
  // Closed, unreadable here (an agent that is not root, a chmod 000), and
  // alike in size and mtime to the record: its attributes are recorded with
  // the record's content, as its IN_ATTRIB, which the close may have
  // covered, would have recorded them.
  if (!hashed.ok() && (change == Change::kWritten || change == Change::kUnlocked) && same_content) {
    *inode->mutable_chunks() = held->chunks();
    return Status::Ok();
  }
  return hashed;
}

Result<uint64_t> ViewRecorder::WriteRecord(const std::string& path, const struct stat& st, v1::Inode inode,
                                           const Known& known, Change change, v1::Inode* content_out) {
  // Chunks hashed while the file was written and not stored yet: stored
  // after the record, whatever happens to it (the hold keeps the crash mark).
  Deferred deferred;
  struct KeepAfter {
    ViewRecorder* r;
    const std::string& path;
    ino_t ino;
    Deferred& chunks;
    bool held = false;
    ~KeepAfter() {
      if (chunks.empty()) return;
      // Not taken before the record: taken now, so that the release comes in pairs.
      if (!held) (void)r->store_.HoldChunkMark();
      r->prehasher_->Keep(path, ino, std::move(chunks));
    }
  } keep_after{this, path, st.st_ino, deferred};
  Result<Record> held = store_.Get(path, Cf::kNs);
  v1::Inode old;
  bool have_old = held.ok() && old.ParseFromString(held->value);
  // The held record's content may stand for the file's (same size and mtime)
  // only when it is this node's own, or the ledger knows the file shows it:
  // a peer's version that tied with ours may be alike in both. For a name
  // recorded for another name's change, only that name's content, found
  // just now, stands for it (LinkedTo::content).
  bool trust_held = have_old && (held->version.node == store_.node_id() || known.shown == held->version);
  const v1::Inode* content_of = change == Change::kLinked ? known.same_file : trust_held ? &old : nullptr;
  if (Status s = FillContent(path, change, known.stub, content_of, &inode, &deferred); !s.ok()) return s;
  if (content_out != nullptr) *content_out = inode;  // what the file holds, recorded now or already
  if (have_old && SameState(old, inode) && SameChunks(old, inode) && change != Change::kFsync) {
    LedgerRecorded(path, st, held->version);
    return inode.size();
  }
  // Unchanged, but this node's own version that a peer's beat (a tie the
  // view lost, and a stop before it was replaced): nothing new to record.
  // The view audit puts the winner in place. (A file a program set back to
  // a version another node wrote is a change of its own, and recorded.)
  // So too for a close or an unlock of a file untouched since this node
  // recorded it, while a peer's newer version is on its way into the view:
  // the close of the materializer's own write in place, handled after a
  // program here wrote, recorded and unlocked its next version, and a
  // peer's after that arrived (recorded again, this node's older bytes
  // would beat the peer's and lose its write). Only the very version the
  // ledger saw recorded, with the look it left: a program's write since
  // (a cp -p back to an older version, too) moves the ctime, and is newer.
  // (An attribute event of a file this run has not seen: after a restart.)
  std::optional<Version> untouched;
  if ((change == Change::kWritten || change == Change::kUnlocked || change == Change::kMetadata) && have_old &&
      held->version.node != store_.node_id() && ledger_.ShowedOlderVersion(path, held->version))
    untouched = ledger_.UntouchedSinceRecorded(path, st);
  const bool after_restart = change == Change::kMetadata && !ledger_.SeenInView(path);
  if (have_old && held->version.node != store_.node_id() && (after_restart || untouched))
    if (std::optional<Version> older = EarlierVersionShown(path, inode, untouched ? &*untouched : nullptr)) {
      LedgerRecorded(path, st, *older);
      if (behind_) behind_(path);
      spdlog::debug("not recorded /{} (change {}): it shows version {} as recorded, and a newer one is held", path,
                    static_cast<int>(change), older->hlc);
      return inode.size();
    }
  if (!deferred.empty()) {
    if (Status h = store_.HoldChunkMark(); !h.ok())
      spdlog::error("view recorder: cannot mark chunks of {} as unstored: {}", path, h.ToString());
    keep_after.held = true;  // (a failed hold is released all the same)
  }
  Result<Version> v = store_.Put(path, inode.SerializeAsString(), change == Change::kFsync, Cf::kNs);
  if (!v.ok()) {
    spdlog::error("view recorder: cannot record {}: {}", path, v.status().ToString());
    return v.status();
  }
  LedgerRecorded(path, st, *v);
  spdlog::debug("recorded /{} ({} bytes, {} chunks, {} extended attributes, mode {:o}; change {}; version {})", path,
                inode.size(), inode.chunks_size(), inode.xattrs_size(), inode.mode(), static_cast<int>(change), v->hlc);
  return inode.size();
}

void ViewRecorder::LedgerRecorded(const std::string& path, const struct stat& st, const Version& version) {
  // What the entry shows, if it did not change while we looked.
  struct stat now;
  if (fstatat(root_fd_, path.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 && FileLook::Of(now).Unchanged(FileLook::Of(st)))
    ledger_.Recorded(path, st, version);
  else
    ledger_.RecordedButChanged(path, version);
}

std::optional<Version> ViewRecorder::EarlierVersionShown(const std::string& path, const v1::Inode& inode,
                                                         const Version* only) {
  Result<std::vector<Record>> history = store_.History(path);
  if (!history.ok()) return std::nullopt;
  for (const Record& rec : *history) {
    v1::Inode was;
    if ((only != nullptr ? rec.version == *only : rec.version.node == store_.node_id()) && !rec.tombstone &&
        was.ParseFromString(rec.value) &&
        SameState(was, inode) && SameChunks(was, inode))
      return rec.version;
  }
  return std::nullopt;
}

void ViewRecorder::NoteName(const std::string& path, ino_t ino) {
  auto [known, added] = inode_of_name_.try_emplace(path, ino);
  if (!added && known->second != ino) {
    ForgetName(path);
    inode_of_name_.emplace(path, ino);
  }
  names_of_inode_[ino].insert(path);
}

void ViewRecorder::ForgetName(const std::string& path) {
  auto known = inode_of_name_.find(path);
  if (known == inode_of_name_.end()) return;
  auto names = names_of_inode_.find(known->second);
  if (names != names_of_inode_.end() && names->second.erase(path) && names->second.empty()) names_of_inode_.erase(names);
  inode_of_name_.erase(known);
}

bool ViewRecorder::RecordedSince(const std::string& path) {
  // The inode number alone does not tell: a file made at once after a
  // removal often takes the removed one's. Its size and mtime as recorded
  // do (short of a write of the same size in the same clock tick, which
  // its own close records anyway).
  auto known = inode_of_name_.find(path);
  if (known == inode_of_name_.end()) return false;
  int fd = OpenBeneath(root_fd_, path, O_PATH);
  if (fd < 0) return false;
  struct stat st;
  const bool looked = fstat(fd, &st) == 0;
  close(fd);
  if (!looked || !S_ISREG(st.st_mode) || st.st_ino != known->second) return false;
  std::optional<v1::Inode> rec = RecordOf(path);
  return rec && rec->type() == v1::FILE_TYPE_REGULAR && rec->size() == static_cast<uint64_t>(st.st_size) &&
         rec->mtime_ns() == MtimeNs(st);
}

void ViewRecorder::TombstonePath(const std::string& path) {
  std::lock_guard lock(record_mu_);
  ForgetSymlinks(path);
  std::vector<std::string> keys;
  // The removal seen is of what the view showed. A peer's version newer than
  // what the view is known to have shown, arrived meanwhile (not placed
  // yet), was removed by no program here: it stays, and the materializer
  // puts it in place. (Its removal's event can
  // come after the record: the materializer removed the older version, and
  // the peer made the name again at once, as git does with index.lock.)
  if (Result<Record> rec = store_.Get(path, Cf::kNs);
      !rec.ok() || rec->version.node == store_.node_id() || !ledger_.ShowedOlderVersion(path, rec->version))
    keys.push_back(path);
  std::string after;
  for (;;) {  // everything below a removed directory goes with it
    Result<ScanPage> page = store_.Scan(path + "/", after, StoreLimits::kMaxScanLimit, true, Cf::kNs);
    if (!page.ok()) break;
    for (auto& e : page->entries) {
      // Not a peer's addition that this view never showed (it arrived, and
      // was not yet put in place): no program here removed it. It stays,
      // and TreeRepair revives the directory for it (an addition wins).
      if (e.record.version.node != store_.node_id() && !ledger_.SeenInView(e.key)) continue;
      // Made under the directory made again since, and recorded (an fsync
      // in `rm -rf out; mkdir out`): not what was removed.
      if (RecordedSince(e.key)) continue;
      keys.push_back(e.key);
    }
    if (!page->more) break;
    after = page->entries.back().key;
  }
  ledger_.Gone(path);
  for (const std::string& key : keys) ForgetName(key);
  // Deepest first, the directory last (reverse key order puts every entry
  // before the directories above it): a peer that has a directory's tombstone
  // has those of the entries its remover knew of (TreeRepair relies on it).
  for (auto k = keys.rbegin(); k != keys.rend(); ++k) {
    bool existed = false;
    // A failed write leaves the record live: the next full scan tombstones it.
    Result<Record> live = store_.Get(*k, Cf::kNs);
    if (!live.ok()) continue;
    if (live->version.node != store_.node_id())
      spdlog::debug("removed /{} here: a peer's version the view showed ({})", *k, NodeIdHex(live->version.node));
    (void)store_.Delete(*k, false, &existed, Cf::kNs);
  }
}

void ViewRecorder::FullScan() {
  unwatched_ = 0;
  ledger_.ForgetOurRemovals();
  ObstacleMayBeGone();  // events were lost: any may have been the one
  if (guard_ != nullptr) {  // counted anew as the scan records them
    std::lock_guard lock(record_mu_);
    symlinks_.clear();
    guard_->SetKnown(0);
  }
  // What peers sent must be in the view before "not in the view" can mean "removed here".
  if (settle_) settle_();
  HlcTimestamp scan_start = store_.clock().Last();
  std::unordered_map<std::string, bool> seen;
  WatchTree("", &seen);
  // What the store holds but the view no longer has was removed while we were not looking.
  std::vector<std::string> gone;
  std::string after;
  for (;;) {
    Result<ScanPage> page = store_.Scan("", after, StoreLimits::kMaxScanLimit, true, Cf::kNs);
    if (!page.ok()) break;
    for (auto& e : page->entries)
      if (!seen.count(e.key)) gone.push_back(e.key);
    if (!page->more) break;
    after = page->entries.back().key;
  }
  for (const std::string& k : gone) {
    // Looked at and removed under the view's lock: fsync's RecordNow comes
    // before the look or after the tombstone, never between.
    std::lock_guard lock(record_mu_);
    // Made after the listing (fsync's RecordNow, or an event not yet read): keep it.
    int fd = OpenBeneath(root_fd_, k, O_PATH);
    if (fd >= 0) {
      close(fd);
      continue;
    }
    // Written since the scan began: not removed.
    Result<Record> r = store_.Get(k, Cf::kNs);
    if (r.ok() && r->version.hlc > scan_start) continue;
    // A peer's entry we never placed (not yet, or it cannot be: a fifo) was
    // not removed here either.
    if (r.ok() && r->version.node != store_.node_id() && !ledger_.SeenInView(k)) continue;
    TombstonePath(k);
  }
}

Status ViewRecorder::HashContent(const std::string& path, v1::Inode* inode, Store::ChunkDurability durability,
                                 Deferred* deferred) {
  // A writer may change the file while it is read: hash again (up to three
  // times) until size, mtime and ctime are the same before and after.
  for (int attempt = 0; attempt < 3; ++attempt) {
    int fd = OpenBeneath(root_fd_, path, O_RDONLY);
    if (fd < 0) return Status::IOError(fmt::format("open /{}: {}", path, strerror(errno)));
    struct stat before, after;
    if (fstat(fd, &before) != 0) {
      Status s = Status::IOError(fmt::format("stat /{}: {}", path, strerror(errno)));
      close(fd);
      return s;
    }
    // The chunks hashed while it was written (the first time only).
    std::vector<ChunkPrehasher::Ahead> ahead;
    if (attempt == 0 && prehasher_) ahead = prehasher_->Take(path, before.st_ino);
    v1::Inode hashed;
    if (deferred) deferred->clear();
    Status hashed_ok = HashFd(fd, before, &hashed, durability, ahead, deferred);
    bool stable = fstat(fd, &after) == 0 && FileLook::Of(before).Unchanged(FileLook::Of(after));
    close(fd);
    if (!hashed_ok.ok()) return hashed_ok;
    if (stable || attempt == 2) {
      *inode->mutable_chunks() = hashed.chunks();
      inode->set_size(hashed.size());
      inode->set_mtime_ns(MtimeNs(after));
      return Status::Ok();
    }
  }
  return Status::Ok();  // (the loop returns on its last attempt)
}

Status ViewRecorder::HashFd(int fd, const struct stat& st, v1::Inode* inode, Store::ChunkDurability durability,
                            const std::vector<ChunkPrehasher::Ahead>& ahead, Deferred* deferred) {
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const size_t count = static_cast<size_t>((size + kChunkBytes - 1) / kChunkBytes);
  // Chunk i's digest, its length as read (short: the file shrank meanwhile),
  // and, when deferred, what to store after the record.
  std::vector<std::string> digests(count);
  std::vector<size_t> lengths(count);
  std::vector<std::optional<ChunkPrehasher::Ahead>> later(count);
  std::atomic<size_t> next{0}, reused{0};
  std::atomic<bool> ok{true};
  // Each thread's buffer holds one chunk as the file's size asks, not zeroed:
  // a small file must not pay for clearing (and faulting in) a whole 1 MiB.
  const size_t buffer_bytes = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, size));
  auto work = [&] {
    std::unique_ptr<char[]> buffer(new char[std::max<size_t>(buffer_bytes, 1)]);
    char* const chunk = buffer.get();
    for (size_t i = next++; i < count && ok; i = next++) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, size - i * kChunkBytes));
      bool failed = false;  // chunk boundaries are fixed offsets
      const size_t have = ReadFullAt(fd, chunk, want, i * kChunkBytes, &failed);
      lengths[i] = have;
      if (failed) ok = false;
      if (have == 0 || failed) continue;  // (short: the file shrank; this is its last chunk as read)
      if (have == want && i < ahead.size() && have == kChunkBytes && prehasher_->Matches(ahead[i], chunk, have)) {
        digests[i] = ahead[i].digest;  // unchanged since it was hashed
        ++reused;
        if (deferred) {
          later[i] = ahead[i];  // stored after the record
          continue;
        }
      } else if (deferred && have == kChunkBytes && prehasher_) {
        later[i] = prehasher_->Hash(chunk, have);
        digests[i] = later[i]->digest;
        continue;
      } else {
        digests[i] = Sha256(std::string_view(chunk, have));
      }
      if (!store_.PutChunk(digests[i], std::string_view(chunk, have), durability).ok()) ok = false;
    }
  };
  // Two threads for big files: the program that wrote it is done with its CPU.
  std::thread helper;
  if (count >= 8) helper = std::thread(work);
  work();
  if (helper.joinable()) helper.join();
  if (!ok) return Status::IOError("a chunk could not be read or stored");
  uint64_t total = 0;
  for (size_t i = 0; i < count && lengths[i] > 0; ++i) {
    inode->add_chunks(digests[i]);
    total += lengths[i];
    if (later[i] && deferred) deferred->emplace_back(i, std::move(*later[i]));
    if (lengths[i] < kChunkBytes) break;  // the end, or where it shrank (then it is hashed again)
  }
  hashed_ahead_ += reused.load();
  if (!ahead.empty())
    spdlog::debug("hashed {} chunks, took {} of the {} hashed while the file was written", inode->chunks_size(),
                  reused.load(), ahead.size());
  inode->set_size(total);  // what was hashed
  return Status::Ok();
}

void ViewRecorder::RepairLostChunks() {
  size_t files = 0, repaired = 0, lost = 0;
  struct Damaged {
    std::string path;
    v1::Inode inode;
    std::vector<int> missing;  // chunk indices the store lacks
  };
  std::vector<Damaged> damaged;
  Status s = store_.ForEachRecord(
      [&](std::string_view key, const Record& rec) {
        v1::Inode inode;
        if (rec.tombstone || !inode.ParseFromString(rec.value) || inode.type() != v1::FILE_TYPE_REGULAR) return;
        ++files;
        std::vector<int> missing;
        for (int i = 0; i < inode.chunks_size(); ++i)
          if (!store_.HasChunk(inode.chunks(i))) missing.push_back(i);
        if (!missing.empty()) damaged.push_back({std::string(key), std::move(inode), std::move(missing)});
      },
      Cf::kNs);
  if (!s.ok()) spdlog::error("chunk repair: cannot read the records: {}", s.ToString());
  std::vector<char> chunk(kChunkBytes);
  for (const auto& [path, inode, missing_chunks] : damaged) {
    // Only the view file that is still this version (its size and mtime, not a stub) can give them back.
    int fd = OpenBeneath(root_fd_, path, O_RDONLY | O_NONBLOCK);
    struct stat st;
    FileMarks marks(fd);
    bool same = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ShowsVersion(st, inode) &&
                !ledger_.StubContent(marks);
    size_t missing = 0;
    for (int i : missing_chunks) {
      const std::string& digest = inode.chunks(i);
      size_t n = same ? ReadFullAt(fd, chunk.data(), kChunkBytes, static_cast<uint64_t>(i) * kChunkBytes) : 0;
      if (n > 0 && Sha256(std::string_view(chunk.data(), n)) == digest &&
          store_.PutChunk(digest, std::string_view(chunk.data(), n)).ok())
        continue;
      ++missing;
    }
    if (fd >= 0) close(fd);
    if (missing == 0) {
      ++repaired;
    } else {
      ++lost;
      spdlog::warn("chunk repair: /{} lacks {} of its {} chunks here (lost in the crash; other nodes may hold them)",
                   path, missing, inode.chunks_size());
    }
  }
  if (Status f = store_.FlushChunks(); !f.ok()) spdlog::error("chunk repair: {}", f.ToString());
  spdlog::info("chunk repair after an unclean stop: {} files checked, {} repaired from the view, {} still lacking chunks",
               files, repaired, lost);
}

}  // namespace onebox
