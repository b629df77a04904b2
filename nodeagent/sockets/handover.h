// Links handed to servers. When another node's client reaches a port this
// node holds, the owner's agent connects to the server on loopback as any
// client would (sockets/port_relay.h), from a port it bound first and
// announced (Expect: the server may accept before the connect returns).
// Instead of relaying between that connection and the link at once, it
// lets the connection wait a moment:
// the server's shim, in accept(), sees that the connection comes from a
// port of the agent's that has one waiting (a bit in the state page,
// proto/state_page.h) and asks for the link (shim request TakeLink); the
// agent checks that the asking process holds the accepted end (it takes a
// copy with pidfd_getfd: in this network namespace, with our end's
// addresses mirrored, it is the one socket that can have them), hands the
// link over and resets its own end. The server then talks to the client over the link
// itself: no relay on either node when the client is under the shim too.
// A connection nobody takes within kHandoverWait (a server whose accept is
// not the shim's, a busy one) is relayed as before.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "proto/state_page.h"

namespace onebox {

constexpr std::chrono::milliseconds kHandoverWait{250};

class Handovers {
 public:
  using Clock = std::chrono::steady_clock;
  struct Pair {
    int link, local;  // the link from the other node, the agent's loopback connection to the server
  };
  explicit Handovers(PortBits* bits) : bits_(bits) {}  // bits null: nothing ever waits

  // Before the agent connects from agent_port (bound already) to
  // server_port: a connection from there may be accepted from now on, and
  // its taker must wait for Ready. False when nothing can wait (relay it).
  bool Expect(uint16_t agent_port, uint16_t server_port);
  // The connection is made and the other node told so: pair may be taken,
  // for kHandoverWait. False when it may not (a Take came too early, or
  // nothing was expected): relay it now.
  bool Ready(uint16_t agent_port, uint16_t server_port, Pair pair);
  // The connection failed: nothing waits.
  void Cancel(uint16_t agent_port, uint16_t server_port);
  // The pair of the connection from agent_port to server_port that process
  // pid accepted as its fd, taken out: the caller sends the link and then
  // closes the agent's end, or relays the pair when it cannot. Never
  // waits: a connection not ready yet (its answer to the other node not yet
  // written: microseconds) is relayed as soon as it is. -ENOENT: none
  // waits; -EPERM: pid's fd is not the other end of that connection in
  // this network namespace (or the kernel would not let us look), and the
  // pair is in *out all the same, to be relayed at once.
  int Take(uint16_t server_port, uint16_t agent_port, pid_t pid, int fd, Pair* out);
  // The pairs whose wait ended by now: relay them.
  std::vector<Pair> Expired(Clock::time_point now);
  // Milliseconds until the next wait ends; -1 when none waits.
  int NextWaitMs(Clock::time_point now);
  // Every pair still waiting (at stop).
  std::vector<Pair> TakeAll();

 private:
  struct Waiting {
    Pair pair{-1, -1};
    bool ready = false;
    bool declined = false;    // asked for before ready: relayed once ready
    Clock::time_point until;  // once ready
  };
  using Key = std::pair<uint16_t, uint16_t>;  // agent's port, server's port
  void ForgetLocked(std::map<Key, Waiting>::iterator it);

  PortBits* const bits_;
  std::mutex mu_;
  std::map<Key, Waiting> waiting_;
  std::map<uint16_t, int> per_agent_port_;  // how many wait with that bit set
};

}  // namespace onebox
