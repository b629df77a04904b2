// A fixed pool of threads for work that may block (RocksDB reads and writes,
// WAL fsync), so that gRPC's callback threads never wait on the disk.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace onebox {

class WorkPool {
 public:
  WorkPool(size_t threads, const std::string& name);
  ~WorkPool();  // runs what is queued, then joins
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  void Submit(std::function<void()> task);
  // Returns once every task submitted so far has run.
  void Drain();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  size_t running_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace onebox
