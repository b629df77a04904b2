// Whether the view shows what the store holds, checked, and told as a digest
// (Cluster/Status view_digest, `onebox status`).
//
// For every live record of the namespace it describes the entry programs
// see in the view: its type, mode (and owner when the agent runs as root),
// for files and symlinks its size and mtime, a symlink's target, a file's
// and a directory's replicated extended attributes (file_xattrs.h), and a
// file's content. A file's content is named by the chunks of the version the
// ledger knows it shows (view/view_ledger.h: the agent wrote or hashed those
// bytes, and the file's inode, size and mtime are as they were then), a
// stub's by its mark; a file written since and not recorded yet by its look
// (this node's own: the digest differs until the recorder takes it). The
// digest over all of it is equal on two nodes exactly when their programs
// see the same entries with the same bytes. Left out: directories' mtimes
// (each node's own), and fifos, sockets and devices, which stay on the node
// that made them.
//
// Repair: a file that shows an older version than the store's current one
// (its inode, size and mtime as when the ledger learned which it shows), and
// found so by two checks in a row, is handed to the materializer with a log
// line (a tie the view lost, or a replacement a stop cut short). Nothing
// else is touched: an entry a program changed is the recorder's to record.
//
// Cost: the view falls behind the store by a record it does not show yet:
// one written or applied here (a peer's that won, a restore, a repair's),
// which the store lists for the audit (Store::TakeNsWritten), or a tie the
// view lost that the recorder finds (Note). A round looks at the keys listed
// and noted since the last one, and at those stale at the last look, but
// not at one the ledger saw put in place or recorded at the store's current
// version (ViewLedger::LastShown): a program's file recorded here, a peer's
// the materializer placed. A file a look finds neither showing the store's
// version nor stale (absent, its placement under way or failed; changed by
// a program and not recorded yet) is looked at again 1, 2, 4, 8 and 16
// rounds after the look before, until it is one or the other or those six
// looks are done. So writing N files costs the audit N lookups and looks
// only at what did not come out as written (six at most each), an idle
// node looks at nothing, and a whole check (every record: an open, a stat
// and the marks each) runs only at the first round after a start, and when
// the store listed more keys than it keeps (then it listed none).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <mutex>
#include <string>
#include <thread>

#include "consistency/digest.h"
#include "consistency/store.h"
#include "nodeagent/peer/periodic.h"
#include "nodeagent/view/file_look.h"
#include "nodeagent/view/view_ledger.h"

namespace onebox {

class ViewAudit {
 public:
  using RepairFn = std::function<void(const std::string& key)>;
  ViewAudit(Store& store, ViewLedger& ledger, const std::string& view_root, RepairFn repair);
  ~ViewAudit();
  // Has the store list the namespace keys written from now on, and rounds
  // every period on a thread of its own, until Stop: a whole check at the
  // first, then the keys written and noted. Stop ends both (the store must
  // still be there at the first Stop after Start).
  void Start(std::chrono::milliseconds period = std::chrono::seconds(3));
  void Stop();
  // The next round looks at key (unless it shows the store's current version).
  void Note(const std::string& key);

  struct Report {
    std::string digest;  // hex SHA-256
    uint64_t entries = 0;
    uint64_t stale = 0;  // files showing an older version than the store's
  };
  // One check of every record. With repair, stale files seen so twice in a
  // row are handed to the materializer.
  Result<Report> Check(bool repair);
  // A repairing check of the keys noted since the last one, of those stale
  // at the last check and of those due again (above), but for those the
  // ledger saw put in place or recorded at the store's current version
  // (entries: how many were looked at; no digest).
  Result<Report> CheckNoted();
  // One round, as the rounds thread runs them (tests run their own, with a
  // thread started for a long period): a whole check at the first and when
  // the store listed too many keys, else the keys written and noted.
  void Round();
  uint64_t repaired() const { return repaired_; }
  uint64_t rounds() const { return rounds_; }
  uint64_t whole_rounds() const { return whole_rounds_; }  // whole checks the rounds ran to the end
  uint64_t looked() const { return looked_; }              // entries CheckNoted looked at

 private:
  // What a look found a file's entry showing: rec's version, an older one
  // (stale), or something else (absent, a version not known, another
  // type); kNotJudged for what is not a file.
  enum class Shows { kCurrent, kOlder, kOther, kNotJudged };
  // Adds key's entry as the view shows it to digest, and to stale when the
  // file shows an older version than rec, the store's current one.
  Shows Look(const std::string& key, const Record& rec, const v1::Inode& inode, Sha256OfParts& digest,
             std::map<std::string, Version>& stale);
  // With repair, hands the files stale now and at the last check, showing
  // the same version both times, to the materializer; keeps stale for the next.
  void RepairStale(std::map<std::string, Version> stale, bool repair);
  // A regular file's content, named by its size and chunks (or by its look,
  // when it is not recorded yet); *shown: the version the ledger knows it shows.
  std::string ContentOf(const std::string& key, FileMarks& marks, const struct stat& st, const Record& rec,
                        const v1::Inode& inode, std::optional<Version>* shown);
  // The content name of key's version `version`: the record's, or one in its history ("" if not kept).
  std::string ChunksOfVersion(const std::string& key, const Version& version, const Record& rec,
                              const v1::Inode& inode);

  Store& store_;
  ViewLedger& ledger_;
  int root_fd_;
  RepairFn repair_;
  std::mutex check_mu_;                    // one check at a time; stale_, unsettled_, checks_noted_
  std::map<std::string, Version> stale_;  // seen stale by the last repairing check, showing this
  // Files CheckNoted found neither showing the store's version nor stale:
  // looked at again 1, 2, 4, 8 and 16 checks after the look before (31
  // rounds, about a minute and a half: a placement under way or retried),
  // for one version, then let go; at most kUnsettledKept of them.
  static constexpr int kLooksWhileUnsettled = 6;
  static constexpr size_t kUnsettledKept = 1 << 16;
  struct Unsettled {
    std::optional<Version> version;  // the store's at the looks (they count for one version)
    int looks = 0;
    uint64_t next_check = 0;
  };
  std::map<std::string, Unsettled> unsettled_;
  uint64_t checks_noted_ = 0;
  uint64_t unsettled_dropped_ = 0;  // past kUnsettledKept, since the last warning
  // Counts a look at key (the store's version then, unknown after a failed
  // read) that found it neither current nor stale, and when to look again.
  void Unsettle(const std::string& key, const std::optional<Version>& version);
  std::atomic<bool> listing_{false};  // the store lists written keys for us (Start to Stop)
  std::atomic<uint64_t> repaired_{0};
  std::atomic<uint64_t> rounds_{0};
  std::atomic<uint64_t> whole_rounds_{0};
  std::atomic<uint64_t> looked_{0};
  std::mutex noted_mu_;
  std::set<std::string> noted_;  // keys to look at in the next round
  std::atomic<bool> whole_due_{true};  // the next round checks every record
  PeriodicThread rounds_thread_;
};

}  // namespace onebox
