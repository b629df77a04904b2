// Links handed to servers. When another node's client reaches a port this
// node holds, the owner's agent connects to the server on loopback as any
// client would (sockets/port_relay.h), from a port it bound first and
// announced (Expect: the server may accept before the connect returns).
// Instead of relaying between that connection and the link at once, it
// lets the connection wait a moment: the server's shim, in accept(), sees
// that the connection comes from a port of the agent's that has one
// waiting (a bit in the state page, proto/state_page.h) and asks for the
// link (shim request TakeLink). The agent (now, or once the connection is
// ready: the server may accept it before the agent has told the other
// node) checks that the asking process holds the accepted end (the socket
// of this network namespace with our end's addresses mirrored, by inode:
// HoldsOtherEnd), hands the link over and resets its own end. The server then talks to the client over
// the link itself: no relay on either node when the client is under the
// shim too. A connection nobody takes within kHandoverWait (a server whose
// accept is not the shim's, a busy one) is relayed as before.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "proto/state_page.h"

namespace onebox {

constexpr std::chrono::milliseconds kHandoverWait{250};

// Whether process pid's fd is the far end of the agent's connection local:
// the socket of the agent's own network namespace whose addresses are
// local's mirrored (sock_diag finds its inode: an established connection's
// four addresses are unique in a namespace, so not one a user made the same
// in a namespace of its own) is the one /proc/PID/fd/FD names. Nothing of
// what fd is is touched (no copy of it, no close of a copy).
bool HoldsOtherEnd(pid_t pid, int fd, int local);

class Handovers {
 public:
  using Clock = std::chrono::steady_clock;
  struct Pair {
    int link, local;  // the link from the other node, the agent's loopback connection to the server
  };
  // A server's shim asking for the link behind the connection it accepted
  // as fd: deliver sends it the link (or, negative, the errno it gets) and
  // says whether the link went; it is called exactly once.
  struct Claim {
    pid_t pid;
    int fd;
    std::function<bool(int link)> deliver;
  };
  explicit Handovers(PortBits* bits) : bits_(bits) {}  // bits null: nothing ever waits

  // Before the agent connects from agent_port (bound already) to
  // server_port: a connection from there may be accepted from now on.
  // False when nothing can wait (relay it).
  bool Expect(uint16_t agent_port, uint16_t server_port);
  // The connection is made and the other node told so: pair may be taken,
  // for kHandoverWait. A claim that came before is then in *claimed (the
  // pair is the caller's to complete). False when nothing was expected:
  // relay it now.
  bool Ready(uint16_t agent_port, uint16_t server_port, Pair pair, std::optional<Claim>* claimed);
  // The connection failed: nothing waits (a claim made meanwhile is told ENOENT).
  void Cancel(uint16_t agent_port, uint16_t server_port);
  // A claim for the connection from agent_port to server_port. kNone: none
  // waits (claim.deliver was told ENOENT); kLater: not ready yet
  // (microseconds: its answer to the other node is being written), Ready
  // hands the claim back; kNow: the pair, out of the wait, in *out, for the
  // caller to complete.
  enum class Taken { kNone, kLater, kNow };
  Taken Take(uint16_t server_port, uint16_t agent_port, Claim claim, Pair* out);
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
    std::optional<Claim> claim;  // came before ready
    Clock::time_point until;     // once ready
  };
  using Key = std::pair<uint16_t, uint16_t>;  // agent's port, server's port
  void ForgetLocked(std::map<Key, Waiting>::iterator it);

  PortBits* const bits_;
  std::mutex mu_;
  std::map<Key, Waiting> waiting_;
  std::map<uint16_t, int> per_agent_port_;  // how many wait with that bit set
};

}  // namespace onebox
