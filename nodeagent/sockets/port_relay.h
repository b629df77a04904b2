// The cluster's ports on this node's loopback. For every port of the table
// (sockets/port_table.h) that another node's program holds, this agent
// listens on 127.0.0.1:PORT and [::1]:PORT itself, so any program here,
// under the shim or not, connects as it would to a local server; each
// connection it takes is carried to the owner's agent on a TCP link of its
// own (dialed to the relay address in the port's record), which connects
// to the port on its loopback, and from then on the bytes move by
// splice (sockets/splice_relay.h). A program connecting to a port its own
// node holds reaches it directly: this agent has no listener there.
//
// A link opens with the owner's challenge (16 random bytes); the dialer
// answers "OBR2", the port (2 bytes, big-endian) and its proof, an
// HMAC-SHA256 of the challenge and port keyed by the join token (so the
// token never crosses the link, whoever listens at the address dialed);
// the owner answers with 4 bytes: 0, or the errno its own connect got
// (then both ends reset the program's connection). The owner connects only to ports it holds in the
// table, never to any other loopback service of its node.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "consistency/status.h"
#include "nodeagent/api/access.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/sockets/port_table.h"
#include "nodeagent/sockets/splice_relay.h"

namespace onebox {

class PortRelay {
 public:
  // Listens for other agents' links on host (the agent's gRPC host), on a
  // port the kernel picks; links carry join_token, and those coming in
  // must carry the cluster's (gate).
  static Result<std::unique_ptr<PortRelay>> Start(PortTable& table, const AccessGate& gate, std::string join_token,
                                                  const std::string& host);
  ~PortRelay();
  PortRelay(const PortRelay&) = delete;
  PortRelay& operator=(const PortRelay&) = delete;

  // HOST:PORT other agents dial (the table's records carry it).
  const std::string& address() const { return address_; }
  // Listens for every live port of another node and for no other.
  void Reconcile();
  // Connections relayed (both directions) open now.
  size_t open() const { return splice_->open(); }

 private:
  struct Proxy {
    std::string node_id;  // the owner
    std::string relay;    // its relay address
    int v4 = -1, v6 = -1;
  };
  PortRelay(PortTable& table, const AccessGate& gate, std::string join_token)
      : table_(table), gate_(gate), join_token_(std::move(join_token)) {}
  void AcceptLoop();
  void Watch(int fd);
  void Unwatch(int fd);
  // A program here connected to a remote port: dial its owner.
  void Outbound(int client, uint32_t port, std::string node_id, std::string relay);
  // Another agent's link: connect to the port it names.
  void Inbound(int link);

  PortTable& table_;
  const AccessGate& gate_;
  const std::string join_token_;
  std::string address_;
  std::unique_ptr<SpliceRelay> splice_;
  int listener_ = -1;  // other agents' links come in here
  int epoll_ = -1;
  int wake_ = -1;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::map<uint32_t, Proxy> proxies_;  // by port
  std::map<int, uint32_t> port_of_;    // listener fd -> port
  std::set<uint32_t> unbindable_;      // said once in the log
  std::thread thread_;
  // Handshakes: those this node dials, and those it answers (a pool each:
  // a flood of one kind does not hold up the other).
  std::unique_ptr<WorkPool> outbound_, inbound_;
};

}  // namespace onebox
