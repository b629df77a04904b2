// The locks of one file as the kernel keeps them, for the node that is the
// file's lock home (locks/lock_home.h): owners holding shared or exclusive
// byte ranges, with the kernel's rules for fcntl locks (a new lock replaces
// the owner's own over its range, splitting and merging them; owners never
// conflict with themselves) and, with whole-file ranges, for flock(2).
// A pure data structure: no threads, no I/O.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace onebox {

// Who holds a lock: a process (POSIX locks) or an open file description
// (flock and OFD locks), on one node.
struct LockOwner {
  std::string node_id;
  std::string key;  // "p<pid>" or "o<token>" (locks/node_locks.h)
  int64_t pid = 0;  // what F_GETLK reports: the process that took it (-1: an OFD lock)
  bool operator==(const LockOwner& o) const { return node_id == o.node_id && key == o.key; }
};

enum class LockType { kRead, kWrite, kUnlock };

// [start, end); kToEnd: to the end of the file, however long it grows.
struct LockSpan {
  static constexpr uint64_t kToEnd = std::numeric_limits<uint64_t>::max();
  uint64_t start = 0;
  uint64_t end = kToEnd;
  bool Overlaps(const LockSpan& o) const { return start < o.end && o.start < end; }
};

struct HeldLock {
  LockOwner owner;
  LockType type = LockType::kRead;
  LockSpan span;
};

class FileLocks {
 public:
  // The first lock of another owner that a lock of type over span would
  // conflict with (two reads never do; kUnlock never does).
  std::optional<HeldLock> Conflict(const LockOwner& owner, LockType type, const LockSpan& span) const;
  // Sets owner's lock over span to type (kUnlock: removes it there), as
  // fcntl does: the owner's locks beside or under span of the same type
  // merge with it, those of another type are cut back. No conflict check.
  void Apply(const LockOwner& owner, LockType type, const LockSpan& span);
  // Drops every lock of owner; of every owner on node_id when owner.key is empty.
  void Release(const LockOwner& owner);
  void ReleaseNode(const std::string& node_id);
  // owner's locks, in order.
  std::vector<HeldLock> Of(const LockOwner& owner) const;
  bool empty() const { return held_.empty(); }
  const std::vector<HeldLock>& all() const { return held_; }

 private:
  std::vector<HeldLock> held_;  // sorted by owner, then start; one owner's never overlap
};

}  // namespace onebox
