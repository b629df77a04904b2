// Puts what peers changed into this node's view, so that programs here see
// it: directories, symlinks and files, with their mode, owner and mtime. A
// file whose content is here (every chunk) is written in a staging directory
// and renamed into place whole, so no program ever reads half of it. A file
// whose content is only elsewhere becomes a stub: a sparse file of the right
// size, mode, owner and mtime, marked with kStubXattr; open() under the shim
// sees the mark and asks for Hydrate, which fetches the chunks from a node
// that holds them and renames the whole file over the stub.
//
// The view recorder must not take these changes for a program's (it would
// record them back as new versions): IsOurs() tells it which entries are
// exactly as this class left them. A stub a program moved, linked, touched or
// chmod'ed is recorded with the content its mark names (StubContent), never
// hashed (it holds no content).
//
// Nothing here replaces or removes an entry a program changed after the
// peer's version was written: that change is newer, and the recorder records
// it. Keys from peers are checked (IsValidNsKey) before they touch the view.
#pragma once

#include <sys/stat.h>
#include "naming/ns_key.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <optional>
#include <unordered_set>

#include "consistency/store.h"
#include "nodeagent/sync/content_transfer.h"
#include "proto/state_page.h"
#include "nodeagent/view/symlink_guard.h"
#include "onebox/v1/namespace.pb.h"

namespace onebox {

class ViewMaterializer {
 public:
  // With a guard, every symlink placed is announced to it first.
  ViewMaterializer(Store& store, ContentTransfer& content, StatePage& page, SymlinkGuard* guard = nullptr);
  ~ViewMaterializer();
  // Opens the view and its staging dir, puts in place what was applied but
  // never materialized (an agent stopped in between), then follows Enqueue on a
  // thread. Run before the recorder's first scan.
  Status Start(const std::string& view_root);
  void Stop();
  // Held by the recorder while it records and by us while we change the view:
  // a materialization and a recording never interleave (fsync's RecordNow
  // against a rename from a peer).
  std::recursive_mutex& view_mutex() { return view_mu_; }

  // A peer's record for path (an ns key) won here: make the view match.
  void Enqueue(const std::string& path);
  // Whether this path was put in the view by us in this run (FullScan must not
  // take a peer's entry we never placed for one a program removed).
  bool WasPlaced(const std::string& path);
  // The content a stub's mark names (size and chunks), if fd is a stub of ours.
  std::optional<v1::Inode> StubContent(int fd);
  // Returns once everything enqueued before the call is done (tests, Sync).
  void Drain();
  // open() met a stub: fetch its content and put the whole file in place.
  // Unavailable when no live node holds it. Nothing happens unless the entry
  // at path is a stub.
  Result<uint64_t> Hydrate(const std::string& path);

  // For the recorder: the entry at path, as fstat shows it, is one this class
  // put there and nobody changed since (or a stub of ours from before a restart).
  // content_changed (a close after writing): only our own placements count,
  // not what the recorder noted (timestamps may be too coarse to tell).
  bool IsOurs(const std::string& path, int fd, const struct stat& st, bool content_changed = false);
  // For the recorder: the entry at path, as st shows it, is what the store
  // now holds (just recorded, or found unchanged).
  void NoteRecorded(const std::string& path, const struct stat& st);
  // For the recorder: path is gone from the view.
  void Gone(const std::string& path);

  uint64_t materialized() const { return materialized_; }
  uint64_t stubs() const { return page_.stubs.load(); }

 private:
  struct Placed {
    ino_t ino;
    int64_t ctime_ns;
    mode_t mode;  // directories: what we left (their ctime moves with every entry)
    uid_t uid;
    gid_t gid;
    off_t size;   // with mtime: against coarse ctimes (kernels before 6.13)
    int64_t mtime_ns;
    bool by_materializer;  // else noted by the recorder
    bool Same(const struct stat& st) const;
  };
  void Loop();
  void Materialize(const std::string& path);
  // Opens the directory that holds path (O_PATH), making missing parents as
  // the store describes them; never through a symlink. -1 on failure.
  int OpenParent(const std::string& path, bool create);
  Status PlaceDirectory(const std::string& path, const v1::Inode& inode, const Version& version);
  Status PlaceSymlink(const std::string& path, const v1::Inode& inode, const Version& version);
  Status PlaceSymlinkAnnounced(const std::string& path, const v1::Inode& inode, const Version& version);
  // A whole file when every chunk is here (or fetch is set and they can be
  // fetched), else a stub.
  // fetch: get missing content from peers (else a stub stands for it);
  // as_stub: a stub even if the store seems to hold the content.
  Result<uint64_t> PlaceFile(const std::string& path, const v1::Inode& inode, const Version& version, bool fetch,
                             bool as_stub = false);
  // The file's content into fd (a new staging file): each chunk from the
  // store, or straight from a peer that holds it, written at its offset.
  // local_only: NotFound when a chunk is not in the local store.
  Status WriteContent(int fd, const std::string& path, const v1::Inode& inode, const Version& version,
                      bool local_only = false);
  void Remove(const std::string& path);
  // Renames staging/tmp over path if the store still holds `version` there.
  Status Install(const std::string& path, int tmp_fd, const std::string& tmp, const Version& version, bool stub);
  void SetStub(const std::string& path, bool stub);
  // May a peer's version (written at version's time) replace or remove what is
  // at (parent, name) now? Not if a program changed it later.
  bool MayReplace(int parent, const std::string& name, const std::string& path, const Version& version);
  // Gives a staging file the record's owner, mode and mtime, then marks it
  // (kPlacedXattr) with the path, inode, size and mtime it is placed with:
  // after a restart, what still matches is known to be ours.
  void FinishPlacement(int fd, const v1::Inode& inode, const std::string& path);
  void RememberPlaced(const std::string& path, int fd);
  void RememberPlaced(const std::string& path, const struct stat& st);
  std::string NewTempName();

  Store& store_;
  ContentTransfer& content_;
  StatePage& page_;
  SymlinkGuard* guard_;
  std::recursive_mutex view_mu_;
  bool starting_ = false;  // Start's catch-up, before the recorder's first look
  int root_fd_ = -1;
  int staging_fd_ = -1;
  uint64_t self_node_;
  std::atomic<uint64_t> temp_counter_{0};
  std::atomic<uint64_t> materialized_{0};

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::string> queue_;
  std::unordered_set<std::string> queued_;
  uint64_t enqueued_ = 0, done_ = 0;
  bool busy_ = false;
  bool stopping_ = false;
  std::thread thread_;

  std::array<std::mutex, 32> path_mu_;  // one materialization or hydration of a path at a time
  std::mutex& PathMutex(const std::string& path) { return path_mu_[std::hash<std::string>()(path) % path_mu_.size()]; }

  std::mutex placed_mu_;
  std::unordered_map<std::string, Placed> placed_;
  std::unordered_set<std::string> stubs_;
  std::unordered_set<std::string> placeholders_;  // parents made before their record came
};

}  // namespace onebox
