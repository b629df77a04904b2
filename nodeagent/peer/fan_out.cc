#include "nodeagent/peer/fan_out.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace onebox {

FanOutResult FanOut(size_t n, size_t want, const std::function<Status(size_t, Cancellation&)>& call,
                    const std::function<std::string(size_t)>& label) {
  FanOutResult result;
  if (n == 0 || want == 0) return result;
  std::mutex mu;
  std::condition_variable cv;
  size_t ended = 0;
  std::vector<Cancellation> cancellations(n);
  std::vector<std::thread> threads;
  threads.reserve(n);
  auto ended_with = [&](size_t i, const Status& s) {
    std::lock_guard lock(mu);
    ++ended;
    if (s.ok()) ++result.succeeded;
    else result.why += fmt::format("; {}: {}", label(i), s.message());
    cv.notify_all();
  };
  for (size_t i = 0; i < n; ++i) {
    try {
      threads.emplace_back([&, i] { ended_with(i, call(i, cancellations[i])); });
    } catch (const std::system_error& e) {  // std::thread's only way to say it could not start one
      ended_with(i, Status::Unavailable(fmt::format("no thread to ask it: {}", e.what())));
    }
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return ended == n || result.succeeded >= want; });
  }
  for (Cancellation& c : cancellations) c.Cancel();
  for (std::thread& t : threads) t.join();
  return result;
}

}  // namespace onebox
