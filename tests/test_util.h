// Test helpers shared by unit and integration tests: temp dirs that clean up,
// a file's text, and waiting for a condition (never for a fixed time).
#pragma once

#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include <gtest/gtest.h>

namespace onebox::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() : TempDir(DefaultBase()) {}
  // In base rather than $TMPDIR (a test of what a file system does).
  explicit TempDir(const std::string& base) {
    std::string tmpl = base + "/onebox-test-XXXXXX";
    char* made = mkdtemp(tmpl.data());
    if (made == nullptr) abort();
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  static std::string DefaultBase() {
    const char* base = getenv("TMPDIR");
    return base && *base ? base : "/tmp";
  }
  std::string path_;
};

// The whole text of a file; "" when it cannot be read (not there yet, say).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Whether a thread of this process, once its nice is raised, can lower it
// back (CAP_SYS_NICE in the host's user namespace, or RLIMIT_NICE): the
// agent's own test before it runs catch-up work below its other threads
// (nodeagent/daemon/catch_up.h). Tried on a thread of its own.
inline bool CanRaiseNiceBack() {
  bool can = false;
  std::thread([&] {
    const id_t tid = static_cast<id_t>(gettid());
    errno = 0;
    const int own = getpriority(PRIO_PROCESS, tid);
    if (errno != 0 || own >= 19 || setpriority(PRIO_PROCESS, tid, own + 1) != 0) return;
    can = setpriority(PRIO_PROCESS, tid, own) == 0;
  }).join();
  return can;
}

// A condition's answer to WaitUntil: whether it holds, and what was seen
// (WaitUntil's failure message shows the last look's).
template <class T>
::testing::AssertionResult Observed(bool holds, const T& seen) {
  return ::testing::AssertionResult(holds) << ::testing::PrintToString(seen);
}

// Looks at condition (returning bool, or an AssertionResult saying what it
// saw: Observed) until it holds, and at least once. Succeeds as soon as it
// holds; fails once timeout has passed, naming `what` was awaited and the last
// look's answer. The pauses between looks start at 1 ms and double up to
// max_pause, so a condition that comes early costs next to nothing.
template <class Condition>
::testing::AssertionResult WaitUntil(Condition&& condition, std::chrono::steady_clock::duration timeout,
                                     std::string_view what,
                                     std::chrono::steady_clock::duration max_pause = std::chrono::milliseconds(100)) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Clock::duration pause = std::min<Clock::duration>(std::chrono::milliseconds(1), max_pause);
  for (;;) {
    ::testing::AssertionResult look(condition());
    if (look) return ::testing::AssertionSuccess();
    Clock::duration waited = Clock::now() - start;
    if (waited >= timeout) {
      ::testing::AssertionResult failure = ::testing::AssertionFailure();
      failure << "waited " << std::chrono::duration<double>(waited).count() << " s in vain until " << what;
      if (*look.message() != '\0') failure << "; last seen: " << look.message();
      return failure;
    }
    std::this_thread::sleep_for(std::min(pause, timeout - waited));
    pause = std::min(pause * 2, max_pause);
  }
}

}  // namespace onebox::testing
