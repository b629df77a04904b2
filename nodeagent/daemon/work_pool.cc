#include "nodeagent/daemon/work_pool.h"

#include "nodeagent/daemon/thread_name.h"


namespace onebox {

WorkPool::WorkPool(size_t threads, const std::string& name) {
  for (size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
          if (queue_.empty()) return;  // stopping, and nothing left
          task = std::move(queue_.front());
          queue_.pop_front();
          ++running_;
        }
        task();
        {
          std::lock_guard lock(mu_);
          --running_;
        }
        cv_.notify_all();
      }
    });
    NameThread(threads_.back(), name);
  }
}

void WorkPool::Drain() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && running_ == 0; });
}

WorkPool::~WorkPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkPool::Submit(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

}  // namespace onebox
