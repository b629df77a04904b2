// The cluster's ports on this node's loopback. For every port of the table
// (sockets/port_table.h) that another node's program holds, this agent
// listens on 127.0.0.1:PORT and [::1]:PORT itself, so any program here,
// under the shim or not, connects as it would to a local server; for a
// Unix socket under the cluster root, on an abstract name
// (naming/unix_relay_name.h). Each connection it takes is carried to the
// owner's agent on a TCP link of its own (dialed to the relay address in
// the record), which connects to the port or socket there, and from then
// on the bytes move by splice (sockets/splice_relay.h). A program
// connecting to a port its own node holds reaches it directly: this agent
// has no listener there.
//
// A link opens with the owner's challenge (16 random bytes); the dialer
// answers "OBR3", its proof (an HMAC-SHA256 of the challenge and what it
// asks for, keyed by the join token: the token never crosses the link,
// whoever listens at the address dialed), and what it asks for: the port
// (2 bytes, big-endian), or 0, the connecting program's uid and gid (4
// bytes each) and a Unix socket's path (2 bytes of length, the path below
// the view root). The owner answers with 4 bytes: 0, or the errno its own
// connect got (then both ends reset the program's connection). It connects
// only to what it holds in the table, and only when one of the record's
// own sockets was seen listening (within the last second): never to any
// other service of its node. A Unix socket only beneath its view with no
// symlink on the way, and only a socket the program's uid or gid may
// write, as the kernel would check it on one machine (supplementary groups
// aside).
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
#include <vector>

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
  // view_root: the agent's view, where this node's Unix sockets under the
  // cluster are.
  static Result<std::unique_ptr<PortRelay>> Start(PortTable& table, const AccessGate& gate, std::string join_token,
                                                  const std::string& host, std::string view_root);
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
    v1::ClusterPort target;  // the record: owner, relay address, port or path
    std::vector<int> fds;    // 127.0.0.1 and ::1, or the abstract Unix name
  };
  PortRelay(PortTable& table, const AccessGate& gate, std::string join_token, std::string view_root)
      : table_(table), gate_(gate), join_token_(std::move(join_token)), view_root_(std::move(view_root)) {}
  void AcceptLoop();
  void Watch(int fd);
  void Unwatch(int fd);
  // A program here connected to a remote port: dial its owner.
  void Outbound(int client, const v1::ClusterPort& target);
  // Another agent's link: connect to the port it names.
  void Inbound(int link);

  PortTable& table_;
  const AccessGate& gate_;
  const std::string join_token_;
  const std::string view_root_;
  int view_fd_ = -1;  // the view root (O_PATH): Unix sockets are opened beneath it
  std::string address_;
  std::unique_ptr<SpliceRelay> splice_;
  int listener_ = -1;  // other agents' links come in here
  int epoll_ = -1;
  int wake_ = -1;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::map<std::string, Proxy> proxies_;  // by the table's key
  std::map<int, std::string> key_of_;     // listener fd -> key
  std::set<std::string> unbindable_;      // said once in the log
  std::thread thread_;
  // Handshakes: those this node dials, and those it answers (a pool each:
  // a flood of one kind does not hold up the other).
  std::unique_ptr<WorkPool> outbound_, inbound_;
};

}  // namespace onebox
