// The view's directories the recorder watches, by inotify watch descriptor
// and by path: a directory removed or moved takes the watches of everything
// below it as one range of a set ordered by path, not a look at every watch
// (an rm -rf of 20,000 directories looked at 20,000 watches for each).
#pragma once

#include <climits>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "naming/ns_key.h"

namespace onebox {

class WatchedDirs {
 public:
  // wd watches dir now (inotify hands out a directory's descriptor again
  // when it is watched again, under its new path after a move).
  void Add(int wd, const std::string& dir) {
    if (auto it = dir_of_.find(wd); it != dir_of_.end()) by_dir_.erase({it->second, wd});
    dir_of_[wd] = dir;
    by_dir_.insert({dir, wd});
  }
  // The directory wd watches; null if none.
  const std::string* Find(int wd) const {
    auto it = dir_of_.find(wd);
    return it == dir_of_.end() ? nullptr : &it->second;
  }
  // wd's watch ended (IN_IGNORED).
  void Forget(int wd) {
    if (auto it = dir_of_.find(wd); it != dir_of_.end()) {
      by_dir_.erase({it->second, wd});
      dir_of_.erase(it);
    }
  }
  // dir and every directory below it (KeyRangeBelow) are watched no more:
  // their descriptors (for inotify_rm_watch).
  std::vector<int> TakeTree(const std::string& dir) {
    std::vector<int> wds;
    auto take = [&](auto first, auto last) {
      for (auto it = first; it != last; ++it) {
        wds.push_back(it->second);
        dir_of_.erase(it->second);
      }
      by_dir_.erase(first, last);
    };
    take(by_dir_.lower_bound({dir, INT_MIN}), by_dir_.upper_bound({dir, INT_MAX}));
    const KeyRange below = KeyRangeBelow(dir);
    take(by_dir_.lower_bound({below.first, INT_MIN}), by_dir_.lower_bound({below.last, INT_MIN}));
    return wds;
  }
  size_t size() const { return dir_of_.size(); }

 private:
  std::unordered_map<int, std::string> dir_of_;
  std::set<std::pair<std::string, int>> by_dir_;
};

}  // namespace onebox
