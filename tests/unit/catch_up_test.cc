// Catch-up threads (nodeagent/daemon/catch_up.h): lowered while they are
// behind and nothing waits on them, at the agent's priority while something
// does or while they keep up.
#include "nodeagent/daemon/catch_up.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

namespace onebox {
namespace {

using namespace std::chrono_literals;

int NiceOf(pid_t tid) { return getpriority(PRIO_PROCESS, static_cast<id_t>(tid)); }

// A catch-up thread that reports its tid and runs until told to end, holding
// mu (when given) from its start until then.
class CatchUpWorker {
 public:
  explicit CatchUpWorker(HurryingMutex<std::mutex>* mu = nullptr) {
    std::promise<pid_t> started;
    std::future<pid_t> tid = started.get_future();
    thread_ = std::thread([this, mu, &started] {
      CatchUpThread below_programs;
      std::unique_lock<HurryingMutex<std::mutex>> held;
      if (mu) held = std::unique_lock(*mu);
      started.set_value(gettid());
      std::unique_lock lock(end_mu_);
      end_cv_.wait(lock, [this] { return end_; });
    });
    tid_ = tid.get();
  }
  ~CatchUpWorker() { End(); }
  void End() {
    {
      std::lock_guard lock(end_mu_);
      end_ = true;
    }
    end_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  pid_t tid() const { return tid_; }

 private:
  std::mutex end_mu_;
  std::condition_variable end_cv_;
  bool end_ = false;
  pid_t tid_ = 0;
  std::thread thread_;
};

// What a catch-up thread's nice is while nothing hurries it, from the nice
// of the thread that started it.
int Expected(int agent_nice) {
  return CatchUpLowered() ? std::min(agent_nice + kCatchUpNiceSteps, 19) : agent_nice;
}

TEST(CatchUpTest, AThreadIsLoweredUntilAHurryAndAgainAfterTheLastOne) {
  const int agent = NiceOf(gettid());
  ASSERT_LT(agent, 19) << "the test runs at the lowest priority already";
  CatchUpWorker worker;
  // Where threads can be raised back (as root in CI) they are lowered.
  EXPECT_EQ(CatchUpLowered(), testing::CanRaiseNiceBack());
  EXPECT_EQ(NiceOf(worker.tid()), Expected(agent));
  const uint64_t hurries = CatchUpHurries();
  const uint64_t drains = CatchUpWaits(CatchUpWait::kDrain), syncs = CatchUpWaits(CatchUpWait::kRecorderSync);
  {
    HurryCatchUp hurry(CatchUpWait::kDrain);
    EXPECT_EQ(NiceOf(worker.tid()), agent);
    {
      HurryCatchUp another(CatchUpWait::kRecorderSync);
      EXPECT_EQ(NiceOf(worker.tid()), agent);
    }
    EXPECT_EQ(NiceOf(worker.tid()), agent) << "one hurry still lives";
    // A thread that starts during a hurry starts at the agent's priority.
    CatchUpWorker late;
    EXPECT_EQ(NiceOf(late.tid()), agent);
  }
  EXPECT_EQ(NiceOf(worker.tid()), Expected(agent));
  EXPECT_EQ(CatchUpHurries(), hurries + (CatchUpLowered() ? 1 : 0)) << "the nested hurry raised nothing more";
  // Each wait counts by its kind, the nested one too (where anything is lowered).
  EXPECT_EQ(CatchUpWaits(CatchUpWait::kDrain), drains + (CatchUpLowered() ? 1 : 0));
  EXPECT_EQ(CatchUpWaits(CatchUpWait::kRecorderSync), syncs + (CatchUpLowered() ? 1 : 0));
  EXPECT_EQ(NiceOf(gettid()), agent) << "a hurry leaves the waiter's own priority as it was";
}

TEST(CatchUpTest, AWaiterForAMutexACatchUpThreadHoldsHurriesItUntilItHasIt) {
  const int agent = NiceOf(gettid());
  HurryingMutex<std::mutex> mu;
  CatchUpWorker holder(&mu);
  EXPECT_EQ(NiceOf(holder.tid()), Expected(agent));
  const uint64_t lock_waits = CatchUpWaits(CatchUpWait::kLock);
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    std::lock_guard lock(mu);
    got = true;
  });
  // While the waiter blocks, the holder runs at the agent's priority (one hurry, where lowered).
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (NiceOf(holder.tid()) != agent && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(NiceOf(holder.tid()), agent);
  EXPECT_FALSE(got);
  // The holder lets go; its thread ends, and the waiter's hurry with the lock.
  holder.End();
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(CatchUpWaits(CatchUpWait::kLock), lock_waits + (CatchUpLowered() ? 1 : 0)) << "counted as a lock's wait";
  CatchUpWorker next;
  EXPECT_EQ(NiceOf(next.tid()), Expected(agent)) << "no hurry left behind";
}

// The recorder follows the placing thread: its waits for the view's lock
// hurry nothing (a Sync waiting on the recorder does: the next test).
TEST(CatchUpTest, AThreadThatFollowsCatchUpWaitsForItsLockUnhurried) {
  const int agent = NiceOf(gettid());
  HurryingMutex<std::mutex> mu;
  CatchUpWorker holder(&mu);
  std::atomic<pid_t> follower_tid{0};
  std::atomic<bool> got{false};
  const uint64_t hurries = CatchUpHurries(), lock_waits = CatchUpWaits(CatchUpWait::kLock);
  std::thread follower([&] {
    FollowsCatchUp follows;
    EXPECT_TRUE(WaitsUnhurriedHere());
    follower_tid = gettid();
    std::lock_guard lock(mu);
    got = true;
  });
  // Until the follower sleeps in the lock (its state S in /proc).
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        const pid_t tid = follower_tid;
        if (tid == 0) return ::testing::AssertionFailure() << "not started";
        std::string stat = testing::ReadFile(fmt::format("/proc/self/task/{}/stat", tid));
        size_t close = stat.rfind(')');
        return ::testing::AssertionResult(close != std::string::npos && stat.compare(close + 2, 1, "S") == 0)
               << stat;
      },
      5s, "the follower waits for the lock"));
  EXPECT_FALSE(got);
  EXPECT_EQ(CatchUpHurries(), hurries);
  EXPECT_EQ(CatchUpWaits(CatchUpWait::kLock), lock_waits);
  EXPECT_EQ(NiceOf(holder.tid()), Expected(agent));
  holder.End();
  follower.join();
  EXPECT_TRUE(got);
  EXPECT_FALSE(WaitsUnhurriedHere()) << "only the follower's own thread";
}

// As the materializer's Drain waits for its thread to have placed what was queued.
TEST(CatchUpTest, AWaitForWhatCatchUpDoesHurriesItUntilItIsDone) {
  const int agent = NiceOf(gettid());
  CatchUpWorker worker;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::atomic<bool> waiting{false};
  std::thread waiter([&] {
    std::unique_lock lock(mu);
    waiting = true;
    WaitHurrying(CatchUpWait::kDrain, cv, lock, [&] { return done; });
  });
  while (!waiting) std::this_thread::sleep_for(1ms);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (NiceOf(worker.tid()) != agent && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(NiceOf(worker.tid()), agent);
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  waiter.join();
  EXPECT_EQ(NiceOf(worker.tid()), Expected(agent));
  // Nothing to wait for: no hurry.
  std::unique_lock lock(mu);
  WaitHurrying(CatchUpWait::kDrain, cv, lock, [&] { return true; });
  EXPECT_EQ(NiceOf(worker.tid()), Expected(agent));
}

// The materializer's fetch threads (sync/content_transfer.cc): born at the
// placing thread's priority, lowered, and hurried with it.
TEST(CatchUpTest, AHelperOfACatchUpThreadIsOneTooHurriedWithIt) {
  const int agent = NiceOf(gettid());
  std::optional<int> outside = CatchUpThread::AgentNiceHere();
  EXPECT_FALSE(outside) << "not a catch-up thread";
  EXPECT_FALSE(CatchUpThread::Here());
  std::promise<pid_t> helper_tid;
  std::promise<void> end;
  std::thread starter([&] {
    CatchUpThread below_programs;
    EXPECT_TRUE(CatchUpThread::Here());
    const std::optional<int> agent_nice = CatchUpThread::AgentNiceHere();
    EXPECT_EQ(agent_nice.has_value(), CatchUpLowered());
    EXPECT_EQ(CatchUpThread::BehindHere(), CatchUpLowered()) << "behind, as it starts";
    std::thread helper([&, agent_nice] {
      std::optional<CatchUpThread> below;
      if (agent_nice) below.emplace(*agent_nice, /*behind=*/true);
      helper_tid.set_value(gettid());
      end.get_future().wait();
    });
    helper.join();
  });
  const pid_t helper = helper_tid.get_future().get();
  EXPECT_EQ(NiceOf(helper), Expected(agent));
  {
    HurryCatchUp hurry(CatchUpWait::kDrain);
    EXPECT_EQ(NiceOf(helper), agent) << "its agent nice is the starter's, not the lowered one it was born with";
  }
  EXPECT_EQ(NiceOf(helper), Expected(agent));
  end.set_value();
  starter.join();
}

// The placing thread keeps up with a trickle at the agent's priority, and
// falls behind (lowered) in a burst (view/view_materializer.cc, backlog_).
TEST(CatchUpTest, AThreadKeepingUpRunsAtTheAgentsPriorityAndBehindBelowIt) {
  const int agent = NiceOf(gettid());
  // Steps the thread takes when told: each answers with its nice after it.
  enum Step { kKeepUp, kFallBehind, kHelper, kEnd };
  std::optional<int> helper_nice;  // what kHelper found
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Step> step;
  std::optional<int> answer;
  pid_t tid = 0;
  std::thread thread([&] {
    CatchUpThread below_programs;
    std::unique_lock lock(mu);
    tid = gettid();
    for (;;) {
      answer = NiceOf(tid);
      cv.notify_all();
      cv.wait(lock, [&] { return step.has_value(); });
      const Step now = *step;
      step.reset();
      if (now == kEnd) return;
      if (now == kKeepUp || now == kFallBehind) below_programs.SetBehind(now == kFallBehind);
      if (now == kHelper) {  // a helper started now is born behind or not as its starter is
        const std::optional<int> agent_nice = CatchUpThread::AgentNiceHere();
        const bool behind = CatchUpThread::BehindHere();
        std::thread([&] {
          std::optional<CatchUpThread> below;
          if (agent_nice) below.emplace(*agent_nice, behind);
          helper_nice = NiceOf(gettid());
        }).join();
      }
    }
  });
  auto take = [&](std::optional<Step> next) {
    std::unique_lock lock(mu);
    if (next) {
      step = next;
      cv.notify_all();
    }
    cv.wait(lock, [&] { return answer.has_value() && !step.has_value(); });
    const int nice = *answer;
    answer.reset();
    return nice;
  };
  const int at_start = take(std::nullopt);  // (first: Expected needs a catch-up thread to have decided)
  EXPECT_EQ(at_start, Expected(agent)) << "behind as it starts";
  EXPECT_EQ(take(kKeepUp), agent);
  const uint64_t hurries = CatchUpHurries(), drains = CatchUpWaits(CatchUpWait::kDrain);
  {
    HurryCatchUp hurry(CatchUpWait::kDrain);
    EXPECT_EQ(NiceOf(tid), agent);
  }
  EXPECT_EQ(NiceOf(tid), agent) << "the hurry's end lowers only what is behind";
  EXPECT_EQ(CatchUpHurries(), hurries) << "nothing behind: nothing to raise";
  EXPECT_EQ(CatchUpWaits(CatchUpWait::kDrain), drains) << "nothing behind: nothing waited for";
  EXPECT_EQ(CatchUpThreadsBehind(), 0);
  EXPECT_EQ(take(kHelper), agent);
  EXPECT_EQ(helper_nice, agent) << "a helper of a thread keeping up";
  EXPECT_EQ(take(kFallBehind), Expected(agent));
  EXPECT_EQ(CatchUpThreadsBehind(), CatchUpLowered() ? 1 : 0);
  EXPECT_EQ(take(kHelper), Expected(agent));
  EXPECT_EQ(helper_nice, Expected(agent)) << "a helper of a thread behind";
  {
    HurryCatchUp hurry(CatchUpWait::kDrain);
    EXPECT_EQ(NiceOf(tid), agent);
    EXPECT_EQ(take(kKeepUp), agent);
    EXPECT_EQ(take(kFallBehind), agent) << "behind, but hurried";
  }
  EXPECT_EQ(NiceOf(tid), Expected(agent));
  EXPECT_EQ(CatchUpWaits(CatchUpWait::kDrain), drains + (CatchUpLowered() ? 1 : 0));
  {
    std::lock_guard lock(mu);
    step = kEnd;
  }
  cv.notify_all();
  thread.join();
}

TEST(CatchUpTest, AnUncontendedLockHurriesNothing) {
  const int agent = NiceOf(gettid());
  CatchUpWorker worker;
  HurryingMutex<std::recursive_mutex> mu;
  {
    std::lock_guard lock(mu);
    std::lock_guard again(mu);  // recursive, as the view's lock is
    EXPECT_EQ(NiceOf(worker.tid()), Expected(agent));
  }
  EXPECT_EQ(NiceOf(worker.tid()), Expected(agent));
}

}  // namespace
}  // namespace onebox
