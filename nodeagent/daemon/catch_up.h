// Catch-up work runs below the node's programs. Placing what peers wrote
// (the materializer's thread) only brings this node's view up to date: no
// program here waits on it, unless it asks to (a lock's grant, a remote
// run's exit: a drain), or waits for a lock that work holds (the view's, a
// path's). Such threads run kCatchUpNiceSteps nice levels below the agent
// while they are behind (a backlog: a burst written on another node), so
// that the burst does not slow this node's programs; whatever waits on them
// hurries them (HurryCatchUp): while one hurry lives, every catch-up thread
// runs at the agent's own priority. A thread keeping up (no backlog: a
// trickle, each piece placed as it comes) runs at the agent's priority too:
// it costs programs little, and a low priority would only add to each
// piece's delay the time it waits behind them for a core.
// Lowering is done only when the agent can raise the threads back
// (CAP_SYS_NICE in the host's user namespace, or an RLIMIT_NICE that allows
// the agent's nice): tried once, on a thread of its own. Otherwise catch-up
// runs at the agent's priority, as everything else does.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string_view>

namespace onebox {

inline constexpr int kCatchUpNiceSteps = 10;
// Entries queued from which the placing thread is behind, by default
// (--catch-up-backlog): at 0.2 to 0.3 ms each, some 15 ms of work. A steady
// 1k updates/s keeps one or two queued, a burst of a tree's files many more.
inline constexpr uint64_t kCatchUpBacklog = 64;

// What waits on catch-up work and hurries it; the metric
// onebox_catch_up_waits_total counts them by kCatchUpWaitNames.
enum class CatchUpWait {
  kDrain,         // for the placing of what peers wrote so far (a lock's grant, a run's start and exit, a full scan,
                  // an exclusive create in a peer's directory not placed yet)
  kRecorderSync,  // for the recorder to record what was done before (a lock's fence, a lease's recall, a run's exit)
  kLock,          // for a lock a catch-up thread may hold (the view's, a path's, the ledger's), found taken
  kFetch,         // the placing thread's own fetch from peers (the threads it starts take its priority)
  kStop,          // for catch-up threads to end (the agent's shutdown: after its metrics stopped)
  kCount
};
inline constexpr std::array<std::string_view, static_cast<size_t>(CatchUpWait::kCount)> kCatchUpWaitNames{
    "drain", "recorder_sync", "lock", "fetch", "stop"};
static_assert(!kCatchUpWaitNames.back().empty(), "a name for every CatchUpWait");

// Held on a catch-up thread's stack for its whole life: lowers the thread
// while it is behind (unless a hurry lives) and forgets it at the end.
class CatchUpThread {
 public:
  CatchUpThread();
  // On a helper a catch-up thread started for its work (born with its
  // priority, lowered or not): a catch-up thread too, whose priority
  // outside catch-up is agent_nice, the starter's AgentNiceHere(), and
  // behind as the starter is (BehindHere()).
  CatchUpThread(int agent_nice, bool behind);
  ~CatchUpThread();
  CatchUpThread(const CatchUpThread&) = delete;
  CatchUpThread& operator=(const CatchUpThread&) = delete;

  // Whether the thread is behind (as it starts: lowered unless hurried) or
  // keeping up (at the agent's priority). The thread says so itself.
  void SetBehind(bool behind);

  // Whether this thread runs as a catch-up thread (lowered or not).
  static bool Here();
  // This catch-up thread's nice outside catch-up, when it is lowered here
  // (hurried, behind or not); nothing on any other thread.
  static std::optional<int> AgentNiceHere();
  // Whether this catch-up thread is behind (false on any other thread).
  static bool BehindHere();

 private:
  void Join(int agent_nice, bool behind);
  bool joined_ = false;
};

// While one lives, in any thread, the catch-up threads run at the agent's priority.
class HurryCatchUp {
 public:
  explicit HurryCatchUp(CatchUpWait wait);
  ~HurryCatchUp();
  HurryCatchUp(const HurryCatchUp&) = delete;
  HurryCatchUp& operator=(const HurryCatchUp&) = delete;
};

// Held on the stack of a thread that follows catch-up work rather than a
// program (the recorder, which records what the placing thread did, among
// what programs did): while it lives, the thread's waits for a
// HurryingMutex hurry nothing; whoever waits on that thread hurries instead.
class FollowsCatchUp {
 public:
  FollowsCatchUp();
  ~FollowsCatchUp();
  FollowsCatchUp(const FollowsCatchUp&) = delete;
  FollowsCatchUp& operator=(const FollowsCatchUp&) = delete;
};

// Whether this thread's waits for a HurryingMutex hurry nothing: a
// catch-up thread's (the holder is another catch-up thread, or at the
// agent's priority already), or one that FollowsCatchUp.
bool WaitsUnhurriedHere();

// Waits on cv until done() holds (under lock, as condition_variable::wait),
// hurrying the catch-up threads meanwhile: what they do, or what a thread
// that follows them does, is what is waited for.
template <class Done>
void WaitHurrying(CatchUpWait wait, std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Done done) {
  if (done()) return;
  HurryCatchUp hurry(wait);
  cv.wait(lock, done);
}
// As above, for at most timeout; returns done().
template <class Rep, class Period, class Done>
bool WaitHurrying(CatchUpWait wait, std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                  std::chrono::duration<Rep, Period> timeout, Done done) {
  if (done()) return true;
  HurryCatchUp hurry(wait);
  return cv.wait_for(lock, timeout, done);
}

// How many catch-up threads are behind now (lowered, or raised by a hurry).
int CatchUpThreadsBehind();
// How many times a hurry raised a lowered thread, since the agent started.
uint64_t CatchUpHurries();
// How many hurries of this kind were made while a catch-up thread was
// behind (lowered, or raised by a hurry under way: nested ones count too),
// since the agent started.
uint64_t CatchUpWaits(CatchUpWait wait);

// Whether catch-up threads are lowered in this process while behind
// (decided at the first CatchUpThread: the agent can raise them back).
bool CatchUpLowered();

// A mutex a catch-up thread may hold while others wait for it: a waiter
// (unless WaitsUnhurriedHere) hurries the catch-up threads until it has it.
// Mutex: std::mutex or std::recursive_mutex.
template <class Mutex>
class HurryingMutex {
 public:
  void lock() {
    if (mu_.try_lock()) return;
    if (WaitsUnhurriedHere()) {
      mu_.lock();
      return;
    }
    HurryCatchUp hurry(CatchUpWait::kLock);
    mu_.lock();
  }
  bool try_lock() { return mu_.try_lock(); }
  void unlock() { mu_.unlock(); }

 private:
  Mutex mu_;
};

}  // namespace onebox
