// Who made each change in the view, which version of its record each entry
// shows, and whether an entry is still as it was left: the one owner of that
// knowledge in view/, so that data flows one way (peers -> materializer ->
// view -> recorder -> store) and no part asks another what it did.
//
// The materializer tells the ledger what it placed, and marks each file it
// places (kPlacedXattr: its inode, size, mtime, version and path as placed),
// so that "placed by us and unchanged since" survives a restart. The recorder tells
// it what it recorded and what is gone. The recorder asks whether a change
// it sees is the materializer's own (then there is nothing to record: the
// store has that version already); the materializer asks whether an entry is
// as the store last saw it (then a peer's newer version may replace it; one a
// program changed since is newer, and the recorder records it). Stubs (files
// whose content is elsewhere, marked kStubXattr) are counted here, on the
// state page's `stubs`. The ledger's mutex is the view's: a materialization
// and a recording never interleave.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "consistency/store.h"
#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/view/file_look.h"
#include "onebox/v1/namespace.pb.h"
#include "proto/state_page.h"

namespace onebox {

// The agent's marks on one view file (extended attributes: a stub's and a
// placement's), each read at most once however often one look asks for it.
// Which are there is one listxattr, so a file no agent marked (what a
// program wrote) costs one system call.
class FileMarks {
 public:
  explicit FileMarks(int fd) : fd_(fd) {}
  int fd() const { return fd_; }
  // The stub mark (what names its content: ViewLedger::StubMark), or "" when fd is no stub.
  const std::string& Stub() { return Read(stub_, kStub); }
  // The placement mark, or "" when fd has none.
  const std::string& Placement() { return Read(placed_, kPlaced); }
  // Whether fd surely has no stub mark: listed without one, or its read
  // found none (not a read refused, as a chmod 000 refuses an agent that
  // is not root).
  bool NoStubMark() {
    Stub();
    return absent_[kStub];
  }
  // fd's extended attribute names as the marks' one listxattr gave them
  // ('\0' after each), for ReadXattrs and ShowsXattrs (file_xattrs.h), so
  // that a look lists them once; nullopt when it could not list them all
  // (too many for its buffer, or refused): those then list for themselves.
  // Read once: valid until the agent changes fd's attributes (a FileMarks
  // serves one look).
  std::optional<std::string_view> Names();

 private:
  enum Which { kStub, kPlaced };
  const std::string& Read(std::optional<std::string>& mark, Which which);
  void List();  // once
  int fd_;
  bool listed_ = false;
  std::optional<std::string> names_;
  bool may_have_[2] = {true, true};
  bool absent_[2] = {false, false};
  std::optional<std::string> stub_, placed_;
};

// Sets an agent's mark on fd: the system call itself, not libc's, which a
// shim preloaded into the agent (started from a shell under it) would
// refuse for the agent's marks. Returns 0 or -1 (errno).
int SetMark(int fd, const char* name, const std::string& value);

class ViewLedger {
 public:
  ViewLedger(Store& store, StatePage& page) : store_(store), page_(page) {}

  // Held by the recorder while it records and by the materializer while it
  // changes the view (a waiter hurries the materializer: daemon/catch_up.h).
  HurryingMutex<std::recursive_mutex>& view_mutex() { return view_mu_; }

  // --- What the materializer did.
  // Path was put in place, as st shows it (after the rename), showing
  // version; in_place: written into the file itself, partial: only in part
  // (a mix no program wrote, and no version whole: to be placed again).
  void Placed(const std::string& path, const struct stat& st, const Version& version, bool in_place = false,
              bool partial = false);
  // When Placed was last told (CoarseMonotonicNs): the recorder rests while the materializer places.
  int64_t LastPlacedNs() const { return last_placed_ns_.load(std::memory_order_relaxed); }
  // The materializer made or removed another name of the file at path (a
  // hard link), which moved its ctime and link count alone (st: a look
  // after): the look kept for path takes them, if nothing else moved.
  void Relooked(const std::string& path, int fd, const struct stat& st);
  // Path was put in place, but a program changed it at once: not ours.
  void NotPlaced(const std::string& path);
  // Marks a file about to be put at path (fd, in staging) as placed by us, showing version.
  static void MarkPlacement(int fd, const std::string& path, const Version& version);
  // The materializer is about to remove path from the view (a peer's
  // removal won): the recorder takes the removal's event for it, not for a
  // program's (TakeOurRemoval). Undone by TakeOurRemoval when the unlink fails.
  void RemovingOurs(const std::string& path);
  // The materializer removed path (and what was below it) for a peer's
  // tombstone at version `tombstone`: Gone, and until the name shows
  // something again, a version newer than the tombstone is one the view
  // never showed (ShowedOlderVersion), whatever removal the recorder comes
  // to see of the name (a listing's entry found gone as it records it).
  void RemovedOurs(const std::string& path, const Version& tombstone);
  // The mark (kStubXattr) of a stub of inode's content: the content's
  // description itself when small, sealed with a key of this node's store
  // (a mark a program makes up is no stub's), else its id, the description
  // kept in the store. StubContent reads either back.
  Result<std::string> StubMark(const v1::Inode& inode);
  // Reads (or, for a new store, makes and keeps) the key that seals small
  // stubs' marks. The agent calls it at start and does not start without
  // it: while the key is unknown, no small stub's mark can be read, and a
  // stub a program touched would be taken for a file of zeros.
  Status PrepareStubMarks();
  // Counts path as a stub or not; whether that changed the count.
  bool SetStub(const std::string& path, bool stub);
  // Whether path was a stub here by the last look; it is not one any more.
  bool ForgetStub(const std::string& path);
  bool MayHoldStubs();  // some stub counted now
  // While held, the count the shim reads does not drop below the most it
  // was since the hold began. The recorder holds it while it reads a round of
  // events: a program's move of a directory forgets the stubs under the
  // old name (IN_MOVED_FROM) before the walk of the new one, in the same
  // round, counts them again. (Counting a few too many for a moment costs
  // an open a look at the file's mark; too few, a program the stub's zeros.)
  void HoldStubCount();
  void ReleaseStubCount();
  // A directory made before its record came, as fd and st show it made
  // (its mode, and the extended attributes it took from its parent's
  // default ACL): no one's while it stays so, also once a peer's record
  // came, until that is put in place (PlaceholderFilled).
  void Placeholder(const std::string& path, int fd, const struct stat& st);
  void PlaceholderFilled(const std::string& path);

  // --- What the recorder saw.
  // The entry at path, as st shows it, is version (recorded just now, or found unchanged).
  void Recorded(const std::string& path, const struct stat& st, const Version& version);
  // The entry at path was recorded as version, and changed while the
  // recorder looked: what it shows now is a change no look matches (its
  // own next event records it). What the ledger held of it before would
  // pass that change for one it had seen.
  void RecordedButChanged(const std::string& path, const Version& version);
  // Path and everything below it are gone from the view.
  void Gone(const std::string& path);

  // For the recorder, at a removal's event: was it the materializer's? (Each
  // removal the materializer announced answers yes once.)
  bool TakeOurRemoval(const std::string& path);
  // Events were lost (a full scan follows): no removal's event is to come.
  void ForgetOurRemovals();

  // --- Questions.
  // For the recorder: the entry at path (fd, as fstat shows it in st) is
  // one the materializer put there and nobody changed since (or a stub of
  // ours from before a restart). content_changed (a close after writing):
  // only placements count, not what was recorded (timestamps may be too
  // coarse to tell). attributes_changed (an IN_ATTRIB): the extended
  // attributes must be as it showed them too (setting one moves only the
  // ctime, which two changes within one clock tick leave alike on kernels
  // before 6.13, Debian 12's among them; later ones give a ctime read since
  // the last change a finer one).
  bool IsOurs(const std::string& path, FileMarks& marks, const struct stat& st, bool content_changed = false,
              bool attributes_changed = false);
  // For the recorder, at the close of a write: the materializer wrote the
  // file at path in place (ViewMaterializer::OverwriteInPlace) and it is
  // still as it left it, so the write was not a program's. (Only then: a
  // program's write into a file placed by rename may look alike, in the
  // same clock tick.)
  bool WrittenInPlaceByUs(const std::string& path, const struct stat& st);
  // Whether path (st, as it is now) is still as the materializer last put it there.
  bool PlacedAndUnchanged(const std::string& path, const struct stat& st);
  // For the materializer: version is the one it last wrote in place at
  // path, and nothing was recorded there since. Placing it again would only
  // take back what a program wrote since in the same clock tick (a look
  // cannot tell), which the program's unlock records.
  bool LastWrittenInPlace(const std::string& path, const Version& version);
  // For the materializer: the entry at path (fd, st) is as the store knows
  // it (placed by us, or recorded, and unchanged since), so last-writer-wins
  // has decided already and a peer's newer version may replace it.
  bool AsTheStoreSawIt(const std::string& path, int fd, const struct stat& st);
  // The version whose content the file at path (fd, as st shows it) holds,
  // when the ledger knows: it wrote or hashed those bytes, and the file's
  // inode, size and mtime are as they were then (its mode or owner may have
  // changed since). Else what its placement mark says.
  std::optional<Version> ContentShown(const std::string& path, FileMarks& marks, const struct stat& st);
  // For the view audit: the version path showed at its last placement or
  // recording by this run, when that look was a whole one (not a recording
  // the file changed under, nor a write in place cut short); nothing for a
  // path not seen so.
  std::optional<Version> LastShown(const std::string& path);
  // Whether this run has seen path in the view: placed by the
  // materializer, or recorded. A peer's entry not seen yet was removed by
  // no program here.
  bool SeenInView(const std::string& path);
  // Whether this run's view is known to have shown path at an older version
  // than this one (placed or recorded), or to have shown it removed by the
  // materializer at an older tombstone (unknown, e.g. after a restart: no).
  // A removal seen then was of that older version, not of this one.
  bool ShowedOlderVersion(const std::string& path, const Version& version);
  // The version the recorder last recorded path as (not the materializer's
  // placement), if st shows path with the look it left then.
  std::optional<Version> UntouchedSinceRecorded(const std::string& path, const struct stat& st);
  // The paths this run last saw (placed or recorded) as inode ino: the other
  // names of a hard-linked file, as far as the ledger knows them (a look at
  // each is older than now: ask the view before trusting one).
  std::vector<std::string> NamesLastSeenAs(ino_t ino);
  // The content a stub's mark names (size and chunks), if fd is a stub of ours.
  std::optional<v1::Inode> StubContent(FileMarks& marks);
  static bool IsStub(int fd);
  // What a file's placement mark says: whether the materializer placed fd
  // (at path, as st shows it) and nobody rewrote, replaced or moved it since
  // (true across restarts), and with which version (unknown for marks of
  // agents before 0.1.1, which did not keep it).
  struct Placement {
    bool placed = false;
    std::optional<Version> version;
  };
  static Placement PlacedBy(FileMarks& marks, const struct stat& st, const std::string& path);
  static bool UnchangedSincePlaced(int fd, const struct stat& st, const std::string& path) {
    FileMarks marks(fd);
    return PlacedBy(marks, st, path).placed;
  }

 private:
  // fd (at path) shows the extended attributes of path's version shown (or
  // that version is no longer known).
  bool XattrsAsShown(const std::string& path, int fd, const Version& shown);
  // For IsOurs: whether a placed file (unchanged since, by its mark) still
  // has the mode and owner of the version it was placed with; a mark of an
  // older agent is renewed with the current version when the file shows it.
  bool PlacedAndUntouched(const std::string& path, FileMarks& marks, const struct stat& st);
  // The inode of key's version `version`: the current record's, or one in its history.
  std::optional<v1::Inode> InodeOfVersion(const std::string& key, const Version& version);
  // The key of the stubs' inline marks (StubMark): made at random once per
  // store and kept in its meta family (PrepareStubMarks). Empty while it
  // cannot be read or made; each call tries again.
  std::string StubMarkKey();
  Status LoadStubMarkKeyLocked();
  std::mutex stub_mark_key_mu_;
  std::string stub_mark_key_;  // guarded by stub_mark_key_mu_

  struct LeftAs {
    FileLook look;
    bool by_materializer;  // else recorded
    Version shown;         // the version of the record it showed then
    bool in_place = false;  // written into the file programs hold (ViewMaterializer::OverwriteInPlace)
    bool partial = false;   // so, only in part: it shows no version whole
  };
  bool SetStubLocked(const std::string& path, bool stub);
  void PublishStubsLocked();  // into the state page: at least the held floor
  // left_ and names_of_ino_ change together, through these only.
  using LeftMap = std::map<std::string, LeftAs>;
  void LeaveLocked(const std::string& path, LeftAs left);
  void ForgetLeftLocked(LeftMap::iterator it);
  // Gone's work; removals_too: the materializer's removals noted below path as well.
  void GoneLocked(const std::string& path, bool removals_too);
  // A file of several names whose placement mark names another of them
  // (placed as links of it: ViewMaterializer::TwinOf), unchanged since by
  // that mark, and showing path's own record, of a link group.
  bool LinkedAndUntouched(const std::string& path, FileMarks& marks, const struct stat& st);
  // path (fd) is as left (look `now`): FileLook::Unchanged, and for a file
  // of several names, whose ctime that does not count, or after an
  // attribute event (attributes_changed), its extended attributes too.
  bool UnchangedSince(const std::string& path, const LeftAs& left, const FileLook& now, int fd,
                      bool attributes_changed = false);
  // Removals announced whose events are not seen yet: how many, and when
  // the last was announced. One without an event (its directory not
  // watched yet) lapses after kOurRemovalLapse, so that it cannot hide a
  // program's removal of the name for long.
  struct OurRemovals {
    int count = 0;
    std::chrono::steady_clock::time_point last;
  };
  std::unordered_map<std::string, OurRemovals> our_removals_;

  Store& store_;
  StatePage& page_;
  HurryingMutex<std::recursive_mutex> view_mu_;
  std::atomic<int64_t> last_placed_ns_{0};
  HurryingMutex<std::mutex> mu_;  // the sets below (held across reads of the store by the placing thread)
  // The sets of names are ordered, so that a directory's entries are one
  // range (GoneLocked: a removal of one name out of a million entries looks
  // at that name's, not at every entry).
  LeftMap left_;
  // left_'s names by the inode number they were left with (none for 0), for
  // NamesLastSeenAs.
  std::unordered_multimap<ino_t, std::string> names_of_ino_;
  // Names the materializer removed (RemovedOurs) and that showed nothing
  // since: the tombstone's version, and when (for the sweep that bounds the
  // map, once it holds removed_sweep_at_ names).
  struct RemovedAs {
    Version tombstone;
    std::chrono::steady_clock::time_point when;
  };
  std::map<std::string, RemovedAs> removed_;
  static constexpr size_t kRemovedSweepAt = 4096;  // at least
  size_t removed_sweep_at_ = kRemovedSweepAt;
  std::set<std::string> stubs_;
  int stub_holds_ = 0;           // HoldStubCount's, not yet released
  size_t stub_count_floor_ = 0;  // while held
  struct MadeAs {
    FileLook look;
    v1::Inode xattrs;
  };
  std::map<std::string, MadeAs> placeholders_;
};

}  // namespace onebox
