// Chunks this node checked against their digest as they arrived from a peer
// and then stored, remembered for a few seconds: the placement that follows
// (view/view_materializer.h) reads each back from the store and would hash
// it a second time, which was a fifth of the placing thread's CPU. Within
// the window the bytes are as they were put, most likely still in memory
// (the memtable, or a new blob file in the page cache). The check on read
// is for a store damaged on disk over time; the window leaves only its
// first seconds out. Each is taken once (a second read checks again); at
// most `max` are remembered, the oldest let go first.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

namespace onebox {

class CheckedChunks {
 public:
  using Clock = std::chrono::steady_clock;
  explicit CheckedChunks(Clock::duration window = std::chrono::seconds(10), size_t max = 4096)
      : window_(window), max_(max) {}
  // digest's bytes matched it and are stored now.
  void Checked(const std::string& digest);
  // Whether digest was Checked within the window; it is forgotten either way.
  bool Take(const std::string& digest);
  size_t size();  // remembered now
  uint64_t taken();  // Takes that answered true, in all

 private:
  void ForgetOld(Clock::time_point now);  // under mu_
  const Clock::duration window_;
  const size_t max_;
  std::mutex mu_;
  uint64_t taken_ = 0;
  std::unordered_map<std::string, Clock::time_point> at_;
  std::deque<std::pair<Clock::time_point, std::string>> order_;  // oldest first; taken ones too, until let go
};

}  // namespace onebox
