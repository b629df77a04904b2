#include "nodeagent/view/view_materializer.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/node_identity.h"
#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/daemon/thread_name.h"
#include "nodeagent/view/file_look.h"
#include "nodeagent/view/file_xattrs.h"
#include "nodeagent/view/view_fs.h"

namespace onebox {

namespace {

constexpr const char* kStagingDir = ".onebox-staging";  // in the view root: the recorder never looks there

// Owner first (chown clears setuid bits), then mode. Owner only as root: an
// agent run by a user makes its files that user's, and then never setuid or
// setgid (they would be the agent's user's).
// made_as: the owner fd was made with (a new file in staging), when known;
// a chown to that owner is left out.
void SetOwnerAndMode(int fd, const v1::Inode& inode, const std::optional<FileOwner>& made_as = std::nullopt) {
  bool already = made_as && inode.uid() == made_as->uid && inode.gid() == made_as->gid;
  bool owner = AgentUid() == 0 && (already || fchown(fd, inode.uid(), inode.gid()) == 0);
  fchmod(fd, inode.mode() & (owner ? 07777 : 01777));
}

// Whether an entry st shows is as inode says after we placed it (a program
// may have written, chmod'ed or chown'ed it in the moment after the rename).
bool AsPlaced(const struct stat& st, const v1::Inode& inode) {
  return ShowsMetadata(st, inode) && (!S_ISREG(st.st_mode) || ShowsVersion(st, inode));
}

}  // namespace

ViewMaterializer::ViewMaterializer(Store& store, ContentTransfer& content, ViewLedger& ledger, SymlinkGuard* guard)
    : store_(store), content_(content), ledger_(ledger), guard_(guard), self_node_(store.node_id()) {}

ViewMaterializer::~ViewMaterializer() {
  Stop();
  if (staging_fd_ >= 0) close(staging_fd_);
  if (root_fd_ >= 0) close(root_fd_);
}

Status ViewMaterializer::Start(const std::string& view_root) {
  root_fd_ = open(view_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd_ < 0) return Status::IOError(fmt::format("open view {}: {}", view_root, strerror(errno)));
  mkdirat(root_fd_, kStagingDir, 0700);
  staging_fd_ = OpenBeneath(root_fd_, kStagingDir, O_RDONLY | O_DIRECTORY);
  if (staging_fd_ < 0) return Status::IOError(fmt::format("open {}/{}: {}", view_root, kStagingDir, strerror(errno)));
  fchmod(staging_fd_, 0700);
  // Leftovers of a stop in the middle of a placement.
  if (DIR* d = fdopendir(dup(staging_fd_))) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') unlinkat(staging_fd_, e->d_name, 0);
    closedir(d);
  }
  // Whose a new file in staging is (the agent's ids, unless the file system
  // says otherwise: a grpid mount, a squashing NFS server): files placed for
  // that owner need no chown.
  std::string probe = NewTempName();
  if (int fd = openat(staging_fd_, probe.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600); fd >= 0) {
    struct stat st;
    if (fstat(fd, &st) == 0) new_file_owner_ = FileOwner{st.st_uid, st.st_gid};
    close(fd);
    unlinkat(staging_fd_, probe.c_str(), 0);
  }
  Result<std::vector<std::string>> todo = NotInPlace();
  if (!todo.ok()) return todo.status();
  starting_ = true;
  for (const std::string& path : *todo) Materialize(path);
  starting_ = false;
  if (!todo->empty()) spdlog::info("materialized {} entries peers sent before the agent stopped", todo->size());
  thread_ = std::thread([this] {
    CatchUpThread below_programs;
    Loop(below_programs);
  });
  NameThread(thread_, "onebox-place");
  return Status::Ok();
}

Result<std::vector<std::string>> ViewMaterializer::NotInPlace() {
  // What peers sent that the view does not show: applied, then the agent
  // stopped before it was put in place. The view wins only where it changed
  // after the record was made (a program wrote there while the agent was down).
  std::vector<std::string> todo;
  Status s = store_.ForEachRecord(
      [&](std::string_view key, const Record& r) {
        if (r.version.node == self_node_) return;
        std::string path(key);
        int fd = OpenBeneath(root_fd_, path, O_PATH);
        struct stat st;
        bool present = fd >= 0 && fstat(fd, &st) == 0;
        bool ours = present && ViewLedger::UnchangedSincePlaced(fd, st, path);
        if (fd >= 0) close(fd);
        if (!present) {
          if (!r.tombstone) todo.push_back(path);
          return;
        }
        if (!ours && static_cast<uint64_t>(Ns(st.st_ctim) / 1'000'000) >= hlc::PhysicalMs(r.version.hlc)) return;
        v1::Inode inode;
        if (r.tombstone || !inode.ParseFromString(r.value) || (S_ISREG(st.st_mode) && !ShowsVersion(st, inode)))
          todo.push_back(path);
      },
      Cf::kNs);
  if (!s.ok()) return s;
  return todo;
}

void ViewMaterializer::Stop() {
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;  // the loop finishes what is queued first
  }
  queue_cv_.notify_all();
  HurryCatchUp hurry(CatchUpWait::kStop);  // at the agent's priority
  if (thread_.joinable()) thread_.join();
}

void ViewMaterializer::Enqueue(const std::string& path) {
  {
    std::lock_guard lock(queue_mu_);
    // Already waiting: one pass makes the view match the newest record.
    if (queued_.insert(path).second) {
      queue_.push_back(path);
      ++pushed_;
    }
  }
  queue_cv_.notify_all();
}

void ViewMaterializer::Drain() {
  std::unique_lock lock(queue_mu_);
  if (!thread_.joinable()) return;
  // Entries are done in the order they were pushed: the last one pushed
  // before the call is done when as many are.
  const uint64_t ticket = pushed_;
  WaitHurrying(CatchUpWait::kDrain, queue_cv_, lock, [&] { return done_ >= ticket || stopping_; });
}

bool ViewMaterializer::DrainUntil(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(queue_mu_);
  if (!thread_.joinable()) return true;
  const uint64_t ticket = pushed_;
  auto done = [&] { return done_ >= ticket || stopping_; };
  if (std::chrono::steady_clock::now() >= deadline) return done();  // (no hurry for a wait that is over)
  return WaitHurrying(CatchUpWait::kDrain, queue_cv_, lock, deadline - std::chrono::steady_clock::now(), done);
}

bool ViewMaterializer::AwaitDirectory(const std::string& dir, std::chrono::milliseconds timeout) {
  // Only a look (the descriptor is closed at once), so it may follow the
  // view's symlinks as the shim's lookup does: never out of the view. Only
  // ENOENT says it is not there; anything else is the kernel's to tell the
  // create itself. (EAGAIN: a rename raced with a "..": again, as the shim does.)
  auto missing = [&] {
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    for (int tries = 0;; ++tries) {
      const int fd = static_cast<int>(syscall(SYS_openat2, root_fd_, dir.empty() ? "." : dir.c_str(), &how, sizeof how));
      if (fd >= 0) close(fd);
      if (fd >= 0 || errno != EAGAIN || tries == 200) return fd < 0 && errno == ENOENT;
      sched_yield();
    }
  };
  if (!missing()) return true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    Result<Record> held = store_.Get(dir, Cf::kNs);
    v1::Inode inode;
    if (!held.ok() || held->tombstone || held->version.node == self_node_ || !inode.ParseFromString(held->value) ||
        inode.type() != v1::FILE_TYPE_DIRECTORY)
      return false;  // (this node's own is not placed: a program's rmdir, not recorded yet)
    uint64_t pushed;
    {
      std::lock_guard lock(queue_mu_);
      pushed = pushed_;
    }
    DrainUntil(deadline);
    if (!missing()) return true;
    // A stream's batch is stored whole, then queued entry by entry: stored
    // and not queued yet, it is queued within moments.
    std::unique_lock lock(queue_mu_);
    queue_cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)),
                         [&] { return pushed_ != pushed || stopping_; });
    if (stopping_) return false;
  }
  return false;
}

bool ViewMaterializer::Settled() {
  std::lock_guard lock(queue_mu_);
  return done_ == pushed_;
}

void ViewMaterializer::Loop(CatchUpThread& below_programs) {
  std::unique_lock lock(queue_mu_);
  bool behind = queue_.size() >= backlog_;  // (the thread starts behind: raised at once unless it is)
  if (!behind) below_programs.SetBehind(false);
  for (;;) {
    // Behind (below programs) from backlog_ entries queued until none is: a
    // burst; keeping up (at the agent's priority) while a trickle comes.
    if (behind && queue_.empty()) below_programs.SetBehind(behind = false);
    queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    const bool falls_behind = !behind && queue_.size() >= backlog_;
    std::string path = std::move(queue_.front());
    queue_.pop_front();
    queued_.erase(path);
    lock.unlock();
    // Lowered outside the queue's lock: a thread that lowers itself may be
    // switched out at once, and the stream's Enqueue waits for that lock.
    if (falls_behind) below_programs.SetBehind(behind = true);
    Materialize(path);
    lock.lock();
    ++done_;
    queue_cv_.notify_all();
  }
}

void ViewMaterializer::Materialize(const std::string& path) {
  if (!IsValidNsKey(path)) {
    spdlog::warn("materialize: refusing key '{}' (not a path below the view root)", path);
    return;
  }
  std::lock_guard path_lock(PathMutex(path));
  Result<Record> rec = store_.Get(path, Cf::kNs);
  if (!rec.ok()) {
    if (rec.status().code() == Code::kNotFound) Remove(path);
    return;
  }
  v1::Inode inode;
  if (!inode.ParseFromString(rec->value)) {
    spdlog::warn("materialize /{}: the record does not parse as an Inode", path);
    return;
  }
  Status s;
  switch (inode.type()) {
    case v1::FILE_TYPE_DIRECTORY: s = PlaceDirectory(path, inode, rec->version); break;
    case v1::FILE_TYPE_SYMLINK: s = PlaceSymlink(path, inode, rec->version); break;
    case v1::FILE_TYPE_REGULAR: s = PlaceFile(path, inode, rec->version, false).status(); break;
    default: return;  // fifos, sockets, devices stay on the node that made them
  }
  if (!s.ok()) spdlog::warn("materialize /{}: {}", path, s.message());
}

int ViewMaterializer::OpenParent(const std::string& path, bool create) {
  std::string parent = ParentKey(path);
  // Nearly always there: one lookup. Else a walk that makes what is missing.
  int dir = OpenBeneath(root_fd_, parent, O_PATH | O_DIRECTORY);
  if (dir >= 0 || errno != ENOENT || !create) return dir;
  dir = OpenBeneath(root_fd_, "", O_PATH | O_DIRECTORY);
  size_t pos = 0;
  while (dir >= 0 && pos < parent.size()) {
    size_t next = parent.find('/', pos);
    if (next == std::string::npos) next = parent.size();
    std::string comp = parent.substr(pos, next - pos);
    int sub = openat(dir, comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0 && errno == ENOENT && create) {
      // Made as the store describes it, or as a placeholder until its record
      // comes (the recorder leaves placeholders alone: they are no one's yet).
      std::string prefix = parent.substr(0, next);
      Result<Record> r = store_.Get(prefix, Cf::kNs);
      v1::Inode inode;
      bool known = r.ok() && inode.ParseFromString(r->value);
      const bool made = mkdirat(dir, comp.c_str(), known ? 0700 : 0755) == 0;
      if (made || errno == EEXIST) {
        sub = openat(dir, comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        // (Under the view lock, as every placement: the recorder looks after.
        // One a program made in the meantime is the program's.)
        if (sub >= 0 && !known && made && fstat(sub, &st) == 0) ledger_.Placeholder(prefix, sub, st);
        if (sub >= 0 && known) {
          ApplyXattrs(sub, inode);  // (before the mode: a read-only directory takes none from a non-root agent)
          SetOwnerAndMode(sub, inode);
          if (fstat(sub, &st) == 0) ledger_.Placed(prefix, st, r->version);
        }
      }
    }
    close(dir);
    dir = sub;
    pos = next + 1;
  }
  return dir;
}

Status ViewMaterializer::PlaceDirectory(const std::string& path, const v1::Inode& inode, const Version& version) {
  std::lock_guard view_lock(ledger_.view_mutex());
  int parent = OpenParent(path, true);
  if (parent < 0) return Status::IOError(fmt::format("parent of /{}: {}", path, strerror(errno)));
  std::string name(BaseName(path));
  struct stat st;
  if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
    // A file or symlink where the peer has a directory, older than the peer's record: it goes.
    if (!MayReplace(parent, name, path, version)) {
      close(parent);
      return Status::Ok();
    }
    ledger_.RemovingOurs(path);
    if (unlinkat(parent, name.c_str(), 0) != 0) {
      (void)ledger_.TakeOurRemoval(path);
    } else {
      ledger_.Gone(path);
    }
  }
  if (mkdirat(parent, name.c_str(), 0700) != 0 && errno != EEXIST) {
    Status s = Status::IOError(fmt::format("mkdir: {}", strerror(errno)));
    close(parent);
    return s;
  }
  int fd = openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  close(parent);
  if (fd < 0) return Status::IOError(fmt::format("open: {}", strerror(errno)));
  ledger_.PlaceholderFilled(path);
  ApplyXattrs(fd, inode);
  if (fstat(fd, &st) != 0 || (st.st_mode & 07777) != inode.mode() ||
      (AgentUid() == 0 && (st.st_uid != inode.uid() || st.st_gid != inode.gid())))
    SetOwnerAndMode(fd, inode);
  if (fstat(fd, &st) == 0) {
    ledger_.Placed(path, st, version);
  }
  close(fd);
  spdlog::debug("placed directory /{} ({} extended attributes; version of {})", path, inode.xattrs_size(),
                NodeIdHex(version.node));
  return Status::Ok();
}

Result<int> ViewMaterializer::FinishPlacement(int fd, const std::string& tmp, const v1::Inode& inode,
                                              const std::string& path, const Version& version) {
  ApplyXattrs(fd, inode, /*fresh=*/true);  // while the agent may still write them
  SetOwnerAndMode(fd, inode, new_file_owner_);
  if (FindXattr(inode, kCapabilityXattr) != nullptr) ApplyXattrs(fd, inode);  // a chown clears capabilities
  timespec times[2] = {Ts(inode.mtime_ns()), Ts(inode.mtime_ns())};
  futimens(fd, times);
  ViewLedger::MarkPlacement(fd, path, version);
  int placed = openat(staging_fd_, tmp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  Status s = placed >= 0 ? Status::Ok() : Status::IOError(fmt::format("reopen in staging: {}", strerror(errno)));
  close(fd);  // in staging: its IN_CLOSE_WRITE is not a program's write in the view
  if (!s.ok()) {
    unlinkat(staging_fd_, tmp.c_str(), 0);
    return s;
  }
  return placed;
}

bool ViewMaterializer::MayReplace(int parent, const std::string& name, const std::string& path,
                                  const Version& version, std::optional<struct stat>* judged) {
  struct stat st;
  if (judged != nullptr) judged->reset();
  if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return true;  // nothing there
  if (judged != nullptr) *judged = st;
  int fd = openat(parent, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  bool as_seen = ledger_.AsTheStoreSawIt(path, fd, st);
  if (fd >= 0) close(fd);
  // As the store knows it: last-writer-wins has already decided, and the peer's version won.
  if (as_seen) return true;
  // Changed by a program since the store last saw it: that change is newer
  // than anything here, and the recorder records it (and it wins). At start,
  // before the recorder has looked, the entry's ctime against the peer's write
  // time decides.
  if (starting_ && static_cast<uint64_t>(Ns(st.st_ctim) / 1'000'000) < hlc::PhysicalMs(version.hlc)) return true;
  spdlog::info("/{} changed here after the store last saw it; keeping the local change over the version from {}",
               path, NodeIdHex(version.node));
  return false;
}

bool ViewMaterializer::PutBackIfWritten(int parent, const std::string& name, const std::string& path,
                                        const std::string& kept, const struct stat& judged) {
  // Written since the look (its size or mtime moved; the link moved only its
  // ctime): the replacement came too late, and the write is newer.
  struct stat now;
  bool written = fstatat(staging_fd_, kept.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 &&
                 !FileLook::Of(now).SameContent(FileLook::Of(judged));
  if (written && renameat(staging_fd_, kept.c_str(), parent, name.c_str()) == 0) {
    spdlog::info("/{} was written here while a peer's version was put in place: the write stays (it is newer)",
                 path);
    ledger_.NotPlaced(path);
    return true;
  }
  unlinkat(staging_fd_, kept.c_str(), 0);
  return false;
}

std::string ViewMaterializer::NewTempName() { return fmt::format("t{}-{}", pid_, ++temp_counter_); }

Status ViewMaterializer::PlaceSymlink(const std::string& path, const v1::Inode& inode, const Version& version) {
  // Shims stat without a confined lookup while the view holds no symlink:
  // the guard hears of this one before it exists (view/symlink_guard.h).
  uint64_t token = 0;
  if (guard_ != nullptr) {
    Result<uint64_t> announced = guard_->Announce(0);
    if (!announced.ok()) return announced.status();
    token = *announced;
  }
  Status s = PlaceSymlinkAnnounced(path, inode, version);
  // Ours (owner 0): the token was just given, so it is still held.
  if (guard_ != nullptr) (void)guard_->Release(token, 0);
  return s;
}

Status ViewMaterializer::PlaceSymlinkAnnounced(const std::string& path, const v1::Inode& inode,
                                               const Version& version) {
  std::string tmp = NewTempName();
  if (symlinkat(inode.symlink_target().c_str(), staging_fd_, tmp.c_str()) != 0)
    return Status::IOError(fmt::format("symlink: {}", strerror(errno)));
  // As root only; a symlink's owner matters little (its target's permissions rule).
  if (AgentUid() == 0) (void)fchownat(staging_fd_, tmp.c_str(), inode.uid(), inode.gid(), AT_SYMLINK_NOFOLLOW);
  timespec times[2] = {Ts(inode.mtime_ns()), Ts(inode.mtime_ns())};
  utimensat(staging_fd_, tmp.c_str(), times, AT_SYMLINK_NOFOLLOW);
  int fd = openat(staging_fd_, tmp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  Status s = fd >= 0 ? Install(path, fd, tmp, version, false) : Status::IOError(strerror(errno));
  if (fd >= 0) close(fd);
  return s;
}

Result<bool> ViewMaterializer::MakeStub(int fd, const v1::Inode& inode) {
  if (ftruncate(fd, static_cast<off_t>(inode.size())) != 0)
    return Status::IOError(fmt::format("size the stub: {}", strerror(errno)));
  // The mark names the stub's content, so that a stub moved, linked or
  // touched is recorded with its content, not hashed.
  Result<std::string> mark = ledger_.StubMark(inode);
  if (!mark.ok()) return Status::IOError(fmt::format("remember the stub: {}", mark.status().message()));
  return SetMark(fd, kStubXattr, *mark) == 0;
}

Result<uint64_t> ViewMaterializer::PlaceFile(const std::string& path, const v1::Inode& inode, const Version& version,
                                             bool fetch, bool as_stub) {
  // A name of a hard-linked file: one file with its other names placed here.
  const std::string& group = inode.link_group();
  std::optional<Twin> twin = group.empty() ? std::nullopt : TwinOf(path, inode);
  // A link of it already, showing the record (which TwinOf checked): placed.
  if (struct stat at; twin && fstatat(root_fd_, path.c_str(), &at, AT_SYMLINK_NOFOLLOW) == 0 &&
                      at.st_ino == twin->st.st_ino) {
    close(twin->fd);
    JoinedGroup(group, path);
    return inode.size();
  }
  struct CloseTwin {
    std::optional<Twin>& twin;
    ~CloseTwin() {
      if (twin) close(twin->fd);
    }
  } close_twin{twin};
  // Already this version (a duplicate, or hydrated meanwhile)? Known by the
  // version the file shows (or, for this node's own record, by its size and
  // mtime, as the recorder took it), not by size and mtime alone: two nodes
  // writing in the same moment make files alike in both.
  if (int fd = OpenBeneath(root_fd_, path, O_PATH); fd >= 0) {
    struct stat st;
    FileMarks marks(fd);
    bool same = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ShowsVersion(st, inode) &&
                (st.st_mode & 07777) == inode.mode() &&
                (version.node == self_node_ || ledger_.ContentShown(path, marks, st) == version) &&
                ShowsXattrs(fd, inode, marks.Names()) &&
                !twin;  // (a twin is another file here: a link of it returned above)
    bool stub = same && !marks.Stub().empty();
    close(fd);
    if (same && !stub) {
      if (!group.empty()) JoinedGroup(group, path);
      return inode.size();
    }
  }
  if (twin) {
    // A link to it, made in staging and installed as any placement is. The
    // link moves the twin's ctime and link count: the recorder must not
    // look at the twin's names until Install has relooked them (else it
    // takes the twin for a program's change and records it).
    std::lock_guard view_lock(ledger_.view_mutex());
    std::string tmp = NewTempName();
    // (Still as TwinOf judged it, before the lock: a program's write since is
    // its own. The look ignores the ctime of a file of several names, so its
    // attributes are looked at again.)
    struct stat now;
    const bool as_judged = fstat(twin->fd, &now) == 0 && FileLook::Of(now).Unchanged(FileLook::Of(twin->st)) &&
                           ShowsXattrs(twin->fd, inode);
    if (as_judged && linkat(AT_FDCWD, ProcPath(twin->fd).c_str(), staging_fd_, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      int placed = openat(staging_fd_, tmp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (placed < 0) {
        unlinkat(staging_fd_, tmp.c_str(), 0);
        RelookNamesOf(twin->st.st_ino);
        return Status::IOError(fmt::format("reopen in staging: {}", strerror(errno)));
      }
      Status s = Install(path, placed, tmp, version, /*stub=*/false);
      close(placed);
      if (!s.ok()) return s;
      JoinedGroup(group, path);
      spdlog::debug("placed /{} as a link of /{}", path, twin->path);
      return inode.size();
    }
    if (as_judged)
      spdlog::warn("/{}: cannot link it to /{} ({}); placed as a copy", path, twin->path, strerror(errno));
    else
      spdlog::debug("/{}: /{} changed since it was taken for its twin; placed whole", path, twin->path);
  }
  // The first name of a group here: the whole content, never a stub (a
  // stub's content, brought later, would come as another file).
  if (!group.empty()) {
    fetch = true;
    as_stub = false;
  }
  // A file programs lock is overwritten in place, so never with a stub, and
  // never twice with one version (a record delivered again, by anti-entropy
  // after the stream, say).
  if (in_place_ && in_place_(path)) {
    if (ledger_.LastWrittenInPlace(path, version)) return inode.size();
    fetch = true;
    as_stub = false;
  }
  // Without reading the chunks: a rare false "maybe" is found out while the
  // content is written, and a stub is placed after all.
  bool have_all = !as_stub;
  for (const std::string& c : inode.chunks()) have_all = have_all && store_.MayHaveChunk(c);
  std::string tmp = NewTempName();
  int fd = openat(staging_fd_, tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError(fmt::format("create in staging: {}", strerror(errno)));
  auto drop = [&] {
    close(fd);
    unlinkat(staging_fd_, tmp.c_str(), 0);
  };
  bool stub = !have_all && !fetch;
  if (stub) {
    Result<bool> made = MakeStub(fd, inode);
    if (!made.ok() || !*made) {
      drop();
      if (!made.ok()) return made.status();
      // No extended attributes on this file system: no stubs, the content comes now.
      return PlaceFile(path, inode, version, true);
    }
  } else if (Status s = WriteContent(fd, path, inode, version, /*local_only=*/!fetch); !s.ok()) {
    drop();
    if (!fetch && s.code() == Code::kNotFound) return PlaceFile(path, inode, version, false, /*as_stub=*/true);
    return s;
  }
  Result<int> placed = FinishPlacement(fd, tmp, inode, path, version);
  if (!placed.ok()) return placed.status();
  Status s = Install(path, *placed, tmp, version, stub);
  close(*placed);
  if (!s.ok()) return s;
  if (!group.empty()) JoinedGroup(group, path);
  return inode.size();
}

std::optional<ViewMaterializer::Twin> ViewMaterializer::TwinOf(const std::string& path, const v1::Inode& inode) {
  std::set<std::string> names;
  {
    std::lock_guard lock(groups_mu_);
    auto it = group_names_.find(inode.link_group());
    if (it == group_names_.end()) return std::nullopt;
    names = it->second;
  }
  for (const std::string& name : names) {
    if (name == path) continue;
    v1::Inode other;
    Result<Record> rec = store_.Get(name, Cf::kNs);
    if (!rec.ok() || !other.ParseFromString(rec->value) || other.link_group() != inode.link_group()) {
      std::lock_guard lock(groups_mu_);
      group_names_[inode.link_group()].erase(name);  // no longer of the group
      continue;
    }
    other.clear_xattrs();  // compared below, on the file itself
    v1::Inode mine = inode;
    mine.clear_xattrs();
    if (other.SerializeAsString() != mine.SerializeAsString()) continue;  // not alike (yet)
    int fd = OpenBeneath(root_fd_, name, O_PATH);
    if (fd < 0) continue;
    Twin twin{fd, name, {}};
    FileMarks marks(fd);
    // Shows that record as placed or recorded here, whole (no stub).
    if (fstat(fd, &twin.st) == 0 && S_ISREG(twin.st.st_mode) && AsPlaced(twin.st, inode) &&
        (rec->version.node == self_node_ || ledger_.ContentShown(name, marks, twin.st) == rec->version) &&
        marks.Stub().empty() && ShowsXattrs(fd, inode, marks.Names()))
      return twin;
    close(fd);
  }
  return std::nullopt;
}

void ViewMaterializer::JoinedGroup(const std::string& group, const std::string& path) {
  std::lock_guard lock(groups_mu_);
  group_names_[group].insert(path);
}

Status ViewMaterializer::Install(const std::string& path, int tmp_fd, const std::string& tmp, const Version& version,
                                 bool stub) {
  std::lock_guard view_lock(ledger_.view_mutex());
  // A link to another name's file (a hard link placed): however this ends,
  // renamed into place or dropped, the other names' looks take the link
  // count and ctime it leaves (before the view lock goes).
  struct RelookLinked {
    ViewMaterializer* m;
    struct stat st{};
    bool linked = false;
    ~RelookLinked() {
      if (linked) m->RelookNamesOf(st.st_ino);
    }
  } relook_linked{this};
  relook_linked.linked = fstat(tmp_fd, &relook_linked.st) == 0 && relook_linked.st.st_nlink > 1;
  Result<Record> now = store_.Get(path, Cf::kNs);
  if (!now.ok() || now->version != version) {
    unlinkat(staging_fd_, tmp.c_str(), 0);
    return Status::Ok();  // a newer record came meanwhile; its own pass puts it in place
  }
  int parent = OpenParent(path, true);
  if (parent < 0) {
    Status s = Status::IOError(fmt::format("parent: {}", strerror(errno)));
    unlinkat(staging_fd_, tmp.c_str(), 0);
    return s;
  }
  std::string name(BaseName(path));
  std::optional<struct stat> judged;
  if (!MayReplace(parent, name, path, version, &judged)) {
    unlinkat(staging_fd_, tmp.c_str(), 0);
    close(parent);
    return Status::Ok();
  }
  if (judged && S_ISREG(judged->st_mode) && !stub && in_place_ && in_place_(path)) {
    Status s = OverwriteInPlace(parent, name, path, tmp, *now, *judged);
    if (s.ok()) {
      close(parent);
      unlinkat(staging_fd_, tmp.c_str(), 0);
      spdlog::debug("placed /{} in place (version {} of {})", path, version.hlc, NodeIdHex(version.node));
      return Status::Ok();
    }
    spdlog::warn("/{}: {}; replaced instead (descriptors open on it keep the old content)", path, s.message());
  }
  // A program may open and write the entry between that look and the
  // rename: a link in staging keeps the replaced file, to see afterwards.
  std::string kept;
  if (judged && !S_ISDIR(judged->st_mode)) {
    kept = NewTempName();
    if (linkat(parent, name.c_str(), staging_fd_, kept.c_str(), 0) != 0) kept.clear();
  }
  // Counted before anyone can open it (and if a counted stub is there
  // already, a failure below leaves that one counted).
  bool counted = stub && ledger_.SetStub(path, true);
  int rc = renameat(staging_fd_, tmp.c_str(), parent, name.c_str());
  if (rc != 0 && (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST)) {
    // A directory where the peer now has a file: only an empty one gives way.
    ledger_.RemovingOurs(path);
    if (unlinkat(parent, name.c_str(), AT_REMOVEDIR) == 0) {
      ledger_.Gone(path);
      if (stub) counted = ledger_.SetStub(path, true);  // (Gone forgot it with the directory)
      rc = renameat(staging_fd_, tmp.c_str(), parent, name.c_str());
    } else {
      (void)ledger_.TakeOurRemoval(path);
    }
  }
  if (rc != 0) {
    Status s = Status::IOError(fmt::format("rename into place: {}", strerror(errno)));
    unlinkat(staging_fd_, tmp.c_str(), 0);
    if (!kept.empty()) unlinkat(staging_fd_, kept.c_str(), 0);
    close(parent);
    if (counted) ledger_.SetStub(path, false);
    return s;
  }
  bool put_back = !kept.empty() && PutBackIfWritten(parent, name, path, kept, *judged);
  close(parent);
  if (put_back) {
    if (counted) ledger_.SetStub(path, false);
    return Status::Ok();  // the program's write stays, and the recorder records it: it is newer
  }
  if (spdlog::should_log(spdlog::level::debug)) {
    struct stat placed_st{};
    fstat(tmp_fd, &placed_st);
    spdlog::debug("placed /{}{} (mode {:o}; version {} of {})", path, stub ? " as a stub" : "", placed_st.st_mode & 07777,
                  version.hlc, NodeIdHex(version.node));
  }
  TellLedgerPlaced(path, tmp_fd, *now);
  if (!stub) ledger_.SetStub(path, false);
  // Hard links: the file replaced had other names (the one linked in: above).
  if (judged && S_ISREG(judged->st_mode) && judged->st_nlink > 1) RelookNamesOf(judged->st_ino);
  return Status::Ok();
}

void ViewMaterializer::RelookNamesOf(ino_t ino) {
  for (const std::string& name : ledger_.NamesLastSeenAs(ino)) {
    int fd = OpenBeneath(root_fd_, name, O_PATH);
    if (fd < 0) continue;
    if (struct stat st; fstat(fd, &st) == 0 && st.st_ino == ino) ledger_.Relooked(name, fd, st);
    close(fd);
  }
}

Status ViewMaterializer::OverwriteInPlace(int parent, const std::string& name, const std::string& path,
                                          const std::string& tmp, const Record& placed, const struct stat& judged) {
  v1::Inode inode;
  if (!inode.ParseFromString(placed.value)) return Status::Corruption("record does not parse");
  // Not a FIFO raced in (O_NONBLOCK), and the very file MayReplace judged:
  // a program's write since then is newer, and a second name would change too.
  int src = openat(staging_fd_, tmp.c_str(), O_RDONLY | O_CLOEXEC);
  int dst = openat(parent, name.c_str(), O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  auto done = [&](Status s) {
    if (src >= 0) close(src);
    if (dst >= 0) close(dst);
    return s;
  };
  struct stat st, at;
  if (src < 0 || dst < 0 || fstat(src, &st) != 0 || fstat(dst, &at) != 0)
    return done(Status::IOError(fmt::format("open for writing in place: {}", strerror(errno))));
  if (!S_ISREG(at.st_mode) || at.st_nlink != 1 || !FileLook::Of(at).Unchanged(FileLook::Of(judged)))
    return done(Status::FailedPrecondition("not the single-named file judged a moment ago"));
  // Room first: once a byte is written, a failure would leave a mix.
  if (st.st_size > at.st_size && fallocate(dst, 0, 0, st.st_size) != 0)
    return done(Status::IOError(fmt::format("room for the new version: {}", strerror(errno))));
  off_t in = 0, out = 0;
  bool written = true;
  int err = 0;  // why not
  while (written && in < st.st_size) {
    ssize_t n = copy_file_range(src, &in, dst, &out, static_cast<size_t>(st.st_size - in), 0);
    written = n > 0;
    if (!written) err = n < 0 ? errno : EIO;  // (0: the source ended early)
  }
  if (written && ftruncate(dst, st.st_size) != 0) {
    written = false;
    err = errno;
  }
  fremovexattr(dst, kStubXattr);  // it was a stub: it holds the whole content now
  ledger_.SetStub(path, false);
  if (written) {
    ApplyXattrs(dst, inode);
    SetOwnerAndMode(dst, inode);
    if (FindXattr(inode, kCapabilityXattr) != nullptr) ApplyXattrs(dst, inode);  // a chown clears capabilities
    timespec times[2] = {Ts(inode.mtime_ns()), Ts(inode.mtime_ns())};
    futimens(dst, times);
    ViewLedger::MarkPlacement(dst, path, placed.version);
  }
  // Told before the recorder (which waits for the view lock) looks at this
  // write's close: ours, not a program's. Cut short, the file is a mix that
  // no program wrote either: taken for ours too, and placed again.
  struct stat now;
  if (fstat(dst, &now) == 0 && (!written || AsPlaced(now, inode))) {
    ledger_.Placed(path, now, placed.version, /*in_place=*/true, /*partial=*/!written);
  } else {
    ledger_.NotPlaced(path);
  }
  int tries = 0;
  {
    std::lock_guard lock(partial_mu_);
    if (written) {
      partial_tries_.erase(path);
    } else {
      auto& [version, count] = partial_tries_[path];
      if (version != placed.version) count = 0;  // tries count for one version
      version = placed.version;
      if ((tries = ++count) >= kInPlaceTries) partial_tries_.erase(path);
    }
  }
  if (!written && tries < kInPlaceTries) {
    spdlog::warn("/{}: written in place only in part ({}): placed again", path, strerror(err));
    Enqueue(path);
  } else if (!written) {
    spdlog::error("/{}: written in place only in part, {} times in a row ({}): left so until its next version", path,
                  tries, strerror(err));
  }
  return done(Status::Ok());
}

void ViewMaterializer::TellLedgerPlaced(const std::string& path, int tmp_fd, const Record& placed) {
  // A look after the rename, which changes ctime. A program may have opened
  // the new entry and written, chmod'ed or chown'ed it already: then it is
  // not as placed, and must not be taken for ours (the recorder records that).
  v1::Inode inode;
  struct stat st;
  {
    std::lock_guard lock(partial_mu_);
    partial_tries_.erase(path);  // replaced whole
  }
  if (inode.ParseFromString(placed.value) && fstat(tmp_fd, &st) == 0 && AsPlaced(st, inode)) {
    ledger_.Placed(path, st, placed.version);  // this look, not a later one
  } else {
    ledger_.NotPlaced(path);
  }
}

void ViewMaterializer::Remove(const std::string& path) {
  std::lock_guard view_lock(ledger_.view_mutex());
  // A directory with entries left waits for their tombstones; the last one
  // removes it (and so on up). Top-level entries (the cluster roots) stay.
  for (std::string p = path; p.find('/') != std::string::npos; p = ParentKey(p)) {
    Result<Record> tomb = store_.GetWithTombstone(p, Cf::kNs);
    if (!tomb.ok() || !tomb->tombstone) {
      // Live (again), or never known. A directory here whose record is now a
      // file or symlink (a rename over it, once emptied, on the writer) could
      // not be replaced while it had entries: now it may.
      v1::Inode live;
      if (p != path && tomb.ok() && live.ParseFromString(tomb->value) &&
          (live.type() == v1::FILE_TYPE_REGULAR || live.type() == v1::FILE_TYPE_SYMLINK))
        if (struct stat st; fstatat(root_fd_, p.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
          Enqueue(p);
      return;
    }
    int parent = OpenParent(p, false);
    if (parent < 0) return;
    std::string name(BaseName(p));
    struct stat st;
    int rc = -1;
    if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        (S_ISDIR(st.st_mode) || MayReplace(parent, name, p, tomb->version))) {
      ledger_.RemovingOurs(p);
      rc = unlinkat(parent, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
      if (rc != 0) (void)ledger_.TakeOurRemoval(p);
    }
    close(parent);
    if (rc != 0) return;
    spdlog::debug("removed /{} (a tombstone from {} won)", p, NodeIdHex(tomb->version.node));
    ledger_.RemovedOurs(p, tomb->version);
    if (S_ISREG(st.st_mode) && st.st_nlink > 1) RelookNamesOf(st.st_ino);  // its other names
  }
}

Result<uint64_t> ViewMaterializer::Hydrate(const std::string& path) {
  if (!IsValidNsKey(path)) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", path));
  Result<Record> rec = store_.Get(path, Cf::kNs);
  if (!rec.ok()) return rec.status();
  v1::Inode inode;
  if (!inode.ParseFromString(rec->value) || inode.type() != v1::FILE_TYPE_REGULAR)
    return Status::FailedPrecondition(fmt::format("/{} is not a file", path));  // (EIO for the open)
  // Only a stub is replaced: never a file a program holds or writes.
  int fd = OpenBeneath(root_fd_, path, O_PATH);
  bool stub = fd >= 0 && ViewLedger::IsStub(fd);
  if (fd >= 0) close(fd);
  if (!stub) return inode.size();
  // The content first, straight into a staging file, without holding the
  // path: it may take long.
  std::string tmp = NewTempName();
  fd = openat(staging_fd_, tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError(fmt::format("create in staging: {}", strerror(errno)));
  if (Status s = WriteContent(fd, path, inode, rec->version); !s.ok()) {
    close(fd);
    unlinkat(staging_fd_, tmp.c_str(), 0);
    spdlog::warn("cannot hydrate /{}: {}", path, s.message());
    return s;
  }
  Result<int> placed = FinishPlacement(fd, tmp, inode, path, rec->version);
  if (!placed.ok()) return placed.status();
  std::lock_guard path_lock(PathMutex(path));
  Status s = Install(path, *placed, tmp, rec->version, /*stub=*/false);
  close(*placed);
  if (!s.ok()) {
    spdlog::warn("cannot hydrate /{}: {}", path, s.message());
    return s;
  }
  return inode.size();
}

Status ViewMaterializer::WriteContent(int fd, const std::string& path, const v1::Inode& inode, const Version& version,
                                     bool local_only) {
  std::vector<std::string> chunks(inode.chunks().begin(), inode.chunks().end());
  // (Whom to ask first: nobody is asked for what must be here already.)
  const std::vector<std::string> holders =
      local_only ? std::vector<std::string>{} : content_.HoldersOf(path, NodeIdHex(version.node));
  // The placing thread's fetch from peers runs at the agent's priority: the
  // threads it and gRPC start take the priority of the thread that starts
  // them (catch_up.h).
  std::optional<HurryCatchUp> hurry;
  if (!local_only && CatchUpThread::Here()) hurry.emplace(CatchUpWait::kFetch);
  // fd is new: its size is where the furthest chunk written ends (chunks come on several threads).
  std::atomic<uint64_t> end{0};
  Status s = content_.Fetch(chunks, holders, local_only, [fd, &end](size_t index, const std::string& bytes) {
    const off_t at = static_cast<off_t>(index * kChunkBytes);
    for (size_t off = 0; off < bytes.size();) {
      ssize_t n = pwrite(fd, bytes.data() + off, bytes.size() - off, at + static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::IOError(fmt::format("write: {}", strerror(errno)));
      off += static_cast<size_t>(n);
    }
    const uint64_t chunk_end = static_cast<uint64_t>(at) + bytes.size();
    uint64_t seen = end.load();
    while (seen < chunk_end && !end.compare_exchange_weak(seen, chunk_end)) continue;
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (end != inode.size() && ftruncate(fd, static_cast<off_t>(inode.size())) != 0)  // an empty file has no chunks
    return Status::IOError(fmt::format("size: {}", strerror(errno)));
  return Status::Ok();
}

}  // namespace onebox
