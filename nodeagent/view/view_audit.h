// Whether the view shows what the store holds, checked, and told as a digest
// (Cluster/Status view_digest, `onebox status`).
//
// For every live record of the namespace it describes the entry programs
// see in the view: its type, mode (and owner when the agent runs as root),
// for files and symlinks its size and mtime, a symlink's target, and a
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
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <mutex>
#include <string>
#include <thread>

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
  // Checks every period on a thread of its own, when the store changed since
  // the last check or the last one found something to repair, until Stop.
  void Start(std::chrono::milliseconds period = std::chrono::seconds(3));
  void Stop();

  struct Report {
    std::string digest;  // hex SHA-256
    uint64_t entries = 0;
    uint64_t stale = 0;  // files showing an older version than the store's
  };
  // One check. With repair, stale files seen so twice in a row are handed to
  // the materializer.
  Result<Report> Check(bool repair);
  uint64_t repaired() const { return repaired_; }

 private:
  // The periodic check, skipped while nothing changed since one that found all well.
  void Round();
  // A regular file's content, named by its size and chunks (or by its look,
  // when it is not recorded yet); *shown: the version the ledger knows it shows.
  std::string ContentOf(const std::string& key, int fd, const struct stat& st, const Record& rec,
                        const v1::Inode& inode, std::optional<Version>* shown);
  // The content name of key's version `version`: the record's, or one in its history ("" if not kept).
  std::string ChunksOfVersion(const std::string& key, const Version& version, const Record& rec,
                              const v1::Inode& inode);

  Store& store_;
  ViewLedger& ledger_;
  int root_fd_;
  RepairFn repair_;
  std::mutex check_mu_;                    // one check at a time; stale_
  std::map<std::string, Version> stale_;  // seen stale by the last repairing check, showing this
  std::atomic<uint64_t> repaired_{0};
  HlcTimestamp checked_at_ = 0;  // the round thread's: the store's clock at the last round
  bool pending_ = false;         // the last round saw stale files (to repair at the next)
  PeriodicThread rounds_thread_;
};

}  // namespace onebox
