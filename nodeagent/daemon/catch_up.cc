#include "nodeagent/daemon/catch_up.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>

namespace onebox {

namespace {

int NiceOf(pid_t tid) {
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  return errno == 0 ? nice : 0;
}

int Lowered(int nice) { return std::min(nice + kCatchUpNiceSteps, 19); }

// Whether a thread of this process, once lowered, can be raised back: tried
// on a thread of its own, which ends either way.
bool CanRaiseBack() {
  bool can = false;
  try {
    std::thread([&] {
      pid_t tid = gettid();
      int own = NiceOf(tid);
      if (own >= 19 || setpriority(PRIO_PROCESS, static_cast<id_t>(tid), own + 1) != 0) return;
      can = setpriority(PRIO_PROCESS, static_cast<id_t>(tid), own) == 0;
    }).join();
  } catch (const std::system_error&) {  // no thread to try it on (a pids limit): lower nothing
  }
  return can;
}

struct Registry {
  std::mutex mu;
  int decided = -1;                           // CanRaiseBack, once asked (-1: not yet)
  struct Thread {
    int agent_nice;  // the nice it had before it was lowered
    bool behind;     // lowered while no hurry lives; else at agent_nice
  };
  std::unordered_map<pid_t, Thread> threads;  // each catch-up thread
  int hurries = 0;
  uint64_t raised = 0;  // hurries that raised a thread
  std::array<uint64_t, static_cast<size_t>(CatchUpWait::kCount)> waits{};  // hurries while any thread is behind
};

Registry& TheRegistry() {
  static Registry* registry = new Registry;  // never destroyed: threads may leave during exit
  return *registry;
}

// CatchUpThreads and FollowsCatchUps alive on this thread; CatchUpThreads alone.
thread_local int unhurried_waits = 0;
thread_local int catch_up_here = 0;

void Set(pid_t tid, int nice) {
  // ESRCH: the thread is ending (it leaves under the registry's lock next).
  setpriority(PRIO_PROCESS, static_cast<id_t>(tid), nice);
}

// The nice thread should have now (under the registry's lock).
int NiceNow(const Registry& r, const Registry::Thread& thread) {
  return thread.behind && r.hurries == 0 ? Lowered(thread.agent_nice) : thread.agent_nice;
}

}  // namespace

CatchUpThread::CatchUpThread() {
  ++unhurried_waits;
  if (catch_up_here++ == 0) Join(NiceOf(gettid()), true);  // (one already on this thread: nothing more)
}

CatchUpThread::CatchUpThread(int agent_nice, bool behind) {
  ++unhurried_waits;
  if (catch_up_here++ == 0) Join(agent_nice, behind);
}

void CatchUpThread::Join(int agent_nice, bool behind) {
  // Decided once, outside the registry's lock (the try takes a thread).
  static const bool can_raise_back = [] {
    bool can = CanRaiseBack();
    if (can)
      spdlog::debug("catch-up work runs {} nice levels below the agent", kCatchUpNiceSteps);
    else
      spdlog::info("catch-up work runs at the agent's priority: it could not raise a thread back "
                   "(CAP_SYS_NICE in the host's user namespace, or an RLIMIT_NICE that allows it, is needed)");
    return can;
  }();
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  r.decided = can_raise_back ? 1 : 0;
  if (!r.decided) return;
  const pid_t tid = gettid();
  const Registry::Thread& thread = r.threads[tid] = {agent_nice, behind};
  joined_ = true;
  Set(tid, NiceNow(r, thread));
}

void CatchUpThread::SetBehind(bool behind) {
  if (!joined_) return;
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  auto it = r.threads.find(gettid());
  if (it == r.threads.end() || it->second.behind == behind) return;
  const int before = NiceNow(r, it->second);
  it->second.behind = behind;
  if (const int now = NiceNow(r, it->second); now != before) Set(it->first, now);
}

CatchUpThread::~CatchUpThread() {
  --unhurried_waits;
  --catch_up_here;
  if (!joined_) return;
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  auto it = r.threads.find(gettid());
  if (it == r.threads.end()) return;
  Set(it->first, it->second.agent_nice);  // what the thread does after it, if anything, is not catch-up
  r.threads.erase(it);
}

bool CatchUpThread::Here() { return catch_up_here > 0; }

std::optional<int> CatchUpThread::AgentNiceHere() {
  if (catch_up_here == 0) return std::nullopt;
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  auto it = r.threads.find(gettid());
  if (it == r.threads.end()) return std::nullopt;
  return it->second.agent_nice;
}

bool CatchUpThread::BehindHere() {
  if (catch_up_here == 0) return false;
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  auto it = r.threads.find(gettid());
  return it != r.threads.end() && it->second.behind;
}

HurryCatchUp::HurryCatchUp(CatchUpWait wait) {
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  const bool any_behind =
      std::any_of(r.threads.begin(), r.threads.end(), [](const auto& t) { return t.second.behind; });
  if (any_behind) ++r.waits[static_cast<size_t>(wait)];
  if (any_behind && r.hurries == 0) ++r.raised;
  if (r.hurries++ == 0)
    for (const auto& [tid, thread] : r.threads)
      if (thread.behind) Set(tid, thread.agent_nice);
}

HurryCatchUp::~HurryCatchUp() {
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  if (--r.hurries == 0)
    for (const auto& [tid, thread] : r.threads)
      if (thread.behind) Set(tid, Lowered(thread.agent_nice));
}

FollowsCatchUp::FollowsCatchUp() { ++unhurried_waits; }
FollowsCatchUp::~FollowsCatchUp() { --unhurried_waits; }
bool WaitsUnhurriedHere() { return unhurried_waits > 0; }

int CatchUpThreadsBehind() {
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  return static_cast<int>(
      std::count_if(r.threads.begin(), r.threads.end(), [](const auto& t) { return t.second.behind; }));
}

uint64_t CatchUpHurries() {
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  return r.raised;
}

uint64_t CatchUpWaits(CatchUpWait wait) {
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  return r.waits[static_cast<size_t>(wait)];
}

bool CatchUpLowered() {
  Registry& r = TheRegistry();
  std::lock_guard lock(r.mu);
  return r.decided == 1;
}

}  // namespace onebox
