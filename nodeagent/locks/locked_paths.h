// The cluster files programs on this node have locked: noted by the lock
// calls (locks/node_locks.h), asked by the materializer, which overwrites
// such a file in place so that a program holding it open (a database) reads
// what other nodes wrote (ViewMaterializer::set_in_place). Made before both.
#pragma once

#include <mutex>
#include <string>
#include <unordered_set>

namespace onebox {

class LockedPaths {
 public:
  static constexpr size_t kKept = 100'000;  // beyond this many, later ones are replaced as any file

  void Note(const std::string& path) {
    std::lock_guard lock(mu_);
    if (paths_.size() < kKept) paths_.insert(path);
  }
  bool Contains(const std::string& path) const {
    std::lock_guard lock(mu_);
    return paths_.contains(path);
  }

 private:
  mutable std::mutex mu_;
  std::unordered_set<std::string> paths_;
};

}  // namespace onebox
