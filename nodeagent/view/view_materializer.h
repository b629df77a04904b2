// Puts what peers changed into this node's view, so that programs here see
// it: directories, symlinks and files, with their mode, owner and mtime. A
// file whose content is here (every chunk) is written in a staging directory
// and renamed into place whole, so no program ever reads half of it. A file
// whose content is only elsewhere becomes a stub: a sparse file of the right
// size, mode, owner and mtime, marked with kStubXattr; open() under the shim
// sees the mark and asks for Hydrate, which fetches the chunks from a node
// that holds them and renames the whole file over the stub.
//
// Everything placed is told to the ledger (view/view_ledger.h), so that the
// recorder does not take it for a program's change. Nothing here replaces or
// removes an entry a program changed after the peer's version was written:
// that change is newer, and the recorder records it. Keys from peers are
// checked (IsValidNsKey) before they touch the view.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "consistency/store.h"
#include "nodeagent/daemon/catch_up.h"
#include "naming/ns_key.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/view/symlink_guard.h"
#include "nodeagent/view/view_ledger.h"
#include "onebox/v1/namespace.pb.h"

namespace onebox {

struct FileOwner {
  uid_t uid;
  gid_t gid;
};

class ViewMaterializer {
 public:
  // With a guard, every symlink placed is announced to it first.
  ViewMaterializer(Store& store, ContentTransfer& content, ViewLedger& ledger, SymlinkGuard* guard = nullptr);
  ~ViewMaterializer();
  // Opens the view and its staging dir, puts in place what was applied but
  // never materialized (an agent stopped in between), then follows Enqueue on a
  // thread. Run before the recorder's first scan.
  Status Start(const std::string& view_root);
  void Stop();
  // A peer's record for path (an ns key) won here: make the view match.
  void Enqueue(const std::string& path);
  // Returns once everything enqueued before the call is done (the
  // recorder's full scan waits for it: view_recorder.h, settle).
  void Drain();
  // Drain for at most until deadline; whether it is done.
  bool DrainUntil(std::chrono::steady_clock::time_point deadline);
  // An exclusive create is to be made in dir (an ns key, looked up as the
  // shim does: symlinks resolved within the view): whether the view has a
  // directory there, at once, or after the placing of what is queued when
  // the store holds a peer's live directory there that the view does not
  // show yet (applied here, not placed: the placing thread runs below the
  // programs while it is behind), waiting for at most timeout.
  bool AwaitDirectory(const std::string& dir, std::chrono::milliseconds timeout);
  // Whether nothing enqueued is still waiting or being put in place.
  bool Settled();
  // Files programs lock (locks/node_locks.h): a peer's version is written
  // into the file itself, whose inode stays, so that a program holding it
  // open (a database) reads it through its descriptor; their writers
  // exclude each other through the cluster's locks. Before Start.
  void set_in_place(std::function<bool(const std::string& path)> in_place) { in_place_ = std::move(in_place); }
  // Entries queued from which the placing thread is behind, and runs below
  // the programs until it finds its queue empty (daemon/catch_up.h). Before Start.
  void set_backlog(uint64_t entries) { backlog_ = std::max<uint64_t>(entries, 1); }
  // open() met a stub: fetch its content and put the whole file in place.
  // Unavailable when no live node holds it. Nothing happens unless the entry
  // at path is a stub.
  Result<uint64_t> Hydrate(const std::string& path);

 private:
  void Loop(CatchUpThread& below_programs);
  // At start: the peers' records the view does not show as recorded.
  Result<std::vector<std::string>> NotInPlace();
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
  // Makes fd (a new staging file) a stub for inode; false when this file
  // system has no extended attributes (then the content comes now instead).
  Result<bool> MakeStub(int fd, const v1::Inode& inode);
  void Remove(const std::string& path);
  // Renames staging/tmp over path if the store still holds `version` there.
  Status Install(const std::string& path, int tmp_fd, const std::string& tmp, const Version& version, bool stub);
  // Install for a file programs lock (set_in_place): staging/tmp's content
  // and metadata written into (parent, name) itself, if it is still the
  // single-named regular file judged. An error (nothing written yet) leaves
  // the rename to Install.
  Status OverwriteInPlace(int parent, const std::string& name, const std::string& path, const std::string& tmp,
                          const Record& placed, const struct stat& judged);
  // After Install's rename: tells the ledger what is at path now.
  void TellLedgerPlaced(const std::string& path, int tmp_fd, const Record& placed);
  // May a peer's version (written at version's time) replace or remove what is
  // at (parent, name) now? Not if a program changed it later. *judged (if
  // given): the entry as this look saw it, if there is one.
  bool MayReplace(int parent, const std::string& name, const std::string& path, const Version& version,
                  std::optional<struct stat>* judged = nullptr);
  // After Install renamed over (parent, name): if the file it replaced (kept,
  // a link in staging) was written since MayReplace judged it, puts it back
  // (true); else lets it go.
  bool PutBackIfWritten(int parent, const std::string& name, const std::string& path, const std::string& kept,
                        const struct stat& judged);
  // Gives a staging file (fd, written, named tmp) the record's owner, mode
  // and mtime, marks it as placed (ViewLedger::MarkPlacement: after a
  // restart, what still matches is known to be ours), and closes fd while it
  // is still in staging: an IN_CLOSE_WRITE in the view is a program's write.
  // Returns an O_PATH descriptor of it for Install.
  Result<int> FinishPlacement(int fd, const std::string& tmp, const v1::Inode& inode, const std::string& path,
                              const Version& version);
  std::string NewTempName();
  // Another name of path's file (a record of the same link group, alike in
  // content and attributes) that this node's view shows as recorded: an
  // O_PATH descriptor of it and its name, for path to become a hard link of
  // it. None when no name of the group is placed here yet, or none agrees.
  struct Twin {
    int fd = -1;
    std::string path;
    struct stat st;
  };
  std::optional<Twin> TwinOf(const std::string& path, const v1::Inode& inode);
  // path now shows a version of link group `group` (Placed by the materializer).
  void JoinedGroup(const std::string& group, const std::string& path);
  // The materializer made or removed a name of file ino: the ledger's looks
  // at its other names take their new ctime and link count (under the view
  // mutex).
  void RelookNamesOf(ino_t ino);

  Store& store_;
  ContentTransfer& content_;
  ViewLedger& ledger_;
  SymlinkGuard* guard_;
  bool starting_ = false;  // Start's catch-up, before the recorder's first look
  int root_fd_ = -1;
  int staging_fd_ = -1;
  uint64_t self_node_;
  std::atomic<uint64_t> temp_counter_{0};
  const pid_t pid_ = getpid();  // in temp names
  std::optional<FileOwner> new_file_owner_;  // whose a new file in staging is (Start finds out)
  std::function<bool(const std::string&)> in_place_;

  // Writes in place cut short, by path: the version, and how many tries of
  // it were cut short in a row. kInPlaceTries in all, then the file is left
  // so until its next version (a failure that stays, EIO, is not retried
  // forever).
  static constexpr int kInPlaceTries = 3;
  std::mutex partial_mu_;
  std::unordered_map<std::string, std::pair<Version, int>> partial_tries_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::string> queue_;
  uint64_t backlog_ = kCatchUpBacklog;
  std::unordered_set<std::string> queued_;
  uint64_t pushed_ = 0, done_ = 0;  // queue entries pushed and done, in that order (Drain's tickets)
  bool stopping_ = false;
  std::thread thread_;

  std::mutex groups_mu_;
  // The names this node placed for each link group (a hint: checked at use).
  std::unordered_map<std::string, std::set<std::string>> group_names_;
  // One materialization or hydration of a path at a time (a hydration hurries a materialization).
  std::array<HurryingMutex<std::mutex>, 32> path_mu_;
  HurryingMutex<std::mutex>& PathMutex(const std::string& path) {
    return path_mu_[std::hash<std::string>()(path) % path_mu_.size()];
  }
};

}  // namespace onebox
