// Moves the bytes of relayed connections: each a pair of connected stream
// sockets (a program's connection on one side, the link to another agent on
// the other), both ways, with splice(2) through a pipe per direction, so
// the bytes go socket to socket inside the kernel without a copy through
// this process. One epoll thread serves every pair.
//
// Each direction holds at most its pipe's capacity: when the far side does
// not read, this side stops reading (back-pressure, one connection at a
// time: a slow reader never holds up another pair). End of file is carried
// as a half-close (shutdown SHUT_WR of the other socket, the other
// direction goes on); an error or a reset on either socket resets the other
// (close with SO_LINGER 0), so a program sees ECONNRESET as it would on
// loopback. A pair is closed once both directions ended.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "consistency/status.h"

namespace onebox {

// Closes a socket with an RST instead of a FIN: its peer sees ECONNRESET.
void CloseWithReset(int fd);
// TCP_NODELAY on a TCP socket: a relayed connection's small writes go at once.
void NoDelay(int fd);

class SpliceRelay {
 public:
  // Each direction's pipe is asked for this capacity (F_SETPIPE_SZ).
  static constexpr int kPipeBytes = 256 << 10;

  static Result<std::unique_ptr<SpliceRelay>> Start();
  ~SpliceRelay();  // stops the thread and closes every pair
  SpliceRelay(const SpliceRelay&) = delete;
  SpliceRelay& operator=(const SpliceRelay&) = delete;

  // Takes a and b (connected stream sockets; made non-blocking here) and
  // relays between them until both directions end. Closes both on failure.
  // tag names the pair for Reset (the other node it goes to).
  Status Add(int a, int b, std::string tag = "");
  // Resets every pair tagged tag (its node was cut off), soon, on the loop's thread.
  void Reset(const std::string& tag);
  // The tags of the pairs open now (the empty tag left out).
  std::set<std::string> Tags();
  // Pairs open now, and relayed since the start.
  size_t open() const { return open_.load(); }
  uint64_t total() const { return total_.load(); }

 private:
  struct Pair;
  SpliceRelay() = default;
  void Loop();
  // Moves what can move now; true when the pair is done (closed).
  bool Pump(Pair& p);
  void Watch(Pair& p);  // the epoll interest each socket needs now
  void Close(Pair& p, bool reset);

  int epoll_ = -1;
  int wake_ = -1;  // eventfd: stop, or pairs to reset
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> open_{0};
  std::atomic<uint64_t> total_{0};
  std::mutex mu_;  // pairs_
  std::map<Pair*, std::unique_ptr<Pair>> pairs_;
  std::thread thread_;
};

}  // namespace onebox
