// Keeps the cluster namespace a tree when operations on different nodes
// cross. Records are per path and merge by last-writer-wins, so a directory
// removed (or moved away) on one node while another node puts an entry in it
// leaves a live entry whose parent is a tombstone: node A moves /x into /y
// while node B moves /y into /x, or A removes a directory while B writes a
// file in it. Such an orphan is repaired by making its dead ancestors live
// directories again, written here as new versions: an addition wins over a
// concurrent removal, so nothing written disappears from sight, and since
// every node reaches the same records every node ends with the same tree
// (two nodes repairing one directory at once write two versions of it, and
// last-writer-wins keeps one). Cycles cannot arise: an entry is named by its
// whole path, so no directory can hold itself. Only a removal recorded here
// (a tombstone; none is ever dropped) is repaired: an ancestor not here at
// all is on its way (anti-entropy brings records in no order), and made up
// here it would win over its real record.
//
// A record is checked a grace period after it won here, so that a removal
// whose records are still on their way is not taken for an orphan. Pushed
// records: a second; the recorder logs a removed directory's entries before
// the directory itself, and pushes keep log order, so a directory's tombstone
// arrives after those of the entries its remover knew of. Records repaired by
// anti-entropy come bucket by bucket, in hash order: they are noted only at
// the end of the round, with a grace of a few rounds, so that a round cut
// short is finished by the next before anything is checked.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

#include "consistency/store.h"
#include "nodeagent/peer/clock.h"
#include "nodeagent/peer/periodic.h"

namespace onebox {

class TreeRepair {
 public:
  // on_repaired(key) runs for each directory made live again (to put it in the view).
  using RepairedFn = std::function<void(const std::string& key)>;
  // Grace periods are timed by clock.
  TreeRepair(Store& store, RepairedFn on_repaired, std::chrono::milliseconds grace = std::chrono::seconds(1),
             Clock& clock = SteadyClock());
  ~TreeRepair();
  void Start();
  void Stop();
  // A peer's ns record for key won here: check it after the grace period
  // (or after `grace`, when given).
  void Note(const std::string& key);
  void Note(const std::string& key, std::chrono::milliseconds grace);
  // Checks key now: makes the dead ancestors of key (if live) or of the live
  // entries below it (if a tombstone) live directories. Returns how many.
  size_t Check(const std::string& key);
  uint64_t repaired() const { return repaired_; }

 private:
  // The directories one round of checks found live or made live: every
  // ancestor of each was checked in that round already, so the walks of the
  // round's other keys stop there (a burst of files in one directory reads
  // each ancestor once, not once per file). Never kept past the round.
  using LiveInRound = std::unordered_set<std::string>;
  // Checks the keys whose grace period has passed (every 200 ms while any is noted).
  void CheckDue();
  size_t Check(const std::string& key, LiveInRound& live_in_round);
  // Makes the dead ancestors of the live entry `live` live; returns how many.
  size_t ReviveAncestors(const std::string& live, uint32_t uid, uint32_t gid, LiveInRound& live_in_round);
  bool Revive(const std::string& dir, uint32_t uid, uint32_t gid, const std::string& because);

  Store& store_;
  RepairedFn on_repaired_;
  std::chrono::milliseconds grace_;
  std::atomic<uint64_t> repaired_{0};
  std::mutex mu_;
  Clock& clock_;
  std::map<std::string, Clock::time_point> due_;  // key -> when to check it
  PeriodicThread rounds_thread_;
};

}  // namespace onebox
