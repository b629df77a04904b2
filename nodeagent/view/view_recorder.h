// Records the agent's view (the directory programs under the shim see as "/")
// into the store's ns family. The kernel tells what changed: inotify on every
// directory of the view, so a file written through any fd, inherited across
// exec, redirected by a shell, or closed by the process's exit, is recorded
// when its last writer closes it (IN_CLOSE_WRITE). Content is hashed in 1 MiB
// chunks (SHA-256) into the chunks family; big files are hashed while they
// are written (view/chunk_prehasher.h). A full scan at start and after an
// inotify queue overflow records what the events could not say (changes made
// while the agent was down) and tombstones what is gone.
//
// Changes the materializer made (peers' versions) are not recorded again:
// the ledger (view/view_ledger.h) says which they are. With a symlink guard,
// the recorder tells it the symlinks it sees, and proves the view free of
// them when it can (view/symlink_guard.h).
#pragma once

#include <sys/inotify.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "consistency/store.h"
#include "nodeagent/view/chunk_prehasher.h"
#include "nodeagent/view/symlink_guard.h"
#include "nodeagent/view/view_ledger.h"
#include "nodeagent/view/watched_dirs.h"
#include "onebox/v1/namespace.pb.h"

namespace onebox {

// Events of one inotify read (a burst: tar makes, writes, closes and stamps
// a file before the recorder looks) that another event of the same read
// records anyway: a file's IN_CREATE or IN_ATTRIB beside an IN_CLOSE_WRITE
// of the same file, with no create, removal or move of that name between
// them. The close is handled after the whole read happened, so its record
// (of the content and the attributes as they are then) covers both;
// skipping them saves an open, a stat and a store read each. True at the
// index of each such event.
std::vector<bool> CoveredByAClose(const std::vector<const inotify_event*>& events);

class ViewRecorder {
 public:
  // view_root must exist. Scans it, then follows its changes on a thread.
  // settle (optional) returns once the peers' changes applied so far are in
  // the view (the materializer's Drain): a full scan waits for it before it
  // takes "not in the view" for "removed here". behind (optional) hears of
  // each entry found showing an older version than the store's (a tie the
  // view lost): the view audit's Note.
  using BehindFn = std::function<void(const std::string& path)>;
  static Result<std::unique_ptr<ViewRecorder>> Start(const std::string& view_root, Store& store, ViewLedger& ledger,
                                                     SymlinkGuard* guard = nullptr,
                                                     std::function<void()> settle = {}, BehindFn behind = {});
  ~ViewRecorder();
  void Stop();

  // Returns once every change made to the view before the call is recorded.
  Status Sync();
  // Makes ROOT (e.g. "/cluster") exist in the view, as a directory every user
  // may create entries in (mode 1777, like /tmp). Returns the view root.
  Result<std::string> EnsureRoot(const std::string& root);

  // Records now (RecordNow) the entries of dir (an ns key; "" for the view
  // root) in the view that the store holds no live record of: made and not
  // recorded yet (a file with content by the time its creation was seen is
  // recorded at its close). A directory lease's handover needs them.
  // Returns the keys it could not record (gone meanwhile, unreadable).
  std::vector<std::string> RecordUnrecorded(const std::string& dir);
  // Records path (an ns key) now, its content included, with a synced write:
  // what fsync() promises. Returns the size recorded. Safe from any thread.
  Result<uint64_t> RecordNow(const std::string& path);
  // Records path now if its bytes are not its record's (as at the close of a
  // write, without fsync's synced write): a file a program may have written
  // through a descriptor it keeps open, at the unlock of a write lock.
  Status RecordIfWritten(const std::string& path);

  const std::string& view_root() const { return view_root_; }
  // A chunk a record names that is not stored yet, from its file (see ChunkPrehasher::Pending).
  std::optional<std::string> PendingChunk(const std::string& digest) { return prehasher_->Pending(digest); }
  // Counters for status and tests.
  uint64_t walks() const { return walks_; }  // attempts to prove the view free of symlinks
  // Changes of the mount table seen (each may have removed an obstacle: worth a walk).
  uint64_t mount_changes() const { return mount_changes_; }
  uint64_t hashed_ahead() const { return hashed_ahead_; }  // chunks a close took as hashed while written
  uint64_t covered_events() const { return covered_events_; }  // events a close in the same read recorded

 private:
  // What happened to an entry, as far as recording it goes.
  enum class Change {
    kCreated,         // IN_CREATE: made just now; its content comes with its close
    kWritten,         // IN_CLOSE_WRITE: a program wrote it (the materializer writes only in staging),
                      // whatever its size and mtime say now (cp -p sets them back)
    kContentChanged,  // a move in (the materializer's renames too), a file idle since it was made
    kMetadata,        // IN_ATTRIB, a scan, a mount change: content as recorded (when the record is this
                      // node's, or the ledger knows the file shows it) unless size or mtime moved
    kFsync,           // fsync's RecordNow: content hashed, the record synced and always written
    kUnlocked,        // RecordIfWritten, at the unlock of a write lock: as kWritten, and never taken
                      // for the materializer's write in place (a program's write in the same clock
                      // tick would look alike)
    kLinked,          // another name of the same file was recorded (a hard link): this one goes with
                      // it, whoever made it; content as kMetadata takes it
    kCreatedLate,     // a file made empty whose close or removal did not come within kCreateGraceNs:
                      // as kCreated, now
  };
  // A file made empty is recorded at its close, when that comes within this
  // long (tar's files, git's objects: written and closed at once), not at
  // its creation too; otherwise (a file a program holds open) it goes to the
  // peers after this long, empty, or (written meanwhile) as a file seen with
  // content at its creation goes: at its close, or once unchanged. One
  // removed within it and before its close is handled (git's temporary
  // names) is never recorded.
  static constexpr int64_t kCreateGraceNs = 50'000'000;
  // While the materializer has placed an entry within kRestWhilePlacingNs,
  // the loop rests kRestMs at a time away from the inotify queue (its other
  // descriptors still wake it), then reads what came, instead of waiting
  // for the queue in poll(): there each placement's rename would wake it
  // (an interprocessor wake-up, then a wait for the view lock the placing
  // thread holds), about as costly as the placement's own rename. A rest
  // that found no event ends the resting until the full wait returns (an
  // event, or any other descriptor): a trickle of placements costs at most
  // one rest each. A program's change made here meanwhile is handled up to
  // kRestMs later (and the symlink guard's gap grows by as much:
  // symlink_guard.h).
  static constexpr int64_t kRestWhilePlacingNs = 10'000'000;
  static constexpr int kRestMs = 1;
  // Records (kCreatedLate) the files made empty whose grace ended by now_ns
  // (all of them with INT64_MAX: a Sync marker); returns when the next one
  // ends (INT64_MAX: none waits). *recorded: whether any was due.
  int64_t RecordLateCreates(int64_t now_ns, bool* recorded = nullptr);
  // Chunks (index, as hashed ahead) a record names before they are stored.
  using Deferred = std::vector<std::pair<size_t, ChunkPrehasher::Ahead>>;

  ViewRecorder(std::string view_root, int root_fd, int inotify_fd, int wake_fd, Store& store, ViewLedger& ledger,
               SymlinkGuard* guard, std::function<void()> settle, BehindFn behind);
  void Loop();
  // Handles what the inotify fd holds now; false when it held nothing.
  // *moved (if given): an entry was created or moved, or events were lost
  // (a symlink-free proof is void).
  bool ReadEvents(bool* moved = nullptr);
  void HandleEvents(const char* buf, size_t len, bool* moved = nullptr);
  // Is ev about a Sync() marker (a name of ours in the view root)?
  bool IsSyncMarker(const inotify_event& ev) const;
  // One event about path (in a watched directory).
  // covered: a create or attribute change that a close of the same file in
  // the same read records (CoveredByAClose): not followed on its own.
  void HandleEvent(const std::string& path, uint32_t mask, bool covered = false);
  // Watches dir (relative to the view root, "" for the root) and everything
  // below it, recording each entry. seen, if given, collects recorded paths.
  void WatchTree(const std::string& dir, std::unordered_map<std::string, bool>* seen);
  void Unwatch(const std::string& dir);  // dir and below

  // Records what is at path now: an inode, or a tombstone when nothing is
  // there. Ok with the size recorded (0 for non-files), also when nothing
  // changed; NotFound when the entry is gone (tombstoned); Unavailable when
  // it is left for later (a file made with content: its close, or the
  // prehasher once it is idle); another error when it could not be read or
  // written (its own next events, or the next full scan, record it).
  // For kLinked: the file path was seen to be (another file there now, the
  // materializer's, placed since, is not recorded for it), the group the
  // name that was recorded took ("": found as for any name), and that
  // name's record as just made (its content stands for the file's while
  // size and mtime agree; without it, the file is hashed: a name's own
  // older record may have the same size and mtime and other bytes, written
  // in the same clock tick).
  struct LinkedTo {
    ino_t ino;
    std::string group;
    std::optional<v1::Inode> content;
  };
  Result<uint64_t> RecordPath(const std::string& path, Change change, bool attributes_only = false,
                              const LinkedTo* linked = nullptr);
  // path held file ino, a file of several names (link group `group`), and a
  // program wrote it or changed its attributes through path; path is gone
  // or holds another file since: the file's other names (as far as the
  // recorder saw them) hold that write or that attribute, and are recorded.
  void RecordOtherNamesOf(const std::string& path, ino_t ino, const std::string& group);
  // The link group of a file of several names (st, at path) and its other
  // names in the view: the group one of its names' records has already
  // (the least, if they differ), else a new one.
  struct Names {
    std::string group;
    std::vector<std::string> others;
  };
  Names NamesOf(const std::string& path, const struct stat& st);
  // Whether the file st shows has its record's size and mtime.
  bool AsRecorded(const std::string& path, const struct stat& st);
  // Path's record in the store, if it has one that parses.
  std::optional<v1::Inode> RecordOf(const std::string& path);
  // RecordPath for the event loop and the scans: a failure is logged, and
  // left to the entry's next event or the next full scan.
  // attributes_only: an IN_ATTRIB, nothing else (a symlink's target is then the store's).
  void Follow(const std::string& path, Change change, bool attributes_only = false);
  // The record of what st (fd) shows, its content aside.
  // known_target: a symlink's target, already known (it is not read again).
  // held_xattrs: the entry's record so far, whose extended attributes stand
  // for those this agent cannot read (file_xattrs.h). marks: fd's, whose
  // listing of names serves (FileMarks::Names).
  static v1::Inode InodeOf(int fd, const struct stat& st, const std::string* known_target = nullptr,
                           const v1::Inode* held_xattrs = nullptr, FileMarks* marks = nullptr);
  // The target the store holds for the symlink at path, when an attribute
  // change of it (IN_ATTRIB) is all that happened: a symlink's target never
  // changes in place, and reading it again would move its atime (relatime),
  // which a program's utimensat(AT_SYMLINK_NOFOLLOW) just set.
  std::optional<std::string> HeldSymlinkTarget(const std::string& path, const struct stat& st);
  // The content's chunks into inode: a stub's from its mark, an unchanged
  // file's from the record held (for kLinked: the record just made for the
  // name whose change it is), else hashed (deferred: see Deferred).
  Status FillContent(const std::string& path, Change change, const std::optional<v1::Inode>& stub,
                     const v1::Inode* held, v1::Inode* inode, Deferred* deferred);
  // What the ledger knows of a file before it is recorded.
  struct Known {
    std::optional<v1::Inode> stub;         // a stub's content, by its mark
    std::optional<Version> shown;          // the version whose content it holds
    const v1::Inode* same_file = nullptr;  // kLinked: LinkedTo::content
  };
  // Writes inode as path's record unless the store holds the same already.
  // content_out: the inode with the content it found (hashed or known).
  Result<uint64_t> WriteRecord(const std::string& path, const struct stat& st, v1::Inode inode, const Known& known,
                               Change change, v1::Inode* content_out = nullptr);
  // Tells the ledger that path, as st showed it, shows version, if it still shows so.
  void LedgerRecorded(const std::string& path, const struct stat& st, const Version& version);
  // A version in path's history that inode describes as it is (state and
  // chunks), if one does: one of this node's own, or, with only, exactly
  // that version, whoever wrote it.
  std::optional<Version> EarlierVersionShown(const std::string& path, const v1::Inode& inode,
                                             const Version* only = nullptr);
  void TombstonePath(const std::string& path);  // path and everything below
  // Whether the name holds a regular file now, and its record was made from
  // that file (its inode, size and mtime): made again after a removal still
  // to be handled, and recorded already. Under record_mu_.
  bool RecordedSince(const std::string& path);
  void FullScan();
  // Hashes path's content into inode; with deferred, chunks hashed ahead are
  // not stored but listed there (for ChunkPrehasher::Keep), else stored, as
  // durable as durability says (fsync's chunks by its synced record).
  Status HashContent(const std::string& path, v1::Inode* inode, Store::ChunkDurability durability,
                     Deferred* deferred = nullptr);
  // Hashes (and stores) fd's chunks, the file being st_size bytes long as st
  // (fstat of fd) saw it; a chunk in ahead whose bytes still match is taken as is.
  Status HashFd(int fd, const struct stat& st, v1::Inode* inode, Store::ChunkDurability durability,
                const std::vector<ChunkPrehasher::Ahead>& ahead = {}, Deferred* deferred = nullptr);
  // After a crash (Store::ChunksMayBeLost): stores again, from the view, the
  // chunks that records name and the store lost, where the view file is still
  // the recorded version.
  void RepairLostChunks();

  // The symlink guard's side (view_recorder_symlinks.cc).
  // The symlinks the recorder knows in the view (guard_ only).
  void NoteSymlink(const std::string& path, bool is_symlink);
  void ForgetSymlinks(const std::string& path);  // path and everything below
  // Walks the view and, if it holds no symlink and nothing moved meanwhile,
  // lets the guard lower its count to 0.
  void TryProof(uint64_t raises);
  // Whether the mount table changed since the last look (then the count is up).
  bool MountsChanged();
  void OnMountsChanged();
  void ObstacleMayBeGone();

  std::string view_root_;
  int root_fd_;
  int mounts_fd_;  // /proc/self/mountinfo (guard_ only)
  int inotify_fd_;
  int wake_fd_;
  Store& store_;
  ViewLedger& ledger_;
  // The ledger's view mutex: RecordPath and TombstonePath, from any thread.
  HurryingMutex<std::recursive_mutex>& record_mu_;
  SymlinkGuard* guard_;
  std::function<void()> settle_;
  BehindFn behind_;
  std::thread thread_;
  WatchedDirs watched_;
  std::vector<char> event_buf_;
  std::set<std::string> symlinks_;  // under record_mu_
  // The regular files' names the recorder looked at, by inode number, and
  // the inode number each name had then (under record_mu_): with the
  // ledger's, where NamesOf finds a file's other names (a name made by
  // link() whose first name the recorder saw with one name). Checked in the
  // view at each use; a name found elsewhere goes.
  std::unordered_map<ino_t, std::set<std::string>> names_of_inode_;
  std::unordered_map<std::string, ino_t> inode_of_name_;
  void NoteName(const std::string& path, ino_t ino);
  // Files made empty and not recorded yet: when their grace ends (under record_mu_).
  std::unordered_map<std::string, int64_t> late_creates_;
  void ForgetName(const std::string& path);
  uint64_t unwatched_ = 0;  // directories inotify_add_watch failed on, since the last full scan
  // What stopped the last proof and will stop the next (a mount point, a
  // directory we may not list, one too deep), until an event says it may be gone.
  std::string obstacle_;
  std::atomic<uint64_t> walks_{0};
  std::atomic<uint64_t> mount_changes_{0};
  std::atomic<uint64_t> hashed_ahead_{0};
  std::atomic<uint64_t> covered_events_{0};
  std::unique_ptr<ChunkPrehasher> prehasher_;  // made after the first scan (which stores what it hashes)

  // Sync(): a marker file in the view root; the loop reports when it sees it.
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t sync_seen_ = 0;
  uint64_t sync_next_ = 0;
};

}  // namespace onebox
