// Who may call what. Every method the agent serves has a class, declared
// once in ONEBOX_API_METHODS below; the unary adapter (api/unary.h) and the
// replication stream admit a call by its class before its handler runs, and
// a method missing from the list does not compile (ServeUnary takes the
// method's tag, made from this list). docs/operations.md has the table.
//
//   kReadOnly     anyone who reaches the gRPC port or the socket
//   kCallerActing a local user, over the agent's Unix socket, where the
//                 kernel names the caller (SO_PEERCRED); the handler acts
//                 with the caller's rights (api/acting_as.h). Over gRPC,
//                 only a client showing an admin certificate of the
//                 cluster's CA (tls/tls_identity.h), which acts as the
//                 agent's own user; anonymous callers get PERMISSION_DENIED.
//   kAdmin        root or the agent's own user, over the Unix socket; an
//                 admin certificate over gRPC
//   kPeer         another agent: with TLS, its node certificate of the
//                 cluster's CA; else the call carries the cluster's join
//                 token (metadata kJoinTokenHeader), compared in constant
//                 time. A token authenticates; it does not encrypt.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "consistency/status.h"
#include "nodeagent/tls/tls_identity.h"

// X(service, method, class, why this class)
#define ONEBOX_API_METHODS(X)                                                                             \
  X(Cluster, Status, kReadOnly, "this node's counts, digests and health")                                \
  X(Cluster, ListNodes, kReadOnly, "the members gossip knows")                                           \
  X(Cluster, ListPorts, kReadOnly, "the cluster's ports: number, node, owner")                            \
  X(Store, Get, kReadOnly, "a key's value (the store is readable by every caller: no secrets in it)")    \
  X(Store, Scan, kReadOnly, "keys in order")                                                             \
  X(Store, Put, kCallerActing, "a write, in the caller's key space (api/store_service.h)")              \
  X(Store, Delete, kCallerActing, "a removal, in the caller's key space")                                \
  X(Namespace, Stat, kReadOnly, "a path's record")                                                       \
  X(Namespace, List, kReadOnly, "a directory's records")                                                 \
  X(Namespace, Versions, kReadOnly, "the versions of a path this node holds")                            \
  X(Namespace, Restore, kCallerActing, "puts a version back: needs the right to write the file")         \
  X(Process, List, kReadOnly, "the processes of every live node, as ps shows its own")                  \
  X(Process, Signal, kCallerActing, "a signal, sent with the caller's rights on the target's node")       \
  X(Peer, Gossip, kPeer, "membership")                                                                   \
  X(Peer, Replicate, kPeer, "a batch of records")                                                        \
  X(Peer, ReplicateStream, kPeer, "batches of records, one stream")                                      \
  X(Peer, FetchChunk, kPeer, "a chunk of content")                                                       \
  X(Peer, PushChunks, kPeer, "chunks sent ahead of their record")                                        \
  X(Peer, BucketDigests, kPeer, "anti-entropy: what this node holds, in digests")                        \
  X(Peer, ReadBucket, kPeer, "anti-entropy: a bucket's records")                                         \
  X(Peer, DirLease, kPeer, "a vote on a directory lease (exclusive creates)")                            \
  X(Peer, RecallDirLease, kPeer, "gives a directory lease up to the caller")                              \
  X(Peer, ReadRecord, kPeer, "a quorum read")                                                            \
  X(Peer, ListProcesses, kPeer, "this node's processes, for another's Process/List")                     \
  X(Peer, SignalProcess, kPeer, "a signal for a caller of another node, with the caller's credentials")  \
  X(Peer, ProgramDigest, kPeer, "placement at exec: a program's content hash on this node")               \
  X(Peer, ClaimPort, kPeer, "a vote on a cluster port (bind under the shim)")                              \
  X(Peer, Lock, kPeer, "an advisory lock asked of the file's lock home")                                   \
  X(Peer, AwaitLock, kPeer, "a wait, up to a second, for a queued lock")                                    \
  X(Peer, ReturnLockLease, kPeer, "ends this node's lease on a file's locks (another node asks for them)")   \
  X(Peer, Run, kPeer, "onebox run: a process started as the caller of another node, its stdio and signals")

namespace onebox {

enum class MethodClass { kReadOnly, kCallerActing, kAdmin, kPeer };

std::string_view MethodClassName(MethodClass c);

// One tag type per listed method: api_method::Store_Put::kClass, ::kName.
namespace api_method {
#define ONEBOX_API_METHOD_TAG(service, method, cls, why)                    \
  struct service##_##method {                                               \
    static constexpr MethodClass kClass = MethodClass::cls;                 \
    static constexpr std::string_view kName = "/onebox.v1." #service "/" #method; \
  };
ONEBOX_API_METHODS(ONEBOX_API_METHOD_TAG)
#undef ONEBOX_API_METHOD_TAG
}  // namespace api_method

struct ApiMethod {
  std::string_view name;  // "/onebox.v1.Store/Put", as gRPC names it
  MethodClass method_class;
  std::string_view why;
};
// The whole list, for tests and the docs.
extern const std::vector<ApiMethod> kApiMethods;

// The services of the API (every service of proto/onebox/v1's cluster,
// store, namespace and peer files), by full name: what the agent serves.
std::vector<std::string> ApiServices();
// The methods of those services that have no class in the list, as gRPC
// names them. The agent does not start unless it is empty.
std::vector<std::string> UnclassifiedMethods();

// Metadata a peer call carries the join token in.
constexpr const char* kJoinTokenHeader = "onebox-join-token";
// A join token shorter than this is refused at start.
constexpr size_t kMinJoinTokenBytes = 16;

// Who is calling. A local caller came over the Unix socket and the kernel
// named it; any other came over gRPC and is anonymous, an admin when it
// showed an admin certificate, or a peer when it showed a node certificate
// (with TLS) or its call carried the join token (without).
struct Caller {
  bool local = false;
  bool proven_peer = false;
  TlsRole tls_role = TlsRole::kNone;  // the certificate's, over gRPC with TLS
  pid_t pid = 0;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  std::vector<gid_t> groups;  // supplementary (SO_PEERGROUPS)
  std::string source;         // for the log: "pid 12 uid 1000", or gRPC's peer address

  bool InGroup(gid_t g) const;
  // Root, or the user the agent runs as (an agent a user started is theirs),
  // named by the kernel; or the holder of an admin certificate.
  bool IsAdmin() const;
  // Whose rights a call may act with are known: a caller the kernel named,
  // or an admin certificate's holder (who acts as the agent's user).
  bool Identified() const { return local || tls_role == TlsRole::kAdmin; }
};

class AccessGate {
 public:
  // tls: peers prove themselves by their node certificates, and callers
  // show certificates to be anything but anonymous. Without it, peers prove
  // themselves by the join token; join_token empty: peer calls are refused
  // unless insecure (then every caller is taken for a peer).
  AccessGate(std::string join_token, bool insecure, bool tls = false)
      : token_(std::move(join_token)), insecure_(insecure), tls_(tls) {}

  // The caller of a gRPC call: anonymous, an admin, or a proven peer.
  Caller OfGrpc(const grpc::ServerContextBase& ctx) const;
  // Ok, or why not (PERMISSION_DENIED, UNAUTHENTICATED); a refused peer call
  // is logged once per source host.
  Status Admit(MethodClass c, std::string_view method, const Caller& caller) const;

  bool has_token() const { return !token_.empty(); }
  bool tls() const { return tls_; }
  // Whether a peer link outside gRPC (the port relay's, sockets/port_relay.h)
  // is another agent, as Admit takes a kPeer call: proof must be
  // JoinProof(the cluster's token, challenge), for a challenge this agent
  // chose. The token itself never crosses such a link.
  bool PeerProofAccepted(std::string_view challenge, std::string_view proof) const;

 private:
  bool TokenMatches(std::string_view offered) const;
  void LogRefusedPeer(const Caller& caller, std::string_view method, std::string_view why) const;

  const std::string token_;
  const bool insecure_;
  const bool tls_;
  mutable std::mutex mu_;
  mutable std::set<std::string> refused_sources_;  // logged already
};

// HMAC-SHA256 of challenge keyed by the join token (32 bytes).
std::string JoinProof(std::string_view token, std::string_view challenge);

// Reads a join token from a file: its first line, without surrounding
// white space; refused when shorter than kMinJoinTokenBytes, not printable
// ASCII, or when the file is not the agent's user's alone (no group or other bits).
Result<std::string> ReadJoinTokenFile(const std::string& path);

}  // namespace onebox
