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
// A program under the shim skips this node's listener: its connect() asks
// the agent (Dial), which opens the link to the owner as above and hands
// it over (SCM_RIGHTS); the program's socket becomes the link, one TCP
// connection and one relay fewer. The agent keeps nothing of it: when the
// owner's node is cut off (PortTable::OwnerCutOff: 7 s unheard, or dead) it
// aborts such links through the kernel (sockets/sock_diag.h), as it resets
// the ones it relays, and stops relaying the node's ports (new connects are
// refused) until it is heard again.
//
// A link opens with the owner's challenge (16 random bytes); the dialer
// answers "OBR3", its proof (an HMAC-SHA256 of the challenge and what it
// asks for, keyed by the join token: the token never crosses the link,
// whoever listens at the address dialed), and what it asks for: a port, or
// a Unix socket's path with the connecting program's uid and gid (the
// bytes: sockets/link_request.h). With TLS the link is TLS first
// (sockets/tls_links.h), and the certificates prove what the token would.
// The owner answers with 4 bytes: 0, or the errno its own
// connect got (then both ends reset the program's connection). It connects
// only to what it holds in the table, and only when one of the record's
// own sockets was seen listening (within the last second): never to any
// other service of its node. A Unix socket only beneath its view with no
// symlink on the way, and only a socket the program's uid or gid may
// write, as the kernel would check it on one machine (supplementary groups
// aside).
//
// Until a link's first bytes come (in the clear, a whole head, at least a
// TCP port's, in answer to the challenge sent at accept; with TLS, the first
// bytes of its ClientHello) it waits on the accept loop, for
// kLinkHandshakeMs at most, not on a worker: connections that send nothing,
// or part of a head (a scan, a stuck peer, an attacker), hold no thread. In
// the clear a link goes to a worker only with its whole head there (peeked:
// LinkHeadBytesFrom, then SO_RCVLOWAT for the rest). At most
// kMaxGreetedLinks wait so; beyond, the one waiting longest is reset (a
// real link answers within a round trip). With TLS, a dialer that sends
// part of a ClientHello and then stalls still holds a worker for up to
// kLinkHandshakeMs.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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
#include "nodeagent/sockets/handover.h"
#include "nodeagent/sockets/link_request.h"
#include "nodeagent/sockets/port_table.h"
#include "nodeagent/sockets/splice_relay.h"
#include "nodeagent/sockets/tls_links.h"
#include "proto/state_page.h"

namespace onebox {

class PortRelay {
 public:
  // Listens for other agents' links on host (the agent's gRPC host), on a
  // port the kernel picks; links carry join_token, and those coming in
  // must carry the cluster's (gate).
  // view_root: the agent's view, where this node's Unix sockets under the
  // cluster are.
  // maps (in the shim's page, proto/state_page.h; may be null): a bit for
  // each port this agent listens for, and for each connection to a server
  // here waiting to be handed over (sockets/handover.h).
  // tls (may be null): every link is TLS between the agents
  // (sockets/tls_links.h), which proves the other end is a node of the
  // cluster in place of the token; and none is handed to a program (maps
  // must then be null: no direct links, no handovers).
  static Result<std::unique_ptr<PortRelay>> Start(PortTable& table, const AccessGate& gate, std::string join_token,
                                                  const std::string& host, std::string view_root, PortMaps* maps,
                                                  TlsLinks* tls = nullptr);
  ~PortRelay();
  PortRelay(const PortRelay&) = delete;
  PortRelay& operator=(const PortRelay&) = delete;

  // HOST:PORT other agents dial (the table's records carry it).
  const std::string& address() const { return address_; }
  // Listens for every live port of another node and for no other.
  void Reconcile();
  // Nothing here for Reconcile to look after: no listener, no relayed
  // connection, no link handed out to a program (the table's watch rests).
  bool HoldsNothing();
  // A link to the owner of another node's port, for a program here (the
  // shim's connect): done gets it, connected to the port on the owner's
  // node, or -errno (ENOENT: not another node's port now), on the dial pool.
  void Dial(uint32_t port, std::function<void(int link)> done);
  // A server here accepted a connection this agent made from agent_port
  // to its server_port: the claim gets the link behind it (now, or once the
  // connection is ready), and the agent's end is reset; or an errno (then
  // the connection is relayed, if there is one).
  void TakeHandedOver(uint16_t server_port, uint16_t agent_port, Handovers::Claim claim);
  // Connections relayed (both directions) open now.
  size_t open() const { return splice_->open(); }

 private:
  struct Proxy {
    v1::ClusterPort target;  // the record: owner, relay address, port or path
    std::vector<int> fds;    // 127.0.0.1 and ::1, or the abstract Unix name
  };
  PortRelay(PortTable& table, const AccessGate& gate, std::string join_token, std::string view_root, PortMaps* maps,
            TlsLinks* tls)
      : table_(table),
        gate_(gate),
        join_token_(std::move(join_token)),
        tls_(tls),
        view_root_(std::move(view_root)),
        remote_ports_(maps != nullptr ? &maps->remote : nullptr),
        handovers_(maps != nullptr ? &maps->handover : nullptr) {}
  void AcceptLoop();
  void Watch(int fd);
  void Unwatch(int fd);
  // A link to target's owner, connected there (the owner answered 0), for
  // a program of uid and gid (a Unix socket's mode is checked for them):
  // blocking, no timeouts left on it, TCP keepalive after keep_idle_s idle;
  // -errno when none.
  int OpenLink(const v1::ClusterPort& target, uint32_t uid, uint32_t gid, int keep_idle_s);
  // A program here connected to a remote port: dial its owner.
  void Outbound(int client, const v1::ClusterPort& target);
  // Reconcile under mu_; the relays of cut-off owners some program here holds
  // a link to are added to gone_relays.
  void ReconcileLocked(std::set<std::string>* gone_relays);
  // The bits of remote_ports_ for dial_targets_ (under dial_mu_).
  void PublishRemotePorts();
  // Ends the links programs here hold to a cut-off owner's relay.
  void AbortDirectLinks(const std::string& relay);
  // Another agent's link, accepted: what waits for its first bytes.
  struct Greeted {
    std::chrono::steady_clock::time_point until;
    std::array<uint8_t, kLinkChallengeBytes> challenge{};  // sent at accept (links in the clear)
  };
  void Greet(int link);
  // Resets the links still silent at now; the ms until the next one's time (-1: none waits).
  int EndSilentLinks(std::chrono::steady_clock::time_point now);
  // Another agent's link, with its first bytes here: connect to the port it names.
  void Inbound(int link, const Greeted& greeted);
  // Moves the bytes between a link and the agent's connection to the server.
  void Relay(int link, int local);
  // Hands pair's link to the claim if the claimant holds the other end of
  // pair's connection; relays it otherwise.
  void Complete(Handovers::Pair pair, Handovers::Claim& claim);

  PortTable& table_;
  const AccessGate& gate_;
  const std::string join_token_;
  TlsLinks* const tls_;  // null: links in the clear, proven by the token
  const std::string view_root_;
  PortBits* const remote_ports_;
  Handovers handovers_;
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
  // Dial's view, apart from mu_ (held across table reads and listens): the
  // TCP ports it may dial now, and the relays it handed links to (relay
  // address -> owner's node id) until their owner is cut off.
  std::mutex dial_mu_;
  std::map<uint32_t, v1::ClusterPort> dial_targets_;
  std::map<std::string, std::string> dialed_;
  std::thread thread_;
  // Handshakes: those this node dials, and those it answers (a pool each:
  // a flood of one kind does not hold up the other).
  std::unique_ptr<WorkPool> outbound_, inbound_;
  std::map<int, Greeted> greeted_;  // links awaiting their first bytes (the accept loop's alone)
};

}  // namespace onebox
